"""One writer per output folder: an OS-level lock that a crash cannot leave stuck.

``with output_lock(out_dir):`` takes an exclusive ``flock`` on ``<parent>/.<name>.lock`` (a
sibling of the folder, so the lock file never becomes part of a DVC-tracked output). The kernel
drops the lock when the holder exits, however it exits (kill -9 included), so there is nothing
to clean up after a crash. A second run on the same folder stops at once with a one-line
:class:`~pipeline.errors.LockedError` naming the folder and the holder's pid, or waits up to
``wait_s`` seconds for it. The lock file itself stays (a few bytes: the last holder's pid and
start time, shown in the message); its presence alone never blocks anything.

Where ``fcntl`` is missing (Windows) the lock is a no-op with a warning.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


class LockedError(PipelineError):
    """Another live process holds the output folder's lock."""


def lock_path(out_dir: str | os.PathLike) -> Path:
    """The lock file guarding ``out_dir``: ``<parent>/.<name>.lock``."""
    out = Path(os.path.abspath(out_dir))
    return out.parent / f".{out.name}.lock"


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "another process"
    return text or "another process"


@contextlib.contextmanager
def output_lock(out_dir: str | os.PathLike, *, wait_s: float = 0.0, what: str = "run") -> Iterator[Path]:
    """Hold the exclusive lock on ``out_dir`` for the body of the ``with``.

    Args:
        out_dir: the output folder (need not exist yet; its parent is created).
        wait_s: seconds to wait for a running holder to finish (0 = fail at once).
        what: the command, for the message (e.g. ``"detect"``).

    Raises:
        LockedError: the lock is still held after ``wait_s`` seconds.
    """
    path = lock_path(out_dir)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        log.warning("no fcntl on this platform: %s runs on %s without a lock", what, out_dir)
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + max(0.0, float(wait_s))
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockedError(
                        f"{out_dir}: another {what} is writing to this folder ({_holder(path)}); "
                        f"wait for it to finish or choose another output folder") from None
                time.sleep(0.2)
        stamp = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, stamp.encode("utf-8"), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the flock
