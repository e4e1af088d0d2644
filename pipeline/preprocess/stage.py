"""The ``preprocess`` stage: every scan of a LUNA16 root, in parallel, resumable.

Parallelism: a local ``ProcessPoolExecutor`` (``workers`` processes, forkserver start so
no SimpleITK thread pool is inherited through ``fork``), or a Dask distributed cluster
(``scheduler="tcp://..."`` or a ``dask.distributed.Client``) via ``client.map`` +
``as_completed``. Each task writes its own files; the parent only collects small dicts. Local
workers die with the main process, even after a ``kill -9`` (:mod:`pipeline.preprocess.pool`).

One writer per output folder: a run holds :func:`pipeline.lock.output_lock` on ``out_dir``; a
second run on the same folder stops at once with a one-line error.

Resuming: a scan is skipped when its three files exist and are intact (readable, the sizes and
shapes their headers and the sidecar promise) and its sidecar (written last) carries the current
``params_hash``; a killed run therefore restarts where it stopped and ends with the same bytes as
an uninterrupted run, and a zero-byte or truncated file is computed again, never loaded.

Outputs are content only: ``manifest.csv`` (sorted by subset, seriesuid; status ``ok`` whether a
scan was computed now or reused), ``failures.csv`` and ``summary.json`` hold no timings, process
ids, worker counts or hosts, so an unchanged input gives byte-identical outputs (DVC sees no change).
Those run details go to the log and to the ``run_log`` JSON file (the CLI: ``logs/preprocess.json``).

Failures (unreadable or truncated file, NaNs, no lungs) are recorded in ``failures.csv``
and the manifest, the other scans go on; the stage raises only when more than
``max_failures`` scans failed. Default 2: one or two corrupted downloads out of 888
LUNA16 scans should not throw away hours of work (they are listed and excluded
downstream), while more than that points to a systematic problem (wrong folder, wrong
parameters) that must stop ``dvc repro``.
"""
from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import DataError, PipelineError
from pipeline.io.luna16 import index_root
from pipeline.lock import output_lock
from pipeline.outdir import claim_output_dir
from pipeline.preprocess.config import PreprocessConfig
from pipeline.preprocess.storage import is_done, paths_for, write_outputs
from pipeline.progress import ProgressLog
from pipeline.runlog import write_run_log
from pipeline.utils import write_csv, write_json

log = logging.getLogger(__name__)
MANIFEST_COLUMNS = ["seriesuid", "subset", "status", "reason"]
FAILURE_COLUMNS = ["seriesuid", "path", "reason"]


@dataclass
class PreprocessResult:
    """``manifest``: this run's status per scan (``ok`` computed now, ``skipped`` up to date from an
    earlier run, ``failed``) and ``seconds``; ``summary``: ``summary.json`` plus this run's details
    (``skipped``, and ``run``: timings, workers, peak RSS)."""

    out_dir: Path
    manifest: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        return int((self.manifest["status"] == "failed").sum())


