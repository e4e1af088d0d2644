"""The preprocess stage: outputs, resume, kill + restart, bad scans, Dask == pool."""
import hashlib
import json
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
from phantom_data import write_luna_root

from pipeline.errors import PipelineError
from pipeline.io.scans import read_scan, write_scan
from pipeline.preprocess import PreprocessConfig, load_preprocessed, preprocess_scan
from pipeline.preprocess.stage import run

REPO = Path(__file__).resolve().parents[2]
UIDS = {0: ["1.2.826.0.1.1", "1.2.826.0.1.2"], 1: ["1.2.826.0.1.3"], 2: ["1.2.826.0.1.4"]}
SMALL = {"shape_zyx": (24, 96, 100), "spacing_xyz_mm": (1.0, 1.0, 3.0)}


@pytest.fixture(scope="module")
def luna(tmp_path_factory):
    return write_luna_root(tmp_path_factory.mktemp("luna"), UIDS, **SMALL)


def _defaults(tmp_path: Path) -> Path:
    """An empty params file: the built-in defaults (a --params file that does not exist is an error)."""
    p = tmp_path / "defaults.yaml"
    p.write_text("{}\n")
    return p


def _outputs(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.suffix in (".npy", ".json")
            and p.name != "summary.json"}


def _tree_hashes(d: Path) -> dict[str, str]:
    """sha256 of every file under ``d`` (relative path -> hex digest)."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clean_run(luna, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre_clean")
    res = run(luna, out, PreprocessConfig(workers=1), progress=False)
    return out, res


def test_outputs_manifest_sidecar_and_load(luna, clean_run):
    out, res = clean_run
    man = pd.read_csv(out / "manifest.csv", dtype={"seriesuid": str})
    assert list(man.columns) == ["seriesuid", "subset", "status", "reason"]
    assert (man["status"] == "ok").all() and len(man) == 4
    uid = UIDS[0][0]
    side = json.loads((out / f"{uid}.json").read_text(encoding="utf-8"))
    for k in ("seriesuid", "subset", "source_path", "original_geometry", "geometry", "window_hu",
              "spacing_xyz_mm", "params_hash", "lung_volume_ml"):
        assert k in side
    loaded = load_preprocessed(out, uid)
    assert isinstance(loaded.array_zyx, np.memmap) and loaded.array_zyx.dtype == np.int16
    direct = preprocess_scan(read_scan(luna / "subset0" / f"{uid}.mhd"), PreprocessConfig())
    np.testing.assert_array_equal(loaded.array_zyx, direct.array_zyx)
    np.testing.assert_array_equal(loaded.lung_zyx, direct.lung_zyx)
    assert loaded.geometry == direct.geometry
    summ = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summ["ok"] == 4 and not any(k.startswith(("seconds", "peak_rss", "workers")) for k in summ)
    assert res.summary["run"]["peak_rss_mb_max"] > 0 and res.summary["run"]["seconds_per_scan_mean"] > 0
    assert pd.read_csv(out / "failures.csv").empty


def test_same_input_gives_byte_identical_outputs(luna, clean_run, tmp_path):
    """No timings / pids / hosts in the outputs: a second run into a fresh folder has the same bytes
    (DVC then sees an unchanged output); the run details go to the run log instead."""
    res = run(luna, tmp_path / "again", PreprocessConfig(workers=1), progress=False,
              run_log=tmp_path / "logs" / "preprocess.json")
    hashes = _tree_hashes(tmp_path / "again")
    assert {"manifest.csv", "failures.csv", "summary.json"} <= set(hashes)
    assert hashes == _tree_hashes(clean_run[0])
    log = json.loads((tmp_path / "logs" / "preprocess.json").read_text(encoding="utf-8"))
    assert log["stage"] == "preprocess" and log["computed"] == 4 and log["seconds_total"] > 0
    assert log["pid"] == os.getpid() and len(log["per_scan"]) == 4 and log["workers"] == 1
    assert res.summary["run"]["seconds_total"] == log["seconds_total"]


def test_resume_skips_done_scans_and_recomputes_on_param_change(luna, clean_run, tmp_path):
    out = tmp_path / "pre"
    shutil.copytree(clean_run[0], out)
    res = run(luna, out, PreprocessConfig(workers=1), progress=False)
    assert (res.manifest["status"] == "skipped").all()
    assert _outputs(out) == _outputs(clean_run[0])
    res = run(luna, out, PreprocessConfig(workers=1, lung_dilate_mm=3.0), progress=False)
    assert (res.manifest["status"] == "ok").all()


def test_kill_then_restart_gives_identical_outputs(luna, clean_run, tmp_path):
    out = tmp_path / "pre"
    cmd = [sys.executable, "-m", "pipeline", "preprocess", "--luna", str(luna), "--out", str(out),
           "--workers", "1", "--no-progress", "--params", str(_defaults(tmp_path))]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list(out.glob("*.json")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    n_done = len([p for p in out.glob("*.json") if p.name != "summary.json"])
    assert 1 <= n_done < 4, f"kill came too late or too early ({n_done} scans done)"
    assert not (out / "manifest.csv").exists()
    rc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, encoding="utf-8", errors="replace", check=False)
    assert rc.returncode == 0, rc.stderr
    man = pd.read_csv(out / "manifest.csv")
    assert (man["status"] == "ok").all()  # reused scans are "ok" in the file: same bytes as a clean run
    assert f"{n_done} up to date" in rc.stdout
    assert _outputs(out) == _outputs(clean_run[0])
    for name in ("manifest.csv", "failures.csv", "summary.json"):
        assert (out / name).read_bytes() == (clean_run[0] / name).read_bytes(), name
    assert not list(out.glob(".tmp-*"))


def _bad_root(tmp_path: Path, luna: Path) -> Path:
    root = tmp_path / "bad"
    shutil.copytree(luna, root)
    raw = root / "subset1" / f"{UIDS[1][0]}.raw"
    raw.write_bytes(raw.read_bytes()[: raw.stat().st_size // 2])  # truncated
    scan = read_scan(root / "subset2" / f"{UIDS[2][0]}.mhd")
    arr = scan.array_zyx.astype(np.float32)
    arr[5, 10, 10] = np.nan
    write_scan(arr, scan.geometry, root / "subset2" / f"{UIDS[2][0]}.mhd")
    return root


def test_bad_scans_reported_others_processed(luna, tmp_path):
    root = _bad_root(tmp_path, luna)
    out = tmp_path / "pre"
    res = run(root, out, PreprocessConfig(workers=1, max_failures=2), progress=False)
    st = res.manifest.set_index("seriesuid")["status"]
    assert st[UIDS[1][0]] == "failed" and st[UIDS[2][0]] == "failed"
    assert (st[UIDS[0]] == "ok").all()
    fail = pd.read_csv(out / "failures.csv", dtype={"seriesuid": str}).set_index("seriesuid")
    assert list(fail.columns) == ["path", "reason"]
    assert "truncated" in fail.loc[UIDS[1][0], "reason"]
    assert "NaN" in fail.loc[UIDS[2][0], "reason"]
    assert not (out / f"{UIDS[1][0]}.json").exists()
    with pytest.raises(PipelineError, match="max_failures=1"):
        run(root, tmp_path / "pre2", PreprocessConfig(workers=1, max_failures=1), progress=False)
    rc = subprocess.run([sys.executable, "-m", "pipeline", "preprocess", "--luna", str(root), "--out",
                         str(tmp_path / "pre3"), "--max-failures", "0", "--no-progress", "--workers", "1",
                         "--params", str(_defaults(tmp_path))], cwd=REPO, capture_output=True, text=True, encoding="utf-8", errors="replace",
                        check=False)
    assert rc.returncode == 1 and "failures.csv" in rc.stderr


def test_process_pool_and_dask_localcluster_match_serial(luna, clean_run, tmp_path):
    pytest.importorskip("dask.distributed")
    from dask.distributed import Client, LocalCluster

    pool_out = tmp_path / "pool"
    run(luna, pool_out, PreprocessConfig(workers=2), progress=False)
    assert _tree_hashes(pool_out) == _tree_hashes(clean_run[0])  # incl. manifest: completion order ignored
    dask_out = tmp_path / "dask"
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        res = run(luna, dask_out, PreprocessConfig(), scheduler=client, progress=False)
    assert (res.manifest["status"] == "ok").all()
    assert _tree_hashes(dask_out) == _tree_hashes(clean_run[0])
