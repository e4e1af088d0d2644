"""Hostile inputs for the preprocess stage (issue 10): one writer per output folder, damaged outputs
of a crashed run redone (never loaded, never an EOFError), the manifest consistent with the files,
worker processes that die with a kill -9'd parent, and one-line CLI errors for bad paths/options."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from phantom_data import write_luna_root

from pipeline.errors import DataError
from pipeline.lock import LockedError
from pipeline.preprocess import PreprocessConfig, load_preprocessed
from pipeline.preprocess.stage import run
from pipeline.preprocess.storage import is_done, paths_for

REPO = Path(__file__).resolve().parents[2]
UIDS = {0: ["1.2.826.0.9.1", "1.2.826.0.9.2"], 1: ["1.2.826.0.9.3", "1.2.826.0.9.4"]}
ALL = [u for us in UIDS.values() for u in us]
SMALL = {"shape_zyx": (24, 96, 100), "spacing_xyz_mm": (1.0, 1.0, 3.0)}
CFG = PreprocessConfig(workers=1)


@pytest.fixture(scope="module")
def luna(tmp_path_factory):
    return write_luna_root(tmp_path_factory.mktemp("hostile_luna"), UIDS, **SMALL)


@pytest.fixture(scope="module")
def clean(luna, tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile_clean") / "pre"
    run(luna, out, CFG, progress=False)
    return out


def _bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _defaults(tmp_path: Path) -> Path:
    p = tmp_path / "defaults.yaml"
    p.write_text("{}\n")
    return p


def _cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout, check=False)


def _one_line_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------------
# one writer per output folder
# ------------------------------------------------------------------------------------------------

def test_second_run_on_a_locked_output_stops_at_once_with_one_line(luna, tmp_path):
    out = tmp_path / "pre"
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import time\nfrom pipeline.lock import output_lock\n"
            f"with output_lock({str(out)!r}, what='preprocess'):\n"
            "    print('locked', flush=True)\n    time.sleep(120)\n")],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, text=True, encoding="utf-8", errors="replace")
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        res = _cli(["preprocess", "--luna", luna, "--out", out, "--workers", "1", "--no-progress",
                    "--params", _defaults(tmp_path)], cwd=tmp_path)
        assert time.monotonic() - t0 < 30  # stops at once, does not wait
        line = _one_line_error(res, str(out), "another preprocess is writing", f"pid {holder.pid}")
        assert res.returncode == 1, line
        assert not out.exists() or not any(out.iterdir())  # nothing written, nothing deleted
        with pytest.raises(LockedError):
            run(luna, out, CFG, progress=False)
    finally:
        holder.send_signal(signal.SIGKILL)  # a crashed holder leaves no stuck lock
        holder.wait()
    res = run(luna, out, CFG, progress=False)
    assert (res.manifest["status"] == "ok").all() and len(res.manifest) == 4
    assert not (out / ".pre.lock").exists() and (tmp_path / ".pre.lock").is_file()  # sibling, not inside


# ------------------------------------------------------------------------------------------------
# damaged outputs of a crashed run: redone, never trusted; load_preprocessed gives one-line errors
# ------------------------------------------------------------------------------------------------

def _damage(out: Path) -> dict[str, Path]:
    """Damage one file of each of the four scans, as a crash or a full disk can leave them."""
    p = [paths_for(out, u) for u in ALL]
    p[0]["array"].write_bytes(b"")                                      # zero-byte array
    lung = p[1]["lung"].read_bytes()
    p[1]["lung"].write_bytes(lung[: len(lung) // 2])                    # truncated mask
    side = p[2]["sidecar"].read_text(encoding="utf-8")
    p[2]["sidecar"].write_text(side[: len(side) // 3])                  # truncated JSON
    arr = p[3]["array"].read_bytes()
    p[3]["array"].write_bytes(arr[:60])                                 # truncated inside the header
    return {ALL[0]: p[0]["array"], ALL[1]: p[1]["lung"], ALL[2]: p[2]["sidecar"], ALL[3]: p[3]["array"]}


def test_damaged_outputs_are_refused_by_loader_and_redone_by_rerun(luna, clean, tmp_path):
    import shutil

    out = tmp_path / "pre"
    shutil.copytree(clean, out)
    damaged = _damage(out)
    phash = CFG.params_hash()
    for uid, path in damaged.items():
        assert not is_done(out, uid, phash), uid
        with pytest.raises(DataError) as err:
            load_preprocessed(out, uid)
        msg = str(err.value)
        assert msg.startswith(f"{path}: truncated or corrupt preprocessed") and "rerun preprocess" in msg
        assert "\n" not in msg
    res = _cli(["preprocess", "--luna", luna, "--out", out, "--workers", "1", "--no-progress",
                "--params", _defaults(tmp_path)], cwd=tmp_path)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert "4 done, 0 up to date, 0 failed" in res.stdout
    assert _bytes(out) == _bytes(clean)  # manifest, failures, summary and every array as a clean run
    man = pd.read_csv(out / "manifest.csv", dtype={"seriesuid": str})
    assert list(man["seriesuid"]) == ALL and (man["status"] == "ok").all()
    for uid in ALL:
        np.testing.assert_array_equal(load_preprocessed(out, uid).array_zyx,
                                      load_preprocessed(clean, uid).array_zyx)


def test_mismatched_sidecar_and_extra_bytes_are_not_done(luna, clean, tmp_path):
    import shutil

    out = tmp_path / "pre"
    shutil.copytree(clean, out)
    uid = ALL[0]
    p = paths_for(out, uid)
    side = json.loads(p["sidecar"].read_text(encoding="utf-8"))
    side["geometry"]["shape_zyx"][0] += 1
    p["sidecar"].write_text(json.dumps(side))
    assert not is_done(out, uid, CFG.params_hash())
    with pytest.raises(DataError, match=r"does not match the sidecar"):
        load_preprocessed(out, uid)
    p["sidecar"].write_text("[1, 2]")  # valid JSON, not an object
    assert not is_done(out, uid, CFG.params_hash())
    with pytest.raises(DataError, match="corrupt preprocessed sidecar"):
        load_preprocessed(out, uid)
    uid = ALL[1]
    with open(paths_for(out, uid)["array"], "ab") as fh:  # padded: size disagrees with the header
        fh.write(b"\0" * 64)
    assert not is_done(out, uid, CFG.params_hash())
    res = run(luna, out, CFG, progress=False)
    assert res.manifest.set_index("seriesuid")["status"].to_dict() == {
        ALL[0]: "ok", ALL[1]: "ok", ALL[2]: "skipped", ALL[3]: "skipped"}
    assert _bytes(out) == _bytes(clean)


def test_scan_removed_from_input_leaves_the_manifest_but_keeps_its_files(luna, clean, tmp_path, caplog):
    import shutil

    root, out = tmp_path / "luna", tmp_path / "pre"
    shutil.copytree(luna, root)
    shutil.copytree(clean, out)
    gone = UIDS[1][1]
    for f in (root / "subset1").glob(f"{gone}.*"):
        f.unlink()
    with caplog.at_level(logging.WARNING, logger="pipeline.preprocess.stage"):
        res = run(root, out, CFG, progress=False)
    assert (res.manifest["status"] == "skipped").all() and len(res.manifest) == 3
    man = pd.read_csv(out / "manifest.csv", dtype={"seriesuid": str})
    assert gone not in set(man["seriesuid"]) and len(man) == 3
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["n_scans"] == 3
    assert all(f.is_file() for f in paths_for(out, gone).values())  # kept: not deleted
    assert "no longer in the input" in caplog.text and gone in caplog.text


# ------------------------------------------------------------------------------------------------
# worker processes die with their parent
# ------------------------------------------------------------------------------------------------

def _ppids() -> dict[int, int]:
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                out[int(d.name)] = int((d / "stat").read_bytes().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return out


def _descendants(pid: int) -> set[int]:
    pp = _ppids()
    found, todo = set(), [pid]
    while todo:
        cur = todo.pop()
        kids = [c for c, p in pp.items() if p == cur]
        found.update(kids)
        todo += kids
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc (Linux)")
def test_kill9_of_preprocess_leaves_no_worker_process_and_rerun_completes(tmp_path):
    uids = {0: [f"1.2.826.0.8.{i}" for i in range(1, 5)], 1: [f"1.2.826.0.8.{i}" for i in range(5, 9)]}
    luna = write_luna_root(tmp_path / "luna", uids, shape_zyx=(40, 140, 150), spacing_xyz_mm=(0.7, 0.7, 2.0))
    out = tmp_path / "pre"
    cmd = [sys.executable, "-m", "pipeline", "preprocess", "--luna", str(luna), "--out", str(out),
           "--workers", "2", "--no-progress", "--params", str(_defaults(tmp_path))]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        workers: set[int] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            seen |= _descendants(proc.pid)
            pp = _ppids()
            workers = {p for p in seen if pp.get(p) in seen}  # grandchildren: forkserver's workers
            if len(workers) >= 2:
                break
            time.sleep(0.05)
        assert len(workers) >= 2 and proc.poll() is None, "no worker processes seen before the run ended"
        os.kill(proc.pid, signal.SIGKILL)  # the main process only, as the OOM killer or `kill -9` would
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_running(p) for p in seen):
            time.sleep(0.1)
        left = sorted(p for p in seen if _running(p))
        assert not left, f"processes left after kill -9 of preprocess: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in seen:  # only the processes this test started
            if _running(p):
                os.kill(p, signal.SIGKILL)
    assert not (out / "manifest.csv").exists()
    res = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300,
                         check=False)
    assert res.returncode == 0, res.stderr
    man = pd.read_csv(out / "manifest.csv", dtype={"seriesuid": str})
    assert sorted(man["seriesuid"]) == sorted(u for us in uids.values() for u in us)
    assert (man["status"] == "ok").all()
    assert not list(out.glob(".tmp-*"))


# ------------------------------------------------------------------------------------------------
# CLI: bad paths and options give one line, exit 1, no traceback, nothing written
# ------------------------------------------------------------------------------------------------

def _cases(tmp: Path, luna: Path) -> list[tuple[str, list, list[str]]]:
    (tmp / "a_file").write_text("x")
    (tmp / "empty").mkdir()
    (tmp / "bad.yaml").write_text("preprocess: [unclosed\n")
    (tmp / "unknown.yaml").write_text("preprocess:\n  window: [0, 1]\n")
    (tmp / "params_dir").mkdir()
    defaults = _defaults(tmp)
    base = ["preprocess", "--no-progress", "--workers", "1"]
    return [
        ("--luna is a file", [*base, "--luna", tmp / "a_file", "--out", tmp / "o", "--params", defaults],
         ["a_file", "--luna: expected LUNA16 root folder, found a file"]),
        ("--luna does not exist", [*base, "--luna", tmp / "nope", "--out", tmp / "o", "--params", defaults],
         ["nope", "no such LUNA16 root folder"]),
        ("--luna is an empty folder", [*base, "--luna", tmp / "empty", "--out", tmp / "o", "--params", defaults],
         ["empty", "no subset*/<seriesuid>.mhd scans found"]),
        ("--out is an existing file", [*base, "--luna", luna, "--out", tmp / "a_file", "--params", defaults],
         ["a_file", "--out must be a folder"]),
        ("--out under a file", [*base, "--luna", luna, "--out", tmp / "a_file" / "pre", "--params", defaults],
         ["a_file", "is a file, not a folder"]),
        ("--out is --luna", [*base, "--luna", luna, "--out", luna, "--params", defaults],
         [str(luna), "same folder as --luna"]),
        ("--params missing", [*base, "--luna", luna, "--out", tmp / "o", "--params", tmp / "nope.yaml"],
         ["nope.yaml", "params file not found"]),
        ("--params is a folder", [*base, "--luna", luna, "--out", tmp / "o", "--params", tmp / "params_dir"],
         ["params_dir", "must be a YAML file"]),
        ("--params not valid YAML", [*base, "--luna", luna, "--out", tmp / "o", "--params", tmp / "bad.yaml"],
         ["bad.yaml", "not valid YAML"]),
        ("--params unknown key", [*base, "--luna", luna, "--out", tmp / "o", "--params", tmp / "unknown.yaml"],
         ["unknown key(s) ['window']", "valid keys"]),
        ("--workers 0", ["preprocess", "--no-progress", "--workers", "0", "--luna", luna, "--out", tmp / "o",
                         "--params", defaults], ["preprocess.workers must be >= 1"]),
    ]


def test_preprocess_cli_bad_inputs_give_one_line_errors(luna, tmp_path):
    for name, args, needles in _cases(tmp_path, luna):
        res = _cli(args, cwd=tmp_path)
        _one_line_error(res, *needles)
        assert res.returncode == 1, name
    assert not (tmp_path / "o").exists()  # no case wrote anything
    assert (tmp_path / "a_file").read_text(encoding="utf-8") == "x"