def _peak_rss_mb() -> float:
    """Peak RSS of this process in MB: ``VmHWM`` (reset by exec, unlike ``ru_maxrss`` which a
    spawned worker inherits from its parent), falling back to ``getrusage``."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def process_one(seriesuid: str, subset: int, path: str, out_dir: str, cfg: PreprocessConfig) -> dict:
    """Preprocess one scan and write its files; never raises for bad data (returns status)."""
    from pipeline.io.scans import read_scan
    from pipeline.preprocess.core import preprocess_scan

    t0 = time.perf_counter()
    phash = cfg.params_hash()
    status, reason = "ok", ""
    if is_done(out_dir, seriesuid, phash):
        status, reason = "skipped", "up to date"
    else:
        try:
            scan = read_scan(path)
            pre = preprocess_scan(scan, cfg)
            sidecar = {
                "seriesuid": seriesuid, "subset": int(subset), "source_path": str(path),
                "original_geometry": scan.geometry.to_dict(), "geometry": pre.geometry.to_dict(),
                "window_hu": list(cfg.window_hu), "spacing_xyz_mm": list(cfg.spacing_xyz_mm),
                "params": cfg.output_params(), "params_hash": phash,
                "lung_volume_ml": round(float(pre.lung_zyx.sum(dtype="int64"))
                                        * float(pre.geometry.spacing_xyz_mm[0] * pre.geometry.spacing_xyz_mm[1]
                                                * pre.geometry.spacing_xyz_mm[2]) / 1000.0, 3),
            }
            write_outputs(out_dir, seriesuid, pre.array_zyx, pre.lung_zyx, sidecar)
        except DataError as exc:
            status, reason = "failed", exc.reason
        except Exception as exc:  # one bad scan must not stop the batch
            status, reason = "failed", " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            log.exception("unexpected error on %s", path)
        if status == "failed":  # a stale done-marker from an earlier run must not survive
            paths_for(out_dir, seriesuid)["sidecar"].unlink(missing_ok=True)
    return {"seriesuid": seriesuid, "subset": int(subset), "path": str(path), "status": status,
            "reason": reason, "seconds": round(time.perf_counter() - t0, 3), "pid": os.getpid(),
            "peak_rss_mb": round(_peak_rss_mb(), 1)}


def _iter_results(tasks: list[tuple], out_dir: str, cfg: PreprocessConfig, workers: int,
                  scheduler: Any) -> Iterator[dict]:
    if scheduler is not None:
        from dask.distributed import Client, as_completed

        client = Client(scheduler) if isinstance(scheduler, str) else scheduler
        try:
            futures = client.map(process_one, *zip(*tasks), out_dir=out_dir, cfg=cfg, pure=False)
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            if isinstance(scheduler, str):
                client.close()
    elif workers > 1 and len(tasks) > 1:
        from concurrent.futures import as_completed as cf_completed

        from pipeline.preprocess.pool import worker_pool

        with worker_pool(min(workers, len(tasks))) as pool:
            futs = [pool.submit(process_one, *t, out_dir, cfg) for t in tasks]
            for fut in cf_completed(futs):
                yield fut.result()
    else:
        for t in tasks:
            yield process_one(*t, out_dir, cfg)


PREPROCESS_SIGNATURES = ("manifest.csv",)  # a folder preprocess wrote before output markers existed


def run(luna_root: str | os.PathLike, out_dir: str | os.PathLike,
        cfg: PreprocessConfig = PreprocessConfig(), *, workers: int | None = None,
        scheduler: Any = None, progress: bool = True,
        run_log: str | os.PathLike | None = None, force: bool = False) -> PreprocessResult:
    """Preprocess every ``subsetK/<uid>.mhd`` under ``luna_root`` into ``out_dir``.

    Args:
        workers: local processes (default ``cfg.workers``); ignored when a scheduler is given.
        scheduler: Dask scheduler address ``tcp://...`` or a ``dask.distributed.Client``
            (default ``cfg.scheduler``).
        run_log: JSON file for this run's timings / workers / peak RSS (None: only logged).

    Returns:
        :class:`PreprocessResult`; ``manifest.csv``, ``failures.csv`` and ``summary.json``
        are written to ``out_dir``.

    One writer per output folder: the run holds ``output_lock(out_dir)`` (an flock on the sibling
    ``.<name>.lock``, released by the kernel however the process ends); a second run on the same folder
    stops at once with :class:`~pipeline.lock.LockedError`.

    Rerun consistency: a scan whose files are missing, zero-byte, truncated or inconsistent is
    computed again (:func:`~pipeline.preprocess.storage.is_done`); ``manifest.csv``/``failures.csv``
    list exactly the scans of this input. Files of scans no longer in the input are kept on disk
    (warning logged) but are not in the manifest, so downstream stages ignore them.

    Raises:
        PipelineError: more than ``cfg.max_failures`` scans failed (outputs still written).
        LockedError: another run holds ``out_dir``.
        DataError: ``out_dir`` is a file, holds files preprocess did not write (``force`` writes
            anyway; :mod:`pipeline.outdir`), or ``luna_root`` is not a LUNA16 root.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(out, "preprocess output must be a folder, but an existing file has this name")
    above = next(a for a in Path(os.path.abspath(out)).parents if a.exists())
    if not above.is_dir():
        raise DataError(out, f"preprocess output folder cannot be created: {above} is a file")
    index = index_root(luna_root)
    with output_lock(out, what="preprocess"):
        claim_output_dir(out, "preprocess", force=force, signatures=PREPROCESS_SIGNATURES)
        return _run_locked(index, out, cfg, workers, scheduler, progress, run_log)


