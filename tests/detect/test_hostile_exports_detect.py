"""``detect`` on what hospital exports and careless copies really hold: a CD layout with DICOMDIR, a
series split over folders, a 255-byte file name, a file name that is not UTF-8, a symlink loop, a
named pipe, and an ``--out`` that holds the user's own files. Each asserts the outcome with the good
scans of the batch processed. Real scans, real (untrained) models, real processes."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from detect_helpers import make_phantom

from pipeline.io.dicom import write_dicom_series
from pipeline.io.scans import write_scan

REPO = Path(__file__).resolve().parents[2]
PARAMS = "infer:\n  max_candidates: 4\n  max_findings: 3\n  max_size_mm: 500.0\n  roi_size: [64, 64, 64]\n" \
         "  device: cpu\n  batch_size: 4\n"
SHAPE = (30, 80, 88)
UID = "1.2.826.0.1.3680043.8.498.3001"


def _phantom(seed: int):
    return make_phantom(shape_zyx=SHAPE, seed=seed, nodules=(((-22.0, 3.0, 2.0), 10.0),))


def _run(args, cwd: Path, timeout=240) -> subprocess.CompletedProcess:
    (cwd / "params.yaml").write_text(PARAMS)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pipeline", "detect", *args, "--params", "params.yaml",
                           "--no-progress"], check=False, cwd=cwd, env=env, capture_output=True, timeout=timeout)


def _errors(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "errors.csv", dtype=str).fillna("")


@pytest.fixture
def model(model_root) -> Path:
    return model_root / "classifier"


def test_cd_layout_split_series_and_odd_files(model, tmp_path):
    arr, g = _phantom(1)
    src = write_dicom_series(arr, g, tmp_path / "src", seriesuid=UID)
    cd = tmp_path / "in" / "CD"
    for k, f in enumerate(sorted(src.iterdir())):  # one series split over three folders
        part = cd / "PT0" / "ST0" / f"SE{k // 12}"
        part.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, part / f"IM{k:04d}")
    ds = pydicom.dcmread(src / "slice0000.dcm")  # a DICOMDIR beside them (an index, not a scan)
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.SOPClassUID = "1.2.840.10008.1.3.10"
    ds.save_as(cd / "DICOMDIR")
    os.mkfifo(cd / "PT0" / "pipe")  # a named pipe must never be opened (it would block forever)
    long_name = "x" * 251 + ".mhd"  # 255 bytes: the longest legal name
    write_scan(arr, g, tmp_path / "in" / long_name)
    bad = os.fsencode(tmp_path / "in") + b"/caf\xe9.mhd"  # Latin-1 name from a Windows share
    write_scan(arr, g, tmp_path / "plain.mhd")
    os.rename(tmp_path / "plain.mhd", bad)
    os.rename(tmp_path / "plain.raw", tmp_path / "in" / "plain.raw")
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    proc = _run(["--model", str(model), "--out", str(tmp_path / "out"), str(tmp_path / "in"), str(loop)], tmp_path)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 3, err[-3000:]  # the link loop is a bad argument; every scan is fine
    assert "Traceback" not in err and "ITK" not in err and "itk::" not in err, err
    e = _errors(tmp_path / "out")
    assert len(e) == 1 and "symbolic link loop" in e["reason"][0], e
    f = pd.read_csv(tmp_path / "out" / "findings.csv", dtype={"seriesuid": str})
    assert set(f["seriesuid"]) == {UID, "x" * 251, "caf\\xe9"}, set(f["seriesuid"])
    scans = os.listdir(tmp_path / "out" / "scans")
    assert max(len(os.fsencode(n)) for n in scans) <= 140, scans


def test_out_holding_user_files_is_refused(model, tmp_path):
    arr, g = _phantom(2)
    write_scan(arr, g, tmp_path / "in" / "a.mhd")
    mine = tmp_path / "my_results"
    mine.mkdir()
    (mine / "findings.csv").write_text("my own notes\n")
    proc = _run(["--model", str(model), "--out", str(mine), str(tmp_path / "in")], tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err, err[-2000:]
    assert "holds files this stage did not write (e.g. 'findings.csv'" in err and "--force" in err, err
    assert (mine / "findings.csv").read_text(encoding="utf-8") == "my own notes\n"
    assert sorted(os.listdir(mine)) == ["findings.csv"]
    ok = _run(["--model", str(model), "--out", str(tmp_path / "new"), str(tmp_path / "in")], tmp_path)
    assert ok.returncode == 0, ok.stderr.decode()[-2000:]
    again = _run(["--model", str(model), "--out", str(tmp_path / "new"), str(tmp_path / "in")], tmp_path)
    assert again.returncode == 0  # its own folder: reused
    forced = _run(["--model", str(model), "--out", str(mine), "--force", str(tmp_path / "in")], tmp_path)
    assert forced.returncode == 0, forced.stderr.decode()[-2000:]
