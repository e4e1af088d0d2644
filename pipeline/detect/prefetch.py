"""Running the per-scan jobs of a detection batch: in process one after the other, overlapped with a
process pool that reads and preprocesses the next scans, or as Dask tasks.

Overlapped (``prefetch >= 1``, no scheduler, at least :data:`MIN_OVERLAP_SCANS` scans): ``prefetch`` pool workers
(:func:`pipeline.preprocess.pool.worker_pool`: they die with this process) each take the next scan
(content identity, read, the segmenter's preprocessing: :func:`pipeline.detect.job.prepare`) while this process runs the
models on the current one (:func:`pipeline.detect.job.process_one` with the prepared scan). At
most ``prefetch + 1`` scans are prepared ahead (memory: about 0.4 GB per full-size scan). A scan the
worker cannot read or preprocess fails with the same one-line reason as in process; a worker that
dies (e.g. killed) fails its scan, and the pool is restarted for the rest. A scan whose result can
be reused (same content, models and params) is only hashed by the worker, never read.

Progress: a tqdm bar and :class:`pipeline.progress.ProgressLog` lines ending in ``scans/min``.
"""
from __future__ import annotations

import logging
import time
from collections import deque

from pipeline.detect.discover import Job
from pipeline.progress import ProgressLog

log = logging.getLogger(__name__)
MIN_OVERLAP_SCANS = 3  # fewer: the pool's start (a few s) costs more than the one preprocessing it hides


class _Progress:
    """tqdm bar + ProgressLog lines with the scans per minute since the start."""

    def __init__(self, total: int, stage: str, progress: bool):
        from tqdm import tqdm

        self.t0 = time.perf_counter()
        self.bar = tqdm(total=total, desc=stage, unit="scan", disable=not progress)
        self.log = ProgressLog(total, stage, every_s=300.0 if progress else 30.0, logger=log, unit="scan")
        self.n = 0

    def rate(self) -> float:
        return 60.0 * self.n / max(time.perf_counter() - self.t0, 1e-9)

    def update(self) -> None:
        self.n += 1
        r = f"{self.rate():.3g} scans/min"
        self.bar.set_postfix_str(r, refresh=False)
        self.bar.update()
        self.log.update(extra=r)

    def close(self) -> None:
        self.bar.close()


def run_jobs(jobs: list[Job], args: tuple, *, scheduler=None, prefetch: int = 1, stage: str = "detect",
             progress: bool = True) -> tuple[list[dict], float]:
    """Run :func:`pipeline.detect.job.process_one` ``(job, *args)`` for every job; returns the
    per-scan records (in completion order) and the scans per minute of the whole batch."""
    from pipeline.detect.job import process_one

    prog = _Progress(len(jobs), stage, progress)
    done: list[dict] = []
    try:
        if scheduler is not None:
            _run_dask(jobs, args, scheduler, done, prog)
        elif prefetch > 0 and len(jobs) >= MIN_OVERLAP_SCANS:
            _run_overlapped(jobs, args, int(prefetch), done, prog)
        else:
            for j in jobs:
                done.append(process_one(j, *args))
                prog.update()
    finally:
        prog.close()
    return done, prog.rate()


def _client(scheduler):
    from dask.distributed import Client

    return (scheduler, False) if isinstance(scheduler, Client) else (Client(str(scheduler)), True)


def _run_dask(jobs, args, scheduler, done, prog) -> None:
    from dask.distributed import as_completed

    from pipeline.detect.job import process_one

    client, own = _client(scheduler)
    try:
        futs = [client.submit(process_one, j, *args, pure=False, key=f"detect-{j.id}-{time.time_ns()}")
                for j in jobs]
        for fut in as_completed(futs):
            done.append(fut.result())
            prog.update()
    finally:
        if own:
            client.close()


def _run_overlapped(jobs, args, workers: int, done, prog) -> None:
    import contextlib
    from concurrent.futures.process import BrokenProcessPool

    from pipeline.detect.job import load_models, prepare, process_one
    from pipeline.detect.scan import preprocess_config
    from pipeline.preprocess.pool import worker_pool

    out_dir, cls_dir, seg_dir, cfg, save_maps, _top, key, index = args
    pcfg = preprocess_config(load_models(cls_dir, seg_dir, cfg.device)[1])
    todo = deque(jobs)
    while todo:
        with contextlib.ExitStack() as stack:
            pool = stack.enter_context(worker_pool(workers))
            ahead: deque = deque()
            broken = False
            while todo or ahead:
                while todo and len(ahead) < workers + 1 and not broken:
                    j = todo.popleft()
                    ahead.append((j, pool.submit(prepare, j, out_dir, key, index or {}, save_maps, pcfg)))
                if not ahead:
                    break
                j, fut = ahead.popleft()
                if isinstance(fut.exception(), BrokenProcessPool):  # waits for the worker
                    broken = True
                    fut = _Failed(j.path, "a preprocessing worker process died while reading or "
                                          "preprocessing this scan")
                rec = process_one(j, *args, prefetched=fut)
                done.append(rec)
                prog.update()
                if broken:  # the rest of this pool's futures are lost: give them back to a new pool
                    todo.extendleft(reversed([a[0] for a in ahead]))
                    ahead.clear()
                    break


class _Failed:
    """A stand-in future whose ``result()`` raises the DataError of a scan its worker never finished."""

    def __init__(self, path, reason: str):
        self.path, self.reason = path, reason

    def result(self):
        from pipeline.errors import DataError

        raise DataError(self.path, self.reason)
