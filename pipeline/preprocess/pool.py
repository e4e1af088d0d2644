"""A local process pool whose workers die with the process that started them.

``ProcessPoolExecutor`` workers outlive a parent killed with SIGKILL (``kill -9``, the OOM killer):
each finishes its ~300 MB scan, then blocks on the task queue forever, re-parented to init. With the
``forkserver`` start method the fork server does not help: every worker holds a copy of the fork
server's "alive" descriptor (so that it could start processes itself), so the fork server, too, lives
on until the last worker is gone. Here every worker, in its initializer:

* starts a daemon watchdog thread that checks every ``WATCH_S`` seconds that the main process (pid
  passed at pool creation) is still alive, i.e. exists and is not a zombie, and that the worker was
  not re-parented; otherwise the worker SIGKILLs itself. This is what works with ``forkserver``:
  measured, every worker, the fork server and the resource tracker are gone about 1-2 s after a
  ``kill -9`` of the main process (``tests/preprocess/test_hostile_preprocess.py``);
* asks Linux to SIGKILL it at once when its parent process dies (``prctl(PR_SET_PDEATHSIG)``),
  which is immediate where the parent is the main process (``fork``/``spawn`` start methods) and
  costs nothing elsewhere.

Without ``/proc`` and ``prctl`` (not Linux) the watchdog still sees a vanished main process.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

log = logging.getLogger(__name__)
WATCH_S = 0.5
PR_SET_PDEATHSIG = 1


def _alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie (a SIGKILLed process its parent has not reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: existence is all we can know
    return state not in (b"Z", b"X")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _watch(main_pid: int, ppid: int) -> None:
    while True:
        time.sleep(WATCH_S)
        if os.getppid() != ppid or not _alive(main_pid):
            _die()


def die_with_parent(main_pid: int) -> None:
    """Worker initializer: SIGKILL this process when its parent or ``main_pid`` dies (see module doc)."""
    ppid = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the watchdog alone
        pass
    if os.getppid() != ppid or not _alive(main_pid):  # died before the prctl took effect
        _die()
    threading.Thread(target=_watch, args=(main_pid, ppid), name="die-with-parent", daemon=True).start()


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """``ProcessPoolExecutor(workers)`` with the ``forkserver`` start method (no SimpleITK thread pool
    inherited through ``fork``) whose workers die with this process."""
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        yield pool