def _orphans(out: Path, uids: set[str]) -> list[str]:
    """Seriesuids with a sidecar in ``out`` but no scan in the input any more."""
    found = {f.name[:-5] for f in out.glob("*.json")
             if f.name not in ("summary.json",) and not f.name.startswith(".")}
    return sorted(found - uids)


def _run_locked(index: pd.DataFrame, out: Path, cfg: PreprocessConfig, workers: int | None, scheduler: Any,
                progress: bool, run_log: str | os.PathLike | None) -> PreprocessResult:
    from tqdm import tqdm

    for stale in out.glob(".tmp-*"):  # left by a killed run (atomic writes never finished)
        stale.unlink(missing_ok=True)
    workers = int(workers or cfg.workers)
    scheduler = scheduler if scheduler is not None else cfg.scheduler
    tasks = [(r.seriesuid, int(r.subset), str(r.path)) for r in index.itertuples()]
    orphans = _orphans(out, {t[0] for t in tasks})
    if orphans:
        log.warning("%s: %d preprocessed scan(s) are no longer in the input (first: %s); their files are "
                    "kept but not listed in manifest.csv, so later stages ignore them", out, len(orphans),
                    orphans[0])
    t0 = time.perf_counter()
    results = []
    plog = ProgressLog(len(tasks), "preprocess", every_s=300.0 if progress else 30.0, logger=log, unit="scan")
    with tqdm(total=len(tasks), desc="preprocess", unit="scan", disable=not progress) as bar:
        for res in _iter_results(tasks, str(out), cfg, workers, scheduler):
            results.append(res)
            bar.update()
            plog.update()
            if res["status"] == "failed":
                log.warning("failed: %s: %s", res["path"], res["reason"])
    wall = time.perf_counter() - t0
    # sorted, so the files do not depend on the order in which workers finished
    df = (pd.DataFrame(results, columns=["seriesuid", "subset", "path", "status", "reason", "seconds", "pid",
                                         "peak_rss_mb"])
          .sort_values(["subset", "seriesuid"], kind="stable").reset_index(drop=True))
    content = df[MANIFEST_COLUMNS].copy()
    reused = content["status"] == "skipped"  # reused == computed: same bytes, same manifest row
    content.loc[reused, "status"], content.loc[reused, "reason"] = "ok", ""
    write_csv(out / "manifest.csv", content)
    failed = df[df["status"] == "failed"]
    write_csv(out / "failures.csv", failed[FAILURE_COLUMNS])
    done = df[df["status"] == "ok"]
    summary = {
        "n_scans": len(df), "ok": int((content["status"] == "ok").sum()), "failed": len(failed),
        "params": cfg.output_params(), "params_hash": cfg.params_hash(),
        "max_failures": int(cfg.max_failures),
    }
    write_json(out / "summary.json", summary)
    rss = df.groupby("pid")["peak_rss_mb"].max()
    run_info = {
        "out_dir": str(out), "scans": len(df), "computed": len(done),
        "skipped": int((df["status"] == "skipped").sum()), "failed": len(failed),
        "seconds_total": round(wall, 2),
        "seconds_per_scan_mean": round(float(done["seconds"].mean()), 3) if len(done) else None,
        "seconds_per_scan_max": round(float(done["seconds"].max()), 3) if len(done) else None,
        "workers": workers if scheduler is None else None,
        "scheduler": None if scheduler is None else str(getattr(scheduler, "scheduler_info", dict)()
                                                         .get("address", scheduler)),
        "peak_rss_mb_per_worker": {str(k): float(v) for k, v in rss.items()},
        "peak_rss_mb_max": float(rss.max()) if len(rss) else None,
        "per_scan": df[["seriesuid", "status", "seconds", "pid", "peak_rss_mb"]].to_dict("records"),
    }
    write_run_log("preprocess", run_info, run_log)
    result = PreprocessResult(out, df[MANIFEST_COLUMNS + ["seconds"]],
                              {**summary, "skipped": run_info["skipped"], "run": run_info})
    if len(failed) > cfg.max_failures:
        raise PipelineError(f"{out / 'failures.csv'}: {len(failed)} scan(s) failed, more than "
                            f"preprocess.max_failures={cfg.max_failures} (first: {failed.iloc[0]['path']}: "
                            f"{failed.iloc[0]['reason']})")
    return result
