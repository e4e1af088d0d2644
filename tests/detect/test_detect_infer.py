"""The ``infer`` stage (LUNA16 subsets -> predictions.csv + seriesuids.csv) and the HTML screenshot."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from detect_helpers import make_phantom

from pipeline.io.scans import write_scan

PARAMS = "infer:\n  max_candidates: 4\n  max_findings: 3\n  max_size_mm: 500.0\n  device: cpu\n  subsets: null\n"


def test_infer_stage_writes_submission_and_all_seriesuids(model_root, tmp_path):
    from pipeline.cli import main

    luna = tmp_path / "luna"
    for subset, uids in {0: ["1.2.840.10", "1.2.840.11"], 1: ["1.2.840.20"]}.items():
        for i, uid in enumerate(uids):
            arr, geom = make_phantom(shape_zyx=(30, 90, 96), seed=subset * 10 + i)
            write_scan(arr, geom, luna / f"subset{subset}" / f"{uid}.mhd")
    # a scan that fails: it must still be listed in seriesuids.csv (the FROC counts it)
    bad = luna / "subset0" / "1.2.840.12.mhd"
    shutil.copy(luna / "subset0" / "1.2.840.10.mhd", bad)
    bad.write_text(bad.read_text(encoding="utf-8").replace("ElementDataFile = 1.2.840.10.raw", "ElementDataFile = gone.raw"))
    (tmp_path / "params.yaml").write_text(PARAMS)
    old = os.getcwd()
    os.chdir(tmp_path)
    try:  # subsets: null -> the models' test subsets (train.test_subsets = [0] in config.json)
        rc = main(["infer", "--luna", "luna", "--model", str(model_root / "classifier"), "--out", "det",
                   "--no-progress"])
    finally:
        os.chdir(old)
    assert rc == 3  # infer.max_failures 0 (default): one failed scan -> exit 3
    out = tmp_path / "det"
    pred = pd.read_csv(out / "predictions.csv", dtype={"seriesuid": str})
    assert list(pred.columns) == ["seriesuid", "coordX", "coordY", "coordZ", "probability"]
    assert set(pred["seriesuid"]) == {"1.2.840.10", "1.2.840.11"}
    uids = pd.read_csv(out / "seriesuids.csv", header=None, dtype=str)[0].tolist()
    assert uids == ["1.2.840.10", "1.2.840.11", "1.2.840.12"]
    assert "gone.raw" in pd.read_csv(out / "errors.csv")["reason"].iloc[0]
    from pipeline.io.luna16 import read_predictions

    assert len(read_predictions(out / "predictions.csv")) == len(pred)
    # rerun (resumes: done scans skipped) tolerating one failure -> exit 0, same outputs
    (tmp_path / "params.yaml").write_text(PARAMS + "  max_failures: 1\n")
    os.chdir(tmp_path)
    try:
        assert main(["infer", "--luna", "luna", "--model", str(model_root / "classifier"), "--out", "det",
                     "--no-progress", "--subsets", "0"]) == 0
    finally:
        os.chdir(old)
    pd.testing.assert_frame_equal(pd.read_csv(out / "predictions.csv", dtype={"seriesuid": str}), pred)


def test_screenshot_html(tmp_path):
    from pipeline.detect.screenshot import find_chromium, screenshot_html
    from pipeline.errors import PipelineError

    try:
        find_chromium()
    except PipelineError as exc:
        assert "apt-get install" in str(exc)
        pytest.skip("chromium not installed")
    html = tmp_path / "r.html"
    html.write_text("<html><body style='background:#fff'><h1>report</h1><p>hello</p></body></html>")
    png = screenshot_html(html, tmp_path / "shots" / "r.png", width=640, height=400)
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (640, 400)
    with pytest.raises(PipelineError, match="no such HTML"):
        screenshot_html(tmp_path / "nope.html", tmp_path / "x.png")
    assert not list(Path(tmp_path / "shots").glob(".tmp-*"))
