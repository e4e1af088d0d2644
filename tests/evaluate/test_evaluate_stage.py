"""The `froc` and `evaluate` subcommands end to end on small CSVs (folds pooled, outputs for DVC)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main

UIDS = [f"1.3.{i}" for i in range(6)]


def write_luna(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"seriesuid": UIDS, "coordX": 0.0, "coordY": 0.0, "coordZ": 0.0, "diameter_mm": 10.0}
                 ).to_csv(root / "annotations.csv", index=False)
    pd.DataFrame({"seriesuid": UIDS[:2], "coordX": 50.0, "coordY": 0.0, "coordZ": 0.0, "diameter_mm": -1.0}
                 ).to_csv(root / "annotations_excluded.csv", index=False)
    (root / "seriesuids.csv").write_text("\n".join(UIDS) + "\n")
    return root


def write_fold(d: Path, uids: list[str], hit: list[bool]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for u, h in zip(uids, hit):
        if h:
            rows.append((u, 1.0, 0.0, 0.0, 0.8))
        rows += [(u, 200.0 + k, 0.0, 0.0, 0.1 * k) for k in range(4)]
        rows.append((u, 50.0, 1.0, 0.0, 0.05))  # on the excluded finding (scans 0, 1) else an FP
    pd.DataFrame(rows, columns=["seriesuid", "coordX", "coordY", "coordZ", "probability"]).to_csv(
        d / "predictions.csv", index=False)
    (d / "seriesuids.csv").write_text("\n".join(uids) + "\n")
    pd.DataFrame({"seriesuid": uids * 2, "candidate": range(2 * len(uids)), "label": [1] * len(uids) + [0] * len(uids),
                  "probability": [0.9] * len(uids) + [0.2] * len(uids)}).to_csv(d / "scored.csv", index=False)
    return d


def test_evaluate_pools_folds_and_writes_dvc_outputs(tmp_path):
    luna = write_luna(tmp_path / "luna")
    f0 = write_fold(tmp_path / "fold0", UIDS[:3], [True, True, False])
    f1 = write_fold(tmp_path / "fold1", UIDS[3:], [True, False, True])
    det = write_fold(tmp_path / "det", UIDS, [True] * 6)
    (det / "seg_metrics.json").write_text(json.dumps({"dice": 0.7}))
    params = tmp_path / "params.yaml"
    params.write_text("evaluate:\n  bootstrap: 50\n  seed: 3\n  max_marks: 100\n  threshold: 0.5\n")
    out = tmp_path / "eval"
    rc = main(["evaluate", "--luna", str(luna), "--track", f"fpr={f0},{f1}", "--track", f"detection={det}",
               "--out", str(out), "--params", str(params)])
    assert rc == 0
    flat = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert flat["fpr"]["cpm"] == pytest.approx(4 / 6) and len(flat["fpr"]["cpm_ci"]) == 2
    assert list(flat) == ["fpr", "detection", "classifier"] and "sensitivity" not in flat["fpr"]  # headline, CPMs first
    assert set(json.loads((out / "fpr" / "metrics.json").read_text(encoding="utf-8"))["sensitivity"]) == {
        "0.125", "0.25", "0.5", "1", "2", "4", "8"}
    assert flat["classifier"]["accuracy"] == 1.0 and flat["classifier"]["auc"] == 1.0
    assert flat["detection"]["cpm"] == 1.0 and flat["detection"]["segmentation"] == {"dice": 0.7}
    for track in ("fpr", "detection"):
        for name in ("metrics.json", "froc.csv", "froc.png", "missed.csv"):
            assert (out / track / name).stat().st_size > 0
    m = json.loads((out / "fpr" / "metrics.json").read_text(encoding="utf-8"))
    assert m["counts"]["n_scans"] == 6 and m["counts"]["missed"] == 2 and m["counts"]["ignored_excluded"] == 2
    assert m["counts"]["fp"] == 6 * 4 + 4 and m["bootstrap"] == 50 and m["seed"] == 3
    curve = pd.read_csv(out / "fpr" / "froc.csv")
    assert list(curve.columns) == ["fps_per_scan", "sensitivity", "threshold"] and len(curve) <= 1000
    assert len(pd.read_csv(out / "fpr" / "missed.csv")) == 2


def test_evaluate_errors(tmp_path, capsys):
    luna = write_luna(tmp_path / "luna")
    assert main(["evaluate", "--luna", str(luna), "--track", f"fpr={tmp_path / 'nope'}", "--out",
                 str(tmp_path / "o")]) == 1
    assert "track folder does not exist" in capsys.readouterr().err
    assert main(["evaluate", "--luna", str(luna), "--track", f"fpr={tmp_path}", "--out",
                 str(tmp_path / "o"), "--params", str(tmp_path / "none.yaml")]) == 1
    assert "none.yaml: params file not found" in capsys.readouterr().err
    f0 = write_fold(tmp_path / "f0", UIDS, [True] * 6)
    bad = tmp_path / "bad.yaml"
    bad.write_text("evaluate:\n  bootstrapp: 5\n")
    assert main(["evaluate", "--luna", str(luna), "--track", f"fpr={f0}", "--params", str(bad)]) == 1
    assert "valid keys" in capsys.readouterr().err
    assert main(["evaluate", "--luna", str(luna), "--track", "fpr", "--params", str(bad)]) == 1
    assert "NAME=DIR" in capsys.readouterr().err


def test_froc_subcommand(tmp_path, capsys):
    luna = write_luna(tmp_path / "luna")
    f0 = write_fold(tmp_path / "f0", UIDS, [True] * 3 + [False] * 3)
    out = tmp_path / "out"
    rc = main(["froc", "--annotations", str(luna / "annotations.csv"), "--excluded",
               str(luna / "annotations_excluded.csv"), "--seriesuids", str(luna / "seriesuids.csv"),
               "--predictions", str(f0 / "predictions.csv"), "--out", str(out), "--bootstrap", "20"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["cpm"] == pytest.approx(0.5)
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "froc.csv", "froc.png", "missed.csv"}
    bad = tmp_path / "bad.csv"
    bad.write_text("seriesuid,coordX,coordY,coordZ,probability\n1.3.0,0,0,0,-0.5\n")
    assert main(["froc", "--annotations", str(luna / "annotations.csv"), "--seriesuids",
                 str(luna / "seriesuids.csv"), "--predictions", str(bad), "--out", str(out)]) == 1
    assert "bad.csv: row 2: probability must be >= 0" in capsys.readouterr().err


def test_curve_rows_downsampling_keeps_detail_in_the_froc_range():
    import numpy as np

    from pipeline.evaluate.stage import curve_rows

    fps = np.r_[0.0, 0.0, np.linspace(0.001, 100, 50_000)]
    idx = curve_rows(fps)
    assert len(idx) <= 1000 and idx[0] == 0 and idx[-1] == len(fps) - 1 and np.all(np.diff(idx) > 0)
    assert np.sum((fps[idx] >= 0.125) & (fps[idx] <= 8)) > 300  # uniform-in-index would keep ~80
    np.testing.assert_array_equal(curve_rows(fps[:500]), np.arange(500))
