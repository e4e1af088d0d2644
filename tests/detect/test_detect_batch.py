"""``python -m pipeline detect`` on a mixed batch: good files + DICOM, bad inputs, resume,
no DICOM identifiers in any output or log, NIfTI maps on the original grid, Dask == serial."""
from __future__ import annotations

import gzip
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from detect_helpers import make_phantom

from pipeline.io.dicom import write_dicom_series
from pipeline.io.scans import read_scan, write_scan

PHI = {"0010|0010": "DOE^JANE", "0010|0020": "SECRET123", "0010|0030": "19700101",
       "0008|0050": "ACC98765", "0008|0080": "SECRET GENERAL HOSPITAL", "0008|0090": "DR^WHO^REFERRER"}
DICOM_UID = "1.2.826.0.1.3680043.8.498.123456789"
PARAMS = "infer:\n  max_candidates: 4\n  max_findings: 3\n  max_size_mm: 500.0\n  roi_size: [64, 64, 64]\n" \
         "  device: cpu\n  batch_size: 4\n"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("detect_inputs")
    arr, geom = make_phantom(shape_zyx=(36, 90, 96), seed=1)
    write_scan(arr, geom, root / "good" / "1.2.3.100.mhd")
    arr2, geom2 = make_phantom(shape_zyx=(30, 96, 90), direction=np.diag([1.0, -1.0, -1.0]), seed=2)
    write_scan(arr2, geom2, root / "good" / "nested" / "case_flipped.nii.gz")
    arr3, geom3 = make_phantom(shape_zyx=(20, 80, 88), spacing_xyz_mm=(1.0, 1.0, 3.0), seed=3)
    write_dicom_series(arr3, geom3, root / "good" / "dicom_a", seriesuid=DICOM_UID, extra_tags=PHI)
    # bad inputs: truncated raw, empty folder, MR series
    write_scan(arr, geom, root / "bad" / "truncated.mhd")
    raw = root / "bad" / "truncated.raw"
    raw.write_bytes(raw.read_bytes()[:1000])
    (root / "empty").mkdir()
    write_dicom_series(arr3, geom3, root / "bad" / "mr_series", seriesuid=DICOM_UID + ".7", modality="MR",
                       extra_tags=PHI)
    return root


def _cli(args, cwd: Path, caplog) -> int:
    from pipeline.cli import main

    (cwd / "params.yaml").write_text(PARAMS)
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with caplog.at_level(logging.DEBUG):
            return main(["-v", "detect", *map(str, args), "--params", "params.yaml", "--no-progress"])
    finally:
        os.chdir(old)


def _all_bytes(out: Path) -> bytes:
    blob = b""
    for f in sorted(out.rglob("*")):
        if f.is_file():
            data = f.read_bytes()
            blob += gzip.decompress(data) if f.name.endswith(".gz") else data
    return blob


