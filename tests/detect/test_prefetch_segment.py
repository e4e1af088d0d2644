"""Overlapped batch detection (pool workers read + preprocess the next scans) gives the same outputs
as one scan after the other; masked sliding windows keep the probabilities inside the mask; roi_mode."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from detect_helpers import BlobSegmenter, make_phantom

from pipeline.io.scans import write_scan

PARAMS = {"max_candidates": 4, "max_findings": 3, "max_size_mm": 500.0, "roi_size": (64, 64, 64),
          "device": "cpu", "batch_size": 4}


@pytest.fixture(scope="module")
def three_scans(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefetch_inputs")
    for k, shape in enumerate([(36, 90, 96), (30, 96, 90)]):
        arr, geom = make_phantom(shape_zyx=shape, seed=10 + k)
        write_scan(arr, geom, root / f"1.2.3.{k}.mhd")
    write_scan(arr, geom, root / "1.2.3.9.mhd")  # bad: truncated voxel data
    raw = root / "1.2.3.9.raw"
    raw.write_bytes(raw.read_bytes()[:1000])
    return root


def test_overlapped_batch_equals_sequential(three_scans, model_root, tmp_path, caplog):
    from pipeline.detect.batch import run
    from pipeline.detect.config import DetectConfig

    cfg = DetectConfig(**PARAMS)
    outs = {}
    for prefetch in (0, 1):
        with caplog.at_level(logging.INFO, logger="pipeline.detect.prefetch"):
            caplog.clear()
            res = run([three_scans], model_root, tmp_path / f"out{prefetch}", cfg, progress=False,
                      prefetch=prefetch)
        assert (res.n_scans, res.n_ok, res.n_failed) == (3, 2, 1)
        assert any("scans/min" in r.getMessage() for r in caplog.records)
        assert res.run_details["scans_per_min"] > 0
        outs[prefetch] = res
    f0 = pd.read_csv(tmp_path / "out0" / "findings.csv")
    f1 = pd.read_csv(tmp_path / "out1" / "findings.csv")
    assert len(f0) > 0
    pd.testing.assert_frame_equal(f0, f1)
    e0 = pd.read_csv(tmp_path / "out0" / "errors.csv")
    e1 = pd.read_csv(tmp_path / "out1" / "errors.csv")
    pd.testing.assert_frame_equal(e0, e1)
    assert "1.2.3.9" in e1["scan"].iloc[0]
    assert outs[1].run_details["per_scan"][next(iter(outs[1].run_details["per_scan"]))]["seconds"]["preprocess"] > 0
    # rerun with prefetch: every good scan reused (hashed by the worker, never read again)
    res = run([three_scans], model_root, tmp_path / "out1", cfg, progress=False, prefetch=1)
    assert res.n_skipped == 2 and res.n_failed == 1
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out1" / "findings.csv"), f1)


def test_masked_windows_same_probabilities_inside_mask():
    from pipeline.detect.segment import segment

    arr, _ = make_phantom(shape_zyx=(40, 100, 110), seed=4)
    mask = np.zeros(arr.shape, bool)
    mask[5:20, 10:45, 60:100] = True  # a corner: many windows hold no mask voxel
    model = BlobSegmenter()
    full = segment(arr, model, (32, 32, 32), 2, 0.25, torch.device("cpu"))
    masked = segment(arr, model, (32, 32, 32), 2, 0.25, torch.device("cpu"), mask_zyx=mask)
    np.testing.assert_allclose(masked[mask], full[mask], rtol=0, atol=1e-6)
    assert (masked[~mask] < full[~mask] - 1e-3).any()  # skipped windows: only outside the mask
    small = segment(arr[:20, :30, :30], model, (32, 32, 32), 2, 0.25, torch.device("cpu"),
                    mask_zyx=mask[:20, :30, :30] | True)  # smaller than the window: MONAI pads
    ref = segment(arr[:20, :30, :30], model, (32, 32, 32), 2, 0.25, torch.device("cpu"))
    np.testing.assert_allclose(small, ref, rtol=0, atol=1e-6)


def test_roi_mode_rule_and_config():
    from pipeline.detect.config import DetectConfig
    from pipeline.detect.segment import roi_mode
    from pipeline.errors import ConfigError

    assert roi_mode("auto", torch.device("cpu")) == "lung"
    assert roi_mode("auto", torch.device("cuda")) == "whole"
    assert roi_mode("lung", torch.device("cuda")) == "lung"
    with pytest.raises(ConfigError, match="roi_mode must be one of auto, lung, whole"):
        DetectConfig(roi_mode="box")


def test_roi_modes_same_findings_on_phantom(model_root):
    """Whole volume vs lung box: the same nodule found (windows placed differently)."""
    from pipeline.detect.config import DetectConfig
    from pipeline.detect.job import load_models
    from pipeline.detect.scan import detect_scan
    from pipeline.io.scans import Scan

    arr, geom = make_phantom(shape_zyx=(36, 90, 96), seed=1)
    scan = Scan(arr, geom, "phantom", "phantom.mhd")
    seg, seg_cfg, cls, cls_cfg, dev = load_models(str(model_root / "classifier"), str(model_root / "segmenter"),
                                                  "cpu")
    res = {m: detect_scan(scan, seg, seg_cfg, cls, cls_cfg, DetectConfig(**PARAMS, roi_mode=m), dev).findings
           for m in ("lung", "whole")}
    assert len(res["lung"]) == len(res["whole"]) > 0
    np.testing.assert_allclose(res["lung"][["coordX", "coordY", "coordZ"]].to_numpy(),
                               res["whole"][["coordX", "coordY", "coordZ"]].to_numpy(), atol=2.0)
