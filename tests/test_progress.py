"""ProgressLog (log lines for runs without progress bars) and the run log (timings outside DVC outputs)."""
from __future__ import annotations

import json
import logging

from pipeline.progress import ProgressLog, format_duration, track
from pipeline.runlog import run_log_path, write_run_log


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_format_duration():
    assert [format_duration(s) for s in (0, 5.9, 59, 60, 83, 3599, 3600, 7500, -3)] == \
        ["0s", "5s", "59s", "1m00s", "1m23s", "59m59s", "1h00m", "2h05m", "0s"]


def test_line_format_and_eta():
    clock = FakeClock()
    p = ProgressLog(10, "preprocess", every_s=None, clock=clock, unit="scan")
    assert p.line() == "preprocess: 0/10 (0%) elapsed 0s, ETA ?, 0 scan/s"
    clock.t += 83
    p.done = 2
    assert p.line() == "preprocess: 2/10 (20%) elapsed 1m23s, ETA 5m32s, 0.0241 scan/s"
    assert p.line("loss=0.5").endswith("scan/s; loss=0.5")
    q = ProgressLog(4, "synth", clock=clock)
    clock.t += 2
    q.done = 4
    assert q.line() == "synth: 4/4 (100%) elapsed 2s, ETA 0s, 2/s"


def test_cadence_every_n_every_s_and_last(caplog):
    clock = FakeClock()
    log = logging.getLogger("test.progress")
    p = ProgressLog(10, "x", every_n=3, every_s=30.0, logger=log, clock=clock)
    emitted = []
    with caplog.at_level(logging.INFO, logger="test.progress"):
        for i in range(10):
            clock.t += 1.0 if i != 4 else 40.0  # item 5 takes 40 s: logged by time
            if p.update() is not None:
                emitted.append(p.done)
    assert emitted == [3, 5, 8, 10]  # every 3 items (counted from the last line), after 30 s, the last
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 4 and msgs[-1].startswith("x: 10/10 (100%) elapsed 49s, ETA 0s, ")
    assert all(r.levelno == logging.INFO for r in caplog.records)


def test_time_only_cadence_and_initial():
    clock = FakeClock()
    p = ProgressLog(100, "t", every_s=30.0, clock=clock)
    out = []
    for _ in range(100):
        clock.t += 1.0
        out.append(p.update())
    assert [i + 1 for i, line in enumerate(out) if line] == [30, 60, 90, 100]
    clock = FakeClock()
    r = ProgressLog(4, "epochs", every_n=1, clock=clock, initial=2, unit="epoch")  # resumed after 2 epochs
    clock.t += 10
    assert r.update() == "epochs: 3/4 (75%) elapsed 10s, ETA 10s, 0.1 epoch/s"


def test_track_yields_all_and_logs_last(caplog):
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        assert list(track(range(5), "patches", every_s=None)) == [0, 1, 2, 3, 4]
    assert [r.getMessage().split(" elapsed")[0] for r in caplog.records] == ["patches: 5/5 (100%)"]


def test_run_log_file_and_logging(tmp_path, caplog):
    path = run_log_path("synth", tmp_path / "logs")
    assert path == tmp_path / "logs" / "synth.json"
    with caplog.at_level(logging.INFO, logger="pipeline.runlog"):
        assert write_run_log("synth", {"seconds": 1.5, "per_scan": {"a": 0.5}}, path) == path
        assert write_run_log("synth", {"seconds": 2.0}) is None  # no file: only logged
    rec = json.loads(path.read_text(encoding="utf-8"))
    assert rec["stage"] == "synth" and rec["seconds"] == 1.5 and rec["per_scan"] == {"a": 0.5}
    assert {"finished_utc", "host", "pid"} <= set(rec)
    assert "synth run: seconds=1.5" in caplog.text and "synth run: seconds=2.0" in caplog.text
    assert not list(path.parent.glob(".tmp-*"))
