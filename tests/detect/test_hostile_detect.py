"""Hostile inputs for ``python -m pipeline detect``: each case asserts its outcome, a correct result
or the expected one-line error, with the good scans of the batch still processed.

Results keyed by content (same-named different scans, identical copies, a scan changed in place, a
damaged per-scan file), one writer per ``--out`` (a second real process holding the lock; a holder
killed with SIGKILL; ``--wait``), ``--out`` that is a file / under a file / inside the input folder,
folders holding more than scans, counts that add up, planted DICOM identifiers, kill -9 and rerun.
Real scans (``write_scan`` / ``write_dicom_series``), real (untrained) models, real processes.
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from detect_helpers import make_phantom

from pipeline.io.dicom import write_dicom_series
from pipeline.io.scans import write_scan
from pipeline.lock import lock_path

REPO = Path(__file__).resolve().parents[2]
PARAMS = "infer:\n  max_candidates: 4\n  max_findings: 3\n  max_size_mm: 500.0\n  roi_size: [64, 64, 64]\n" \
         "  device: cpu\n  batch_size: 4\n"
SHAPE = (30, 80, 88)
PHI = {"0010|0010": "HOSTILE^PATIENT", "0010|0020": "PID-4242-XYZ", "0010|0030": "19451231"}
LOCKED = "another detect is writing to this folder"


def _phantom(seed: int, nodule_xyz=(-22.0, 3.0, 2.0), shape=SHAPE):
    return make_phantom(shape_zyx=shape, seed=seed, nodules=((nodule_xyz, 10.0),))


def _cli(args, cwd: Path, caplog=None) -> int:
    """``python -m pipeline detect ARGS`` in-process (with ``cwd`` as working directory)."""
    from pipeline.cli import main

    (cwd / "params.yaml").write_text(PARAMS)
    old = os.getcwd()
    os.chdir(cwd)
    try:
        if caplog is None:
            return main(["detect", *map(str, args), "--params", "params.yaml", "--no-progress"])
        with caplog.at_level(logging.INFO):
            return main(["-v", "detect", *map(str, args), "--params", "params.yaml", "--no-progress"])
    finally:
        os.chdir(old)


def _subprocess(args, cwd: Path, timeout=120) -> subprocess.CompletedProcess:
    (cwd / "params.yaml").write_text(PARAMS)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pipeline", "detect", *map(str, args), "--params", "params.yaml",
                           "--no-progress"], check=False, cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=timeout)


def _runlog(cwd: Path) -> dict:
    return json.loads((cwd / "logs" / "detect.json").read_text(encoding="utf-8"))


def _findings(out: Path) -> pd.DataFrame:  # coordinates as floats even when a subset prints as whole numbers
    return pd.read_csv(out / "findings.csv", dtype={"seriesuid": str, "coordX": float, "coordY": float,
                                                     "coordZ": float})


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    for n in needles:
        assert n in errors[0], errors[0]


@pytest.fixture
def model(model_root) -> Path:
    return model_root / "classifier"


def test_results_keyed_by_content_not_file_name(model, tmp_path):
    """Same-named different scans -> both processed, distinct findings, neither overwrites the other;
    both together and an identical copy (other folder, same name) -> reused."""
    out = tmp_path / "out"
    a_arr, a_geom = _phantom(1, nodule_xyz=(-22.0, 3.0, 2.0))
    b_arr, b_geom = _phantom(2, nodule_xyz=(22.0, -6.0, -4.0), shape=(32, 88, 96))
    write_scan(a_arr, a_geom, tmp_path / "in1" / "scan.mhd")
    write_scan(b_arr, b_geom, tmp_path / "in2" / "scan.mhd")

    assert _cli([tmp_path / "in1", "--model", model, "--out", out], tmp_path) == 0
    fa = _findings(out)
    assert len(fa) and (fa["scan"] == "in1/scan.mhd").all()
    assert _cli([tmp_path / "in2", "--model", model, "--out", out], tmp_path) == 0
    log = _runlog(tmp_path)
    assert log["processed"] == 1 and log["skipped_done"] == 0  # not "already done" by its name
    fb = _findings(out)
    assert (fb["scan"] == "in2/scan.mhd").all()
    assert not np.allclose(fb[["coordX", "coordY", "coordZ"]].to_numpy()[:1],
                           fa[["coordX", "coordY", "coordZ"]].to_numpy()[:1])
    results = sorted(p.name for p in (out / "scans").glob("scan*.json"))
    assert len(results) == 2 and "scan.json" in results  # the second went to scan-<content hash>.json
    idents = {json.loads((out / "scans" / r).read_text(encoding="utf-8"))["identity"] for r in results}
    assert len(idents) == 2

    # both together: each reused (no re-detection), each with its own findings
    assert _cli([tmp_path / "in1", tmp_path / "in2", "--model", model, "--out", out], tmp_path) == 0
    assert _runlog(tmp_path)["skipped_done"] == 2
    both = _findings(out)
    pd.testing.assert_frame_equal(both[both["scan"] == "in1/scan.mhd"].reset_index(drop=True), fa)
    pd.testing.assert_frame_equal(both[both["scan"] == "in2/scan.mhd"].reset_index(drop=True), fb)

    # an identical copy in a third folder: reused, reported under the path given now
    shutil.copytree(tmp_path / "in1", tmp_path / "in3")
    assert _cli([tmp_path / "in3", "--model", model, "--out", out], tmp_path) == 0
    assert _runlog(tmp_path)["skipped_done"] == 1
    f3 = _findings(out)
    assert (f3["scan"] == "in3/scan.mhd").all()
    np.testing.assert_allclose(f3["probability"], fa["probability"])



def test_scan_changed_in_place_or_damaged_result_is_redone(model, tmp_path):
    """The same path with other content -> processed again, not served from before; a zero-byte
    per-scan result (disk full, hand edit) -> redone, not loaded, same findings as before."""
    out = tmp_path / "out"
    a_arr, a_geom = _phantom(1, nodule_xyz=(-22.0, 3.0, 2.0))
    write_scan(a_arr, a_geom, tmp_path / "in" / "scan.nii.gz")
    assert _cli([tmp_path / "in", "--model", model, "--out", out], tmp_path) == 0
    fa = _findings(out)
    c_arr, c_geom = _phantom(3, nodule_xyz=(-20.0, -8.0, 6.0), shape=(28, 84, 96))
    write_scan(c_arr, c_geom, tmp_path / "in" / "scan.nii.gz")
    assert _cli([tmp_path / "in", "--model", model, "--out", out], tmp_path) == 0
    assert _runlog(tmp_path)["processed"] == 1
    assert len(list((out / "scans").glob("scan*.json"))) == 2
    fc = _findings(out)
    assert not fc[["coordX", "coordY", "coordZ", "probability"]].equals(fa[["coordX", "coordY", "coordZ", "probability"]])

    write_scan(a_arr, a_geom, tmp_path / "in" / "scan.nii.gz")  # back to the first content: reused
    assert _cli([tmp_path / "in", "--model", model, "--out", out], tmp_path) == 0
    assert _runlog(tmp_path)["skipped_done"] == 1
    pd.testing.assert_frame_equal(_findings(out), fa)
    (out / "scans" / "scan.json").write_bytes(b"")  # its result damaged: redone
    assert _cli([tmp_path / "in", "--model", model, "--out", out], tmp_path) == 0
    assert _runlog(tmp_path)["processed"] == 1
    pd.testing.assert_frame_equal(_findings(out), fa)


def _hold_lock(out: Path, seconds: float) -> subprocess.Popen:
    """A second real process holding ``out``'s lock for ``seconds`` (prints 'held' once it has it)."""
    code = ("import sys, time\nfrom pipeline.lock import output_lock\n"
            f"with output_lock({str(out)!r}, what='detect'):\n"
            "    print('held', flush=True)\n"
            f"    time.sleep({seconds})\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_one_writer_per_out_folder(model, tmp_path, capsys):
    """A run on an --out another process is writing stops at once with a one-line message and
    leaves that folder untouched; a holder killed with SIGKILL leaves nothing stuck; --wait waits."""
    arr, geom = _phantom(4)
    write_scan(arr, geom, tmp_path / "in" / "a.nii.gz")
    out = tmp_path / "out"
    assert _cli([tmp_path / "in", "--model", model, "--out", out], tmp_path) == 0
    before = _snapshot(out)

    holder = _hold_lock(out, 600)
    try:
        capsys.readouterr()
        t = time.monotonic()
        rc = _cli([tmp_path / "in", "--model", model, "--out", out, "--max-findings", "1"], tmp_path)
        err = capsys.readouterr().err
        assert rc == 1 and time.monotonic() - t < 30
        assert LOCKED in err and f"pid {holder.pid}" in err and len(err.strip().splitlines()) == 1, err
        assert _snapshot(out) == before  # nothing deleted, nothing rewritten
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel released the dead holder's lock: the next run goes ahead
    assert _cli([tmp_path / "in", "--model", model, "--out", out, "--max-findings", "1"], tmp_path) == 0
    assert _findings(out).groupby("scan").size().max() <= 1
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["config"]["max_findings"] == 1

    holder = _hold_lock(out, 2)
    try:
        assert _cli([tmp_path / "in", "--model", model, "--out", out, "--wait", "60"], tmp_path) == 0
        assert json.loads((out / "run.json").read_text(encoding="utf-8"))["config"]["max_findings"] == 3
    finally:
        holder.wait(timeout=60)


def test_out_is_a_file_or_under_a_file(model, tmp_path):
    arr, geom = _phantom(5)
    write_scan(arr, geom, tmp_path / "in" / "a.mhd")
    f = tmp_path / "taken.txt"
    f.write_text("not a folder\n")
    proc = _subprocess([tmp_path / "in", "--model", model, "--out", f], tmp_path)
    _one_line_error(proc, "taken.txt", "existing file")
    proc = _subprocess([tmp_path / "in", "--model", model, "--out", f / "sub" / "out"], tmp_path)
    _one_line_error(proc, "taken.txt", "which is a file")
    assert f.read_text(encoding="utf-8") == "not a folder\n"
    assert not lock_path(f).exists()  # refused before any lock or folder was made


def test_out_inside_input_folder_never_scanned(model, tmp_path, caplog):
    """--out inside the input folder, with --save-maps (NIfTI maps are scan-like files): reruns find
    the same scans, reuse them and report no failure; another run's output folder there is skipped;
    an input inside --out is refused up front."""
    data = tmp_path / "data"
    for k, name in enumerate(("a.mhd", "b.nii.gz")):
        arr, geom = _phantom(10 + k)
        write_scan(arr, geom, data / name)
    out = data / "results"
    args = [data, "--model", model, "--out", out, "--save-maps"]
    assert _cli(args, tmp_path) == 0
    assert len(list((out / "maps").glob("*.nii.gz"))) == 4
    first = _findings(out)
    for _ in range(2):
        assert _cli(args, tmp_path, caplog) == 0
        log = _runlog(tmp_path)
        assert (log["scans"], log["skipped_done"], log["failed"]) == (2, 2, 0)
        assert pd.read_csv(out / "errors.csv").empty
    pd.testing.assert_frame_equal(_findings(out), first)
    # a second output folder inside the same input folder: the first one's maps are not inputs
    assert _cli([data, "--model", model, "--out", data / "results2"], tmp_path) == 0
    assert _runlog(tmp_path)["scans"] == 2
    # an input inside --out is refused with one line
    rc = _cli([out / "maps", "--model", model, "--out", out], tmp_path)
    assert rc == 1


def test_folder_with_scan_and_other_files(model, tmp_path):
    """A folder holding one scan plus a README, a spreadsheet, a CSV and a symlink is one scan, not a
    failed DICOM series."""
    d = tmp_path / "case"
    arr, geom = _phantom(6)
    write_scan(arr, geom, d / "ct.nii.gz")
    (d / "README").write_text("scan of the week\n")
    (d / "measurements.csv").write_text("a,b\n1,2\n")
    (d / "notes.xlsx").write_bytes(b"PK\x03\x04" + bytes(200))
    (d / "readme-link").symlink_to(d / "README")
    assert _cli([d, "--model", model, "--out", tmp_path / "out"], tmp_path) == 0
    log = _runlog(tmp_path)
    assert (log["scans"], log["ok"], log["failed"], log["paths_without_scans"]) == (1, 1, 0, 0)


def _all_bytes(root: Path) -> bytes:
    blob = b""
    for f in sorted(root.rglob("*")):
        if f.is_file():
            data = f.read_bytes()
            blob += gzip.decompress(data) if f.name.endswith(".gz") else data
    return blob


def test_counts_add_up_bad_scan_listed_no_identifiers(model, tmp_path, caplog, capsys):
    """Every PATH is accounted for (scans ok / failed, duplicates counted once, PATHs without a scan),
    the good scans of a batch with a bad one are processed, the bad one is listed with its one-line
    reason, and planted DICOM identifiers appear in no output, log or run log."""
    good = tmp_path / "in" / "good"
    arr, geom = _phantom(7)
    write_scan(arr, geom, good / "a.mhd")
    arr2, geom2 = make_phantom(shape_zyx=(20, 80, 88), spacing_xyz_mm=(1.0, 1.0, 3.0), seed=8)
    write_dicom_series(arr2, geom2, good / "dicom_p", seriesuid="1.2.826.0.1.3680043.8.498.77", extra_tags=PHI)
    odd = tmp_path / "in" / "ct ünï 01" / "scan 2.nii.gz"  # spaces and non-ASCII in the path
    write_scan(*_phantom(9), odd)
    bad = tmp_path / "in" / "bad.mhd"
    write_scan(arr, geom, bad)
    raw = bad.with_suffix(".raw")
    raw.write_bytes(raw.read_bytes()[:999])
    gap = tmp_path / "in" / "dicom_gap"  # a DICOM series with a slice missing
    write_dicom_series(arr2, geom2, gap, seriesuid="1.2.826.0.1.3680043.8.498.78", extra_tags=PHI)
    (gap / "slice0010.dcm").unlink()
    (tmp_path / "in" / "empty").mkdir()
    paths = [good, good / "a.mhd", good / "a.mhd", odd.parent, tmp_path / "in" / "empty", bad, gap]
    out = tmp_path / "out"
    rc = _cli([*paths, "--model", model, "--out", out], tmp_path, caplog)
    assert rc == 3
    counts = json.loads((out / "run.json").read_text(encoding="utf-8"))["counts"]
    assert counts == {"inputs": 7, "scans": 5, "ok": 3, "failed": 2, "bad_arguments": 1, "duplicates": 2,
                      "findings": counts["findings"]}
    assert counts["scans"] == counts["ok"] + counts["failed"]
    assert "7 path(s) -> 5 scan(s), 2 more path(s) named a scan already listed (counted once): 3 ok " \
           "(0 reused from an earlier run, 3 processed), 2 failed; 1 path(s) held no scan" in caplog.text
    errors = pd.read_csv(out / "errors.csv")
    assert len(errors) == counts["failed"] + counts["bad_arguments"]
    reasons = dict(zip(errors["scan"].map(lambda s: Path(s).name), errors["reason"]))
    assert set(reasons) == {"bad.mhd", "dicom_gap", "empty"}
    assert "truncated" in reasons["bad.mhd"] and "slice" in reasons["dicom_gap"]
    assert all("\n" not in r and "Traceback" not in r for r in reasons.values())
    assert reasons["dicom_gap"].split(": ")[0].endswith("dicom_gap")  # "<path>: <reason>"
    f = _findings(out)
    assert set(f["scan"].map(lambda s: Path(s).name)) <= {"a.mhd", "dicom_p", "scan 2.nii.gz"}
    assert set(_runlog(tmp_path)["per_scan"]) == {"in/good/a.mhd", "in/good/dicom_p", "in/ct ünï 01/scan 2.nii.gz",
                                                  "in/bad.mhd", "in/dicom_gap"}
    assert (out / "scans" / "scan_2.json").is_file()  # a file-name-safe id
    # planted identifiers: nowhere in outputs, run log, log lines or console
    blob = _all_bytes(out) + _all_bytes(tmp_path / "logs") + caplog.text.encode() + \
        "".join(capsys.readouterr()).encode()
    for value in PHI.values():
        assert value.encode() not in blob, value


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_exactly(model, tmp_path):
    """kill -9 of detect mid-batch: the lock dies with it, the rerun reuses the finished scans and
    ends with the same findings as an uninterrupted run."""
    for k in range(4):
        arr, geom = _phantom(20 + k, shape=(30, 84, 92))
        write_scan(arr, geom, tmp_path / "in" / f"s{k}.nii.gz")
    (tmp_path / "params.yaml").write_text(PARAMS)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "detect", "in", "--model", str(model), "--out", "out",
                             "--params", "params.yaml", "--no-progress"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not [p for p in (out / "scans").glob("s*.json") if ".error" not in p.name]:
        assert proc.poll() is None and time.monotonic() < deadline, "detect ended before the kill"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_done = len([p for p in (out / "scans").glob("s*.json") if ".error" not in p.name])
    assert 1 <= n_done < 4
    assert _cli(["in", "--model", model, "--out", out], tmp_path) == 0
    log = _runlog(tmp_path)
    assert log["skipped_done"] == n_done and log["processed"] == 4 - n_done
    assert _cli(["in", "--model", model, "--out", tmp_path / "clean"], tmp_path) == 0
    pd.testing.assert_frame_equal(_findings(out), _findings(tmp_path / "clean"))
