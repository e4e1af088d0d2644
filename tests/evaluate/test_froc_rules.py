"""Hand-worked examples, one per LUNA16 evaluation rule (each fails if its rule is broken)."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import DataError
from pipeline.evaluate.froc import froc

ACOLS = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
PCOLS = ["seriesuid", "coordX", "coordY", "coordZ", "probability"]
FAR = 500.0  # mm: a mark this far away hits nothing


def A(rows):
    return pd.DataFrame(rows, columns=ACOLS)


def P(rows):
    return pd.DataFrame(rows, columns=PCOLS)


NONE = A([])


def run(ann, pred, uids, exc=NONE, **kw):
    kw.setdefault("bootstrap", 0)
    return froc(ann, exc, uids, pred, **kw)


def test_hit_is_strictly_inside_the_radius():
    ann = A([("1.1", 0, 0, 0, 10.0)])  # radius 5, r^2 = 25
    on_boundary = run(ann, P([("1.1", 3.0, 4.0, 0.0, 0.9)]), ["1.1"])  # d^2 = 25 exactly
    assert on_boundary.counts["tp"] == 0 and on_boundary.counts["fp"] == 1
    inside = run(ann, P([("1.1", 3.0, 3.999, 0.0, 0.9)]), ["1.1"])
    assert inside.counts["tp"] == 1 and inside.counts["fp"] == 0
    assert inside.cpm == 1.0


def _limit_case(tied_last: bool):
    """99 far marks at distinct probs 0.99..0.51, then 2 more marks (one on the nodule)."""
    rows = [("1.1", FAR + i, FAR, FAR, 0.99 - 0.005 * i) for i in range(99)]
    p100, p101 = (0.2, 0.2) if tied_last else (0.2, 0.1)
    rows += [("1.1", 0.0, 0.0, 0.0, p100), ("1.1", FAR, -FAR, FAR, p101)]
    return run(A([("1.1", 0, 0, 0, 10.0)]), P(rows), ["1.1"])


def test_mark_limit_keeps_the_100_most_probable():
    r = _limit_case(tied_last=False)  # 101 marks: the 101st (p=0.1, an FP) is dropped
    assert r.counts["dropped_over_limit"] == 1 and r.counts["marks_scored"] == 100
    assert r.counts["tp"] == 1 and r.counts["fp"] == 99


def test_mark_limit_ties_with_the_101st_all_drop_out():
    r = _limit_case(tied_last=True)  # 100th and 101st tied at 0.2: both dropped (official: p > probs[100])
    assert r.counts["dropped_over_limit"] == 2 and r.counts["marks_scored"] == 99
    assert r.counts["tp"] == 0 and r.counts["missed"] == 1


def test_mark_limit_not_applied_at_exactly_100_and_configurable():
    rows = [("1.1", FAR + i, FAR, FAR, 0.5) for i in range(100)]
    assert run(NONE.iloc[:0], P(rows), ["1.1"]).counts["dropped_over_limit"] == 0
    assert run(A([]), P(rows), ["1.1"], max_marks=10).counts["dropped_over_limit"] == 100  # all tied
    assert run(A([]), P(rows + rows), ["1.1"], max_marks=-1).counts["marks_scored"] == 200


def test_duplicate_marks_give_one_tp_at_the_highest_probability():
    ann = A([("1.1", 0, 0, 0, 10.0)])
    pred = P([("1.1", 1, 0, 0, 0.2), ("1.1", 0, 1, 0, 0.9), ("1.1", 0, 0, 1, 0.5), ("1.1", FAR, 0, 0, 0.7)])
    r = run(ann, pred, ["1.1"])
    assert (r.counts["tp"], r.counts["fp"], r.counts["ignored_duplicates"]) == (1, 1, 2)
    # one TP entry at 0.9 above the FP at 0.7: the curve reaches sensitivity 1 with 0 FPs
    np.testing.assert_array_equal(r.thresholds, [np.inf, 0.9, 0.7])
    np.testing.assert_array_equal(r.sensitivity, [0, 1, 1])
    np.testing.assert_array_equal(r.fps_per_scan, [0, 0, 1])


def test_mark_hitting_two_nodules_counts_for_both_as_official():
    ann = A([("1.1", 0, 0, 0, 10.0), ("1.1", 2, 0, 0, 10.0)])
    r = run(ann, P([("1.1", 1, 0, 0, 0.9)]), ["1.1"])
    assert r.counts["tp"] == 2 and r.counts["fp"] == 0 and r.cpm == 1.0


def test_marks_on_excluded_findings_are_ignored():
    exc = A([("1.1", 50, 50, 50, 8.0)])
    pred = P([("1.1", 51, 50, 50, 0.9), ("1.1", 52, 50, 50, 0.8), ("1.1", FAR, 0, 0, 0.1)])
    r = run(A([("1.1", 0, 0, 0, 10.0)]), pred, ["1.1"], exc=exc)
    assert (r.counts["fp"], r.counts["ignored_excluded"], r.counts["tp"]) == (1, 2, 0)
    np.testing.assert_array_equal(r.fps_per_scan, [0, 1])  # only the far mark is an FP


def test_mark_on_nodule_and_excluded_finding_is_a_tp():
    ann = A([("1.1", 0, 0, 0, 10.0)])
    exc = A([("1.1", 2, 0, 0, 10.0)])  # overlaps the nodule
    r = run(ann, P([("1.1", 1, 0, 0, 0.9)]), ["1.1"], exc=exc)
    assert r.counts["tp"] == 1 and r.counts["ignored_excluded"] == 0 and r.counts["fp"] == 0


def test_excluded_diameter_minus_one_means_10_mm():
    exc = A([("1.1", 0, 0, 0, -1.0)])
    pred = P([("1.1", 4.9, 0, 0, 0.9), ("1.1", -5.1, 0, 0, 0.8), ("1.1", 0, 5.0, 0, 0.7)])
    r = run(A([]), pred, ["1.1"], exc=exc)
    assert r.counts["ignored_excluded"] == 1 and r.counts["fp"] == 2  # 5.0 is on the boundary: FP


def test_missed_nodules_stay_in_the_denominator():
    ann = A([("1.1", 0, 0, 0, 10.0), ("1.1", 100, 0, 0, 10.0), ("1.2", 0, 0, 0, 6.0)])
    r = run(ann, P([("1.1", 0, 0, 0, 0.9)]), ["1.1", "1.2"])
    assert r.counts["missed"] == 2 and r.counts["n_nodules"] == 3
    assert r.sensitivity[-1] == pytest.approx(1 / 3)
    assert all(v == pytest.approx(1 / 3) for v in r.sensitivities.values())
    assert sorted(r.missed["coordX"]) == [0.0, 100.0] and set(r.missed["seriesuid"]) == {"1.1", "1.2"}


def _curve_case():
    """8 scans, 4 nodules (scans 0-3), all FPs in scan 7; scans 4-6 have no mark at all.

    Curve: (0,0) (0,.25) (.125,.25) (.125,.5) (.5,.5) (1.5,.75) (4,.75); the p=0.3 level holds a TP and
    8 FPs together (a tie: one diagonal segment).
    """
    uids = [f"1.{i}" for i in range(8)]
    ann = A([(uids[i], 0, 0, 0, 10.0) for i in range(4)])
    rows = [(uids[0], 0, 0, 0, 0.9), (uids[1], 0, 0, 0, 0.7), (uids[2], 0, 0, 0, 0.3)]
    fps = [0.8] + [0.6] * 3 + [0.3] * 8 + [0.1] * 20
    rows += [(uids[7], FAR + i, 0, 0, p) for i, p in enumerate(fps)]
    return ann, P(rows), uids


def test_fp_divisor_is_the_number_of_listed_scans_and_interpolation_at_seven_rates():
    ann, pred, uids = _curve_case()
    r = run(ann, pred, uids)
    np.testing.assert_allclose(r.fps_per_scan, [0, 0, .125, .125, .5, 1.5, 4])
    np.testing.assert_allclose(r.sensitivity, [0, .25, .25, .5, .5, .75, .75])
    expected = {"0.125": .5, "0.25": .5, "0.5": .5, "1": .625, "2": .75, "4": .75, "8": .75}
    assert r.sensitivities == pytest.approx(expected, abs=1e-15)
    assert r.cpm == pytest.approx(4.375 / 7, abs=1e-15)
    # dividing by scans-with-marks (4) instead of 8 would double every FPs/scan value
    r4 = run(ann, pred, uids[:3] + uids[7:])
    assert r4.fps_per_scan[-1] == pytest.approx(32 / 4)


def test_empty_predictions_and_scans_without_marks():
    ann = A([("1.1", 0, 0, 0, 10.0)])
    r = run(ann, P([]), ["1.1", "1.2"])
    assert r.cpm == 0.0 and r.counts["missed"] == 1 and r.counts["fp"] == 0
    assert any("no nodule detected" in n for n in r.notes)


def test_no_nodules_gives_nan_with_a_note():
    r = run(A([]), P([("1.1", 0, 0, 0, 0.5)]), ["1.1"], bootstrap=50)
    assert np.isnan(r.cpm) and all(np.isnan(v) for v in r.sensitivities.values())
    assert r.counts["fp"] == 1 and any("undefined" in n for n in r.notes)
    assert r.to_metrics()["cpm"] is None


def test_all_marks_true_positives():
    ann = A([("1.1", 0, 0, 0, 10.0), ("1.2", 0, 0, 0, 10.0), ("1.2", 50, 0, 0, 10.0)])
    r = run(ann, P([("1.1", 0, 0, 0, 0.9), ("1.2", 50, 0, 0, 0.4)]), ["1.1", "1.2"])
    assert r.counts["fp"] == 0 and np.all(r.fps_per_scan == 0)
    assert r.cpm == pytest.approx(2 / 3)


def test_annotations_of_unlisted_scans_are_ignored():
    ann = A([("1.1", 0, 0, 0, 10.0), ("1.9", 0, 0, 0, 10.0)])
    r = run(ann, P([("1.1", 0, 0, 0, 0.9)]), ["1.1"])
    assert r.counts["n_nodules"] == 1 and r.cpm == 1.0


def test_unknown_seriesuids_are_reported_not_scored(caplog):
    ann = A([("1.1", 0, 0, 0, 10.0)])
    pred = P([("1.1", 0, 0, 0, 0.9), ("7.7", FAR, 0, 0, 0.99), ("7.7", FAR, 1, 0, 0.98), ("8.8", 0, 0, 0, 1)])
    with caplog.at_level(logging.WARNING):
        r = run(ann, pred, ["1.1"])
    assert r.unknown_seriesuids == ["7.7", "8.8"] and r.counts["marks_unknown_scan"] == 3
    assert r.counts["fp"] == 0 and r.cpm == 1.0
    assert "not in the seriesuids list" in caplog.text
    assert r.to_metrics()["unknown_seriesuids"] == ["7.7", "8.8"]


@pytest.mark.parametrize("bad", [float("nan"), -0.1, float("inf")])
def test_bad_probability_is_an_error_naming_file_and_row(bad):
    pred = P([("1.1", 0, 0, 0, 0.5), ("1.1", 1, 0, 0, bad)])
    pred.attrs["path"] = "sub/predictions.csv"
    with pytest.raises(DataError, match=r"sub/predictions.csv: row 3"):
        run(A([]), pred, ["1.1"])


def test_nan_coordinate_and_duplicate_uid_are_errors():
    with pytest.raises(DataError, match="row 2: column coordY"):
        run(A([]), P([("1.1", 0, float("nan"), 0, 0.5)]), ["1.1"])
    with pytest.raises(DataError, match="listed twice"):
        run(A([]), P([]), ["1.1", "1.1"])
    with pytest.raises(DataError, match="empty"):
        run(A([]), P([]), [])


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    rng = np.random.default_rng(3)
    uids = [f"1.{i}" for i in range(40)]
    ann = A([(u, 0, 0, 0, 10.0) for u in uids])
    hit = rng.random(40) < 0.8
    rows = [(u, 0, 0, 0, float(rng.uniform(0.3, 1))) for u, h in zip(uids, hit) if h]
    rows += [(u, FAR + k, 0, 0, float(rng.uniform(0, 0.9))) for u in uids for k in range(3)]
    a = run(ann, P(rows), uids, bootstrap=300, seed=1)
    b = run(ann, P(rows), uids, bootstrap=300, seed=1)
    c = run(ann, P(rows), uids, bootstrap=300, seed=2)
    assert a.cpm_ci[0] <= a.cpm <= a.cpm_ci[1] and a.cpm_ci[0] < a.cpm_ci[1]
    for k, v in a.sensitivities.items():
        assert a.ci_low[k] <= v <= a.ci_high[k]
    assert a.cpm_ci == b.cpm_ci and a.ci_low == b.ci_low
    np.testing.assert_array_equal(a.band_low, b.band_low)
    assert a.cpm_ci != c.cpm_ci
    assert np.all(a.band_low <= a.band_high)
    nob = run(ann, P(rows), uids, bootstrap=0)
    assert np.isnan(nob.cpm_ci).all() and nob.cpm == a.cpm
