"""Vectorised FROC vs the loop-style official reference, on random and on the real LUNA16 CSVs."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluate import reference as ref
from pipeline.evaluate.bootstrap import make_entries, multiplicities
from pipeline.evaluate.froc import FP_RATES, froc

LUNA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "luna16"
ACOLS = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
PCOLS = ["seriesuid", "coordX", "coordY", "coordZ", "probability"]


def rows(df):
    return list(df.itertuples(index=False, name=None))


def random_case(seed: int, n_scans: int = 15, n_marks: int = 400):
    rng = np.random.default_rng(seed)
    uids = [f"1.2.{i}" for i in range(n_scans)]
    n_ann, n_exc = 25, 30
    ann = pd.DataFrame({"seriesuid": rng.choice(uids, n_ann), **{c: rng.uniform(0, 40, n_ann) for c in ACOLS[1:4]},
                        "diameter_mm": rng.uniform(3, 25, n_ann)})
    exc = pd.DataFrame({"seriesuid": rng.choice(uids, n_exc), **{c: rng.uniform(0, 40, n_exc) for c in ACOLS[1:4]},
                        "diameter_mm": rng.choice([-1.0, 4.0, 12.0], n_exc)})
    # half the marks near annotations, half anywhere; coarse probabilities -> many ties
    near = ann.sample(n_marks // 2, replace=True, random_state=seed)
    jit = rng.normal(0, 4, (len(near), 3))
    marks = pd.DataFrame({"seriesuid": list(near["seriesuid"]) + list(rng.choice(uids + ["9.9.9"], n_marks - len(near))),
                          "coordX": np.r_[near["coordX"] + jit[:, 0], rng.uniform(0, 40, n_marks - len(near))],
                          "coordY": np.r_[near["coordY"] + jit[:, 1], rng.uniform(0, 40, n_marks - len(near))],
                          "coordZ": np.r_[near["coordZ"] + jit[:, 2], rng.uniform(0, 40, n_marks - len(near))],
                          "probability": rng.choice(np.linspace(0, 1, 41), n_marks)})
    return ann, exc, uids, marks


@pytest.mark.parametrize("seed", range(6))
def test_matches_loop_reference_on_random_data(seed):
    ann, exc, uids, marks = random_case(seed)
    ours = froc(ann, exc, uids, marks, max_marks=20, bootstrap=0)
    theirs = ref.evaluate(uids, rows(ann), rows(exc), rows(marks), max_marks=20)
    assert theirs["counts"]["tp"] > 0
    assert ours.cpm == pytest.approx(theirs["cpm"], abs=1e-12)
    for k, v in zip(ours.sensitivities, theirs["sensitivities"]):
        assert ours.sensitivities[k] == pytest.approx(v, abs=1e-12)
    for k, v in theirs["counts"].items():
        assert ours.counts[k] == v, k
    np.testing.assert_allclose(ours.fps_per_scan, theirs["fps"], atol=1e-12)
    np.testing.assert_allclose(ours.sensitivity, theirs["sens"], atol=1e-12)
    np.testing.assert_array_equal(ours.thresholds, theirs["thresholds"])


def test_bootstrap_equals_naive_resampling_loop():
    ann, exc, uids, marks = random_case(11)
    res = froc(ann, exc, uids, marks, max_marks=20, bootstrap=40, seed=5)
    # the official FROC lists, resampled scan by scan as computeFROC_bootstrap does
    theirs = ref.evaluate(uids, rows(ann), rows(exc), rows(marks), max_marks=20)
    assert theirs["counts"]["tp"] > 0
    w = multiplicities(len(uids), 40, 5)
    per_scan = {s: ([], [], []) for s in range(len(uids))}
    for g, p, e, u in zip(theirs["gt"], theirs["prob"], theirs["exclude"], theirs["divisor"]):
        lists = per_scan[uids.index(u)]
        lists[0].append(g), lists[1].append(p), lists[2].append(e)
    cpms = []
    for b in range(40):
        gt, pr, ex = [], [], []
        for s in range(len(uids)):
            for _ in range(w[b, s]):
                gt += per_scan[s][0]
                pr += per_scan[s][1]
                ex += per_scan[s][2]
        fps, sens, _ = ref.compute_froc(gt, pr, len(uids), ex)
        cpms.append(np.mean([np.interp(r, fps, sens) for r in FP_RATES]))
    cpms = np.sort(np.nan_to_num(cpms))
    assert res.cpm_ci[0] == pytest.approx(cpms[math.floor(0.025 * 40)], abs=1e-12)
    assert res.cpm_ci[1] == pytest.approx(cpms[math.floor(0.975 * 40)], abs=1e-12)
    assert res.cpm == pytest.approx(theirs["cpm"], abs=1e-12)


def test_entries_sorted_with_levels():
    e = make_entries(np.array([0.2, 0.9, 0.2, 0.5]), np.array([0, 1, 1, 0]), np.array([0, 1, 2, 3]))
    np.testing.assert_array_equal(e.thresholds, [0.9, 0.5, 0.2])
    np.testing.assert_array_equal(e.level_end, [0, 1, 3])


@pytest.fixture(scope="module")
def real():
    if not (LUNA / "annotations.csv").is_file():
        pytest.skip(f"{LUNA} not available")
    from pipeline.io.luna16 import read_annotations, read_seriesuids

    return (read_annotations(LUNA / "annotations.csv"), read_annotations(LUNA / "annotations_excluded.csv"),
            read_seriesuids(LUNA / "seriesuids.csv"))


def test_real_csvs_with_known_answer(real):
    ann, exc, uids = real
    rng = np.random.default_rng(0)
    half = np.arange(len(ann)) % 2 == 0
    d = ann[half]
    u = rng.normal(size=(len(d), 3))
    u *= (rng.uniform(0, 0.05, len(d)) * d["diameter_mm"].to_numpy() / np.linalg.norm(u, axis=1))[:, None]
    tp_marks = pd.DataFrame({"seriesuid": d["seriesuid"].to_numpy(), "coordX": d["coordX"].to_numpy() + u[:, 0],
                             "coordY": d["coordY"].to_numpy() + u[:, 1], "coordZ": d["coordZ"].to_numpy() + u[:, 2],
                             "probability": 0.9})
    n_far = 5  # far-away FPs per scan (1 km outside the body), probabilities < 0.5
    far = pd.DataFrame({"seriesuid": np.repeat(uids, n_far), "coordX": 1000.0 + rng.uniform(0, 100, len(uids) * n_far),
                        "coordY": 1000.0, "coordZ": 1000.0, "probability": rng.uniform(0, 0.5, len(uids) * n_far)})
    # one mark at the centre of an excluded finding per scan, for findings clear of every nodule
    m = exc.reset_index().merge(ann, on="seriesuid", how="left", suffixes=("", "_n"))
    dist = np.sqrt((m["coordX"] - m["coordX_n"]) ** 2 + (m["coordY"] - m["coordY_n"]) ** 2
                   + (m["coordZ"] - m["coordZ_n"]) ** 2)
    clash = set(m["index"][dist < m["diameter_mm_n"] / 2 + 1.0])
    on_exc = exc[~exc.index.isin(clash)].groupby("seriesuid").head(1)
    exc_marks = pd.DataFrame({"seriesuid": on_exc["seriesuid"], "coordX": on_exc["coordX"],
                              "coordY": on_exc["coordY"], "coordZ": on_exc["coordZ"], "probability": 0.7})
    pred = pd.concat([tp_marks, far, exc_marks], ignore_index=True)
    r = froc(ann, exc, uids, pred, bootstrap=200, seed=0)
    n_half = int(half.sum())
    assert r.counts["n_scans"] == 888 and r.counts["n_nodules"] == len(ann) == 1186
    assert r.counts["fp"] == 888 * n_far
    assert r.counts["tp"] == n_half and r.counts["missed"] == len(ann) - n_half
    assert r.counts["ignored_excluded"] == len(exc_marks) > 800
    assert r.counts["ignored_duplicates"] == 0 and r.counts["dropped_over_limit"] == 0
    # every TP (p=0.9) ranks above every FP (p<0.5): sensitivity n_half/1186 at every rate
    for v in r.sensitivities.values():
        assert v == pytest.approx(n_half / 1186, abs=1e-12)
    assert r.cpm == pytest.approx(n_half / 1186, abs=1e-12)
    assert r.fps_per_scan[-1] == pytest.approx(n_far)
    assert r.cpm_ci[0] <= r.cpm <= r.cpm_ci[1]


def test_real_csvs_against_loop_reference(real):
    ann, exc, uids = real
    rng = np.random.default_rng(1)
    uids = uids[:150]
    a = ann[ann["seriesuid"].isin(uids)]
    near = a.sample(400, replace=True, random_state=1)
    marks = pd.DataFrame({"seriesuid": near["seriesuid"].to_numpy(),
                          **{c: near[c].to_numpy() + rng.normal(0, 3, len(near)) for c in ["coordX", "coordY", "coordZ"]},
                          "probability": rng.uniform(0, 1, len(near)).round(2)})
    ours = froc(ann, exc, uids, marks, bootstrap=0)
    theirs = ref.evaluate(uids, rows(ann), rows(exc), rows(marks), max_marks=100)
    assert ours.cpm == pytest.approx(theirs["cpm"], abs=1e-12)
    for k, v in theirs["counts"].items():
        assert ours.counts[k] == v, k


@pytest.mark.parametrize("n_fp, n_scans", [(40, 30), (3, 5), (40, 2)])
def test_truncated_bootstrap_equals_full_computation(n_fp, n_scans):
    """The prefix shortcut of bootstrap_sensitivity is exact (including resamples that need the fallback)."""
    from pipeline.evaluate.bootstrap import _rows_sensitivity, bootstrap_sensitivity

    rng = np.random.default_rng(n_fp)
    n_tp = n_scans
    # with 2 scans all FPs sit in scan 0: resamples (1, 1) have none and need the full-curve fallback
    scan = np.r_[np.arange(n_tp), rng.integers(0, n_scans if n_scans > 2 else 1, n_fp * n_scans)]
    label = np.r_[np.ones(n_tp, int), np.zeros(n_fp * n_scans, int)]
    prob = rng.choice(np.linspace(0, 1, 50), len(label))
    e = make_entries(prob, label, scan)
    nod = np.bincount(np.arange(n_tp), minlength=n_scans) + (rng.random(n_scans) < 0.3)
    targets = np.r_[FP_RATES, np.geomspace(0.125, 8, 9)]
    fast = bootstrap_sensitivity(e, nod, targets, 200, seed=4)
    w = multiplicities(n_scans, 200, 4)
    lab = label[np.argsort(-prob, kind="stable")].astype(bool)
    full, _ = _rows_sensitivity(e, w, len(e.level_end), w @ nod, w @ np.bincount(e.scan[lab], minlength=n_scans),
                                 w @ np.bincount(e.scan[~lab], minlength=n_scans), targets)
    np.testing.assert_array_equal(fast, full)
    if n_scans == 2:
        _, ok_prefix = _rows_sensitivity(e, w, 34, w @ nod, w @ np.bincount(e.scan[lab], minlength=n_scans),
                                         w @ np.bincount(e.scan[~lab], minlength=n_scans), targets)
        assert not ok_prefix.all()
