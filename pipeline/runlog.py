"""Run logs: wall-clock times, process ids, host and worker details of one stage run.

These change on every run, so they must not go into a stage's DVC outputs (a byte-identical
result would get a new hash and re-run everything downstream). Stage cores take a ``run_log``
path (default None = only logged); the CLI passes ``logs/<stage>.json`` (git-ignored, outside
every DVC output), overwritten by each run of that stage.
"""
from __future__ import annotations

import datetime
import logging
import os
import socket
from pathlib import Path
from typing import Any

from pipeline.utils import write_json

log = logging.getLogger("pipeline.runlog")
LOG_DIR = "logs"


def run_log_path(stage: str, log_dir: str | os.PathLike = LOG_DIR) -> Path:
    """``<log_dir>/<stage>.json`` (default ``logs/<stage>.json``, relative to the working directory)."""
    return Path(log_dir) / f"{stage}.json"


def write_run_log(stage: str, data: dict[str, Any], path: str | os.PathLike | None = None) -> Path | None:
    """Log the scalar entries of ``data`` at INFO and, when ``path`` is given, write all of it as JSON
    (atomically; with ``stage``, ``finished_utc``, ``host`` and ``pid`` added). Returns the path written."""
    scalars = " ".join(f"{k}={v}" for k, v in data.items() if isinstance(v, (int, float, str, bool)) or v is None)
    log.info("%s run: %s%s", stage, scalars, f" (details: {path})" if path is not None else "")
    if path is None:
        return None
    rec = {"stage": stage, "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "host": socket.gethostname(), "pid": os.getpid(), **data}
    return write_json(path, rec)