def test_mixed_batch_errors_resume_privacy_maps(inputs, model_root, tmp_path, caplog, capsys):
    out = tmp_path / "out"
    paths = [inputs / "good", inputs / "bad", inputs / "empty"]
    rc = _cli([*paths, "--model", model_root / "classifier", "--out", out, "--save-maps"], tmp_path, caplog)
    assert rc == 3
    err = pd.read_csv(out / "errors.csv")
    reasons = dict(zip(err["scan"].map(lambda s: Path(s).name), err["reason"]))
    assert set(reasons) == {"truncated.mhd", "mr_series", "empty"}
    assert "truncated" in reasons["truncated.mhd"] and "not a CT series" in reasons["mr_series"]
    assert "no scans found" in reasons["empty"]
    f = pd.read_csv(out / "findings.csv", dtype={"seriesuid": str})
    assert list(f.columns[:5]) == ["seriesuid", "coordX", "coordY", "coordZ", "probability"]
    assert list(f.columns[5:]) == ["diameter_mm", "index_z", "index_y", "index_x", "seg_score", "cls_score",
                                   "type", "lungrads", "volume_mm3", "long_axis_mm", "short_axis_mm",
                                   "mean_diameter_mm", "max_diameter_3d_mm", "equivalent_diameter_mm",
                                   "solid_volume_mm3", "solid_mean_diameter_mm", "mean_hu", "median_hu",
                                   "image_number", "side", "scan"]
    measured = f.dropna(subset=["type"])
    assert len(measured) and measured["type"].isin(["solid", "part-solid", "ground-glass", "calcified", "mass"]).all()
    assert (measured["diameter_mm"] == measured["mean_diameter_mm"]).all() and measured["side"].isin(["L", "R"]).all()
    assert set(f["seriesuid"]) == {"1.2.3.100", "case_flipped", DICOM_UID}
    assert f.groupby("scan").size().max() <= 3
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run["counts"]["ok"] == 3 and run["counts"]["failed"] == 2 and run["counts"]["bad_arguments"] == 1
    assert "seconds" not in json.dumps(run) and "device" not in run  # timings/host: in the run log only
    runlog = json.loads((tmp_path / "logs" / "detect.json").read_text(encoding="utf-8"))
    assert set(runlog["seconds_per_scan"]) >= {"io", "preprocess", "segmenter", "candidates", "classifier"}
    assert runlog["device"] == "cpu" and runlog["skipped_done"] == 0 and len(runlog["per_scan"]) == 5
    assert all("seconds" not in json.loads(p.read_text(encoding="utf-8")) for p in (out / "scans").glob("*.json"))
    assert re.search(r"detect: 5/5 \(100%\) elapsed \d+s, ETA 0s, ", caplog.text)
    assert run["models"]["segmenter"]["model_sha256"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "case_flipped" in html and "not a CT series" in html and "<img src='report/" in html
    for png in (out / "report").glob("*.png"):
        assert png.stat().st_size > 1000
    # identifiers: nowhere in outputs or logs
    blob = _all_bytes(out) + caplog.text.encode() + "".join(capsys.readouterr()).encode()
    for value in PHI.values():
        assert value.encode() not in blob, value
    # maps on the ORIGINAL grid of each scan
    import SimpleITK as sitk

    for scan_path, sid in ((inputs / "good" / "nested" / "case_flipped.nii.gz", "case_flipped"),
                           (inputs / "good" / "dicom_a", "dicom_a")):
        scan = read_scan(scan_path)
        for kind in ("prob", "findings"):
            img = sitk.ReadImage(str(out / "maps" / f"{sid}_{kind}.nii.gz"))
            np.testing.assert_allclose(img.GetOrigin(), scan.geometry.origin_xyz_mm, atol=1e-3)
            np.testing.assert_allclose(img.GetSpacing(), scan.geometry.spacing_xyz_mm, atol=1e-4)
            np.testing.assert_allclose(np.reshape(img.GetDirection(), (3, 3)), scan.geometry.direction_matrix,
                                       atol=1e-5)
            assert img.GetSize()[::-1] == tuple(scan.geometry.shape_zyx)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "maps" / f"{sid}_findings.nii.gz")))
        rows = f[f["scan"].str.contains(sid)]
        if len(rows):  # the top finding's voxel carries label 1
            assert mask[tuple(rows.iloc[0][["index_z", "index_y", "index_x"]].astype(int))] == 1
    # 3D Slicer markups per scan: one LPS control point per finding, at its centre
    for rec_path in (out / "scans").glob("*.json"):
        if rec_path.name.endswith(".error.json") or rec_path.name == "run_key.txt":
            continue
        rec = json.loads(rec_path.read_text(encoding="utf-8"))
        mk = json.loads((out / "markups" / f"{rec['id']}.mrk.json").read_text(encoding="utf-8"))
        assert mk["@schema"].endswith("markups-schema-v1.0.3.json#")
        (m,) = mk["markups"]
        assert m["type"] == "Fiducial" and m["coordinateSystem"] == "LPS" and m["coordinateUnits"] == "mm"
        pts = [p["position"] for p in m["controlPoints"]]
        want = [[fd["coordX"], fd["coordY"], fd["coordZ"]] for fd in rec["findings"]]
        np.testing.assert_allclose(pts, want, atol=1e-9)
        assert all(p["label"] == f"F{k}" and "research aid" in p["description"] or not p["description"].count("Lung")
                   for k, p in enumerate(m["controlPoints"], start=1))
    # per-study summary: the DICOM series keyed by its StudyInstanceUID, each file its own study
    st = pd.read_csv(out / "studies.csv", dtype=str, keep_default_na=False)
    assert len(st) == 3 and st["scans"].astype(int).tolist() == [1, 1, 1]
    assert (st["study_uid"] != "").sum() == 1 and st["findings"].astype(int).sum() == len(f)
    # resume: finished scans are skipped, failed ones retried, outputs rebuilt identically
    done = {p: p.stat().st_mtime_ns for p in (out / "scans").glob("*.json") if ".error" not in p.name}
    assert len(done) == 3
    report = (out / "report.html").read_bytes()
    rc2 = _cli([*paths, "--model", model_root, "--out", out, "--save-maps"], tmp_path, caplog)
    assert rc2 == 3
    assert {p: p.stat().st_mtime_ns for p in done} == done
    assert json.loads((tmp_path / "logs" / "detect.json").read_text(encoding="utf-8"))["skipped_done"] == 3
    assert (out / "report.html").read_bytes() == report  # resumed run: same bytes
    pd.testing.assert_frame_equal(pd.read_csv(out / "findings.csv", dtype={"seriesuid": str}), f)
    # a changed detection param (or model) invalidates the per-scan results: every scan is redone
    rc3 = _cli([*paths, "--model", model_root, "--out", out, "--max-findings", "1"], tmp_path, caplog)
    assert rc3 == 3
    assert json.loads((tmp_path / "logs" / "detect.json").read_text(encoding="utf-8"))["skipped_done"] == 0
    assert "redoing every scan" in caplog.text
    f3 = pd.read_csv(out / "findings.csv", dtype={"seriesuid": str})
    assert f3.groupby("seriesuid").size().max() <= 1


def test_dask_local_cluster_equals_serial(inputs, model_root, tmp_path):
    from dask.distributed import Client, LocalCluster

    from pipeline.detect.batch import run
    from pipeline.detect.config import DetectConfig

    cfg = DetectConfig(max_candidates=4, max_findings=3, max_size_mm=500.0, device="cpu", batch_size=4)
    serial = run([inputs / "good"], model_root / "classifier", tmp_path / "serial", cfg, progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as client:
        dist = run([inputs / "good"], model_root / "classifier", tmp_path / "dask", cfg, scheduler=client,
                   progress=False)
    assert serial.exit_code == dist.exit_code == 0 and serial.n_ok == 3
    pd.testing.assert_frame_equal(serial.findings, dist.findings, check_exact=False, rtol=1e-5)


def test_bad_arguments_exit_1(model_root, tmp_path, caplog):
    out = tmp_path / "o"
    assert _cli([tmp_path / "missing.mhd", "--model", model_root / "classifier", "--out", out], tmp_path, caplog) == 1
    (tmp_path / "e").mkdir()
    assert _cli([tmp_path / "e", "--model", model_root / "classifier", "--out", out], tmp_path, caplog) == 1
    assert _cli([tmp_path / "e", "--model", tmp_path, "--out", out], tmp_path, caplog) == 1
