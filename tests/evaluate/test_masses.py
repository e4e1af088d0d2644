"""Masses in a detection track: an excluded finding >= 30 mm counts as found when a finding typed
``mass`` lies within its radius; the evaluate stage reports the fraction per detection track."""
from __future__ import annotations

import json

import pandas as pd

from pipeline.evaluate.masses import mass_recall
from pipeline.evaluate.stage import run

EXC = pd.DataFrame([("a", 0.0, 0.0, 0.0, 40.0), ("b", 10.0, 10.0, 10.0, 34.0), ("c", 0.0, 0.0, 0.0, -1.0),
                    ("c", 50.0, 0.0, 0.0, 2.5), ("z", 0.0, 0.0, 0.0, 50.0)],
                   columns=["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"])


def test_mass_recall_counts_typed_findings_inside_the_mass():
    found = pd.DataFrame([("a", 12.0, 5.0, 0.0, "mass"),     # inside a's 20 mm radius, typed mass
                          ("b", 10.0, 10.0, 30.0, "mass"),   # 20 mm from b's centre: outside its 17 mm
                          ("b", 12.0, 10.0, 10.0, "solid")],  # inside b, but not typed mass
                         columns=["seriesuid", "coordX", "coordY", "coordZ", "type"])
    m = mass_recall(EXC, found, ["a", "b", "c"])  # "z" is not a scan of the track
    assert m == {"scans_with_mass": 2, "masses": 2, "found_typed_mass": 1, "hit": 2, "fraction_found": 0.5}
    assert mass_recall(EXC, found, ["c"]) is None  # small / unknown excluded findings are not masses


def test_evaluate_reports_masses_found_for_a_track_with_findings(tmp_path):
    exc = EXC.replace({"seriesuid": {"a": "1.2.1", "b": "1.2.2", "c": "1.2.3", "z": "1.2.9"}})
    luna, track = tmp_path / "luna", tmp_path / "det"
    luna.mkdir()
    track.mkdir()
    pd.DataFrame([("1.2.1", 60.0, 0.0, 0.0, 8.0)], columns=EXC.columns).to_csv(luna / "annotations.csv", index=False)
    exc.to_csv(luna / "annotations_excluded.csv", index=False)
    (track / "seriesuids.csv").write_text("1.2.1\n1.2.2\n")
    rows = [("1.2.1", 60.0, 0.0, 0.0, 0.9, "solid"), ("1.2.1", 1.0, 0.0, 0.0, 0.8, "mass"),
            ("1.2.2", 10.0, 10.0, 10.0, 0.7, "mass")]
    f = pd.DataFrame(rows, columns=["seriesuid", "coordX", "coordY", "coordZ", "probability", "type"])
    f.to_csv(track / "findings.csv", index=False)
    f.drop(columns="type").to_csv(track / "predictions.csv", index=False)
    res = run(luna, {"detection": [track]}, tmp_path / "eval", progress=False)
    assert res.metrics["detection"]["masses_found"] == 1.0
    assert res.metrics["detection"]["cpm"] > 0  # the FROC itself ignores the marks on the masses
    assert res.tracks["detection"].counts["ignored_excluded"] == 2
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text(encoding="utf-8"))["detection"]["masses_found"] == 1.0


def test_luna16_plot_table_holds_the_cpm_range_and_the_seven_points():
    """``froc_luna16.csv``: the curve clipped to 1/8..8 FPs per scan (ends interpolated as the CPM does),
    the seven operating points flagged, each row labelled with the track's CPM."""
    import numpy as np

    from pipeline.evaluate.stage import LUNA16_RATES, luna16_plot_table

    fps = np.array([0.0, 0.1, 0.3, 0.9, 2.5, 9.0, 20.0])
    sens = np.array([0.0, 0.2, 0.4, 0.6, 0.7, 0.9, 0.95])
    at = np.interp(LUNA16_RATES, fps, sens)
    res = type("R", (), {"fps_per_scan": fps, "sensitivity": sens, "cpm": float(at.mean())})()
    t = luna16_plot_table(res, "detection")
    assert t["fps_per_scan"].between(0.125, 8).all() and t["fps_per_scan"].is_monotonic_increasing
    ops = t[t["operating_point"] == 1]
    np.testing.assert_allclose(ops["fps_per_scan"], LUNA16_RATES)
    np.testing.assert_allclose(ops["sensitivity"], at)
    assert set(t["curve"]) == {f"detection: CPM {at.mean():.3f}"}
    curve = t[t["operating_point"] == 0]
    assert list(curve["fps_per_scan"]) == [0.125, 0.3, 0.9, 2.5, 8.0]
