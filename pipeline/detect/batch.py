"""Batch detection over many scans: discovery, per-scan isolation, resume, serial or Dask runs.

Each scan is processed on its own by :func:`process_one` (read -> detect -> maps -> crops ->
``scans/<id>.json``); an unreadable scan becomes a row of ``errors.csv`` and the batch goes on.
``findings.csv``, ``errors.csv``, ``report.html`` and ``run.json`` are rebuilt at the end from the
per-scan files of the scans given, so a rerun skips finished scans and still writes full outputs.
The outputs hold results only; timings, device, scheduler and the count of reused scans go to the
log and the ``run_log`` JSON file (the CLI: ``logs/<detect|infer>.json``).
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.detect.config import DetectConfig
from pipeline.errors import ConfigError, DataError
from pipeline.progress import ProgressLog
from pipeline.runlog import write_run_log

log = logging.getLogger(__name__)


@dataclass
class DetectResult:
    out_dir: Path
    n_scans: int
    n_ok: int
    n_failed: int
    n_skipped: int
    findings: pd.DataFrame
    errors: pd.DataFrame
    seconds: float = 0.0
    run_info: dict = field(default_factory=dict)  # = run.json
    run_details: dict = field(default_factory=dict)  # timings, device, ... (the run log)

    @property
    def exit_code(self) -> int:
        """0 = every scan ok, 3 = some scans/paths failed (see errors.csv), 1 = none succeeded."""
        if self.n_ok == 0:
            return 1
        return 3 if self.n_failed else 0


def resolve_model_dirs(model: str | os.PathLike, segmenter: str | os.PathLike | None = None):
    """(classifier_dir or None, segmenter_dir) from ``--model`` / ``--segmenter``.

    ``--model`` may be a classifier folder (segmenter defaults to its sibling ``segmenter/``), a
    segmenter folder (segmenter-only detection), or a folder holding ``classifier/`` and ``segmenter/``.
    """
    from pipeline.utils import read_json

    m = Path(model)
    if not (m / "config.json").is_file() and (m / "segmenter" / "config.json").is_file():
        cls = m / "classifier" if (m / "classifier" / "config.json").is_file() else None
        return cls, Path(segmenter) if segmenter else m / "segmenter"
    if not (m / "config.json").is_file():
        raise DataError(m, "not a model folder (no config.json, nor classifier/ + segmenter/ inside)")
    if read_json(m / "config.json").get("task") == "segmenter":
        return None, m
    seg = Path(segmenter) if segmenter else m.parent / "segmenter"
    if not (seg / "config.json").is_file():
        raise DataError(seg, "segmenter model folder not found (pass --segmenter DIR)")
    return m, seg


@dataclass(frozen=True)
class Job:
    path: str
    rel: str
    id: str


def discover(paths) -> tuple[list[Job], list[tuple[str, str]]]:
    """Scan inputs under ``paths`` (files, or folders searched recursively, DICOM series folders).

    Returns (jobs, problems): ``problems`` = (path, reason) for folders that hold no scan.
    A path that does not exist raises DataError (checked for all paths before any work).
    Job ids are file-name-safe, unique: the file stem / folder name, plus a path hash on clashes.
    """
    from pipeline.detect.outputs import safe_id
    from pipeline.io.scans import find_scans, scan_id

    found, problems = [], []
    cwd = Path.cwd().resolve()
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise DataError(missing[0], "no such file or folder" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    for arg in paths:
        p = Path(arg)
        scans = find_scans(p)
        if not scans:
            problems.append((str(p), "no scans found (.mhd/.mha/.nii/.nii.gz/.nrrd files or DICOM folders)"))
        for s in scans:
            a = s.resolve()
            rel = os.path.relpath(a, cwd) if a.is_relative_to(cwd) else str(a)
            found.append((str(a), rel, safe_id(scan_id(s))))
    seen: dict[str, int] = {}
    for _, _, sid in found:
        seen[sid] = seen.get(sid, 0) + 1
    jobs, used = [], set()
    for a, rel, sid in found:
        if a in used:
            continue
        used.add(a)
        if seen[sid] > 1:
            sid = f"{sid}-{hashlib.sha1(a.encode()).hexdigest()[:8]}"
        jobs.append(Job(a, rel, sid))
    return jobs, problems


@functools.lru_cache(maxsize=4)
def load_models(cls_dir: str | None, seg_dir: str, device: str):
    """(seg_model, seg_cfg, cls_model, cls_cfg, torch device), cached per process (one load per Dask worker)."""
    from pipeline.train.checkpoint import load_model
    from pipeline.train.loop import resolve_device

    dev = resolve_device(device)
    seg, seg_cfg = load_model(seg_dir, dev)
    if seg_cfg.get("task") != "segmenter":
        raise ConfigError(f"{seg_dir}: is not a segmenter model (task {seg_cfg.get('task')!r})")
    cls, cls_cfg = (load_model(cls_dir, dev) if cls_dir else (None, None))
    return seg, seg_cfg, cls, cls_cfg, dev


def process_one(job: Job, out_dir: str, cls_dir: str | None, seg_dir: str, cfg: DetectConfig,
                save_maps: bool = False, report_top: int = 5) -> dict:
    """Detect on one scan and write its per-scan files; returns ``{id, status, reason, seconds, device}``."""
    import torch

    from pipeline.detect import outputs
    from pipeline.detect.report import render_scan
    from pipeline.detect.scan import detect_scan
    from pipeline.io.scans import read_scan

    out = Path(out_dir)
    try:
        seg, seg_cfg, cls, cls_cfg, dev = load_models(cls_dir, seg_dir, cfg.device)
        t = time.perf_counter()
        scan = read_scan(job.path)
        t_io = time.perf_counter() - t
        with torch.inference_mode():
            res = detect_scan(scan, seg, seg_cfg, cls, cls_cfg, cfg, dev, keep_maps=save_maps)
        seconds = {"io": t_io, **res.seconds}
        t = time.perf_counter()
        if save_maps:
            outputs.write_maps(out / "maps", job.id, res)
        crops = render_scan(scan.array_zyx, scan.geometry, res.findings, out / "report", job.id, top=report_top)
        seconds["outputs"] = time.perf_counter() - t
        outputs.write_scan_result(out, job.id, job.rel, res, {"crops": crops})
        return {"id": job.id, "status": "ok", "reason": "",
                "seconds": {k: round(float(v), 4) for k, v in seconds.items()}, "device": str(dev)}
    except DataError as exc:
        reason = str(exc)
    except Exception as exc:
        log.debug("scan %s failed", job.rel, exc_info=True)
        reason = f"{job.rel}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    outputs.write_scan_error(out, job.id, job.rel, reason)
    log.warning("scan failed: %s", reason)
    return {"id": job.id, "status": "failed", "reason": reason, "seconds": {}}


def _client(scheduler):
    from dask.distributed import Client

    return (scheduler, False) if isinstance(scheduler, Client) else (Client(str(scheduler)), True)


# fields of DetectConfig that do not change the findings (where and how fast they are computed)
_RUNTIME_FIELDS = ("device", "batch_size", "sw_batch_size", "subsets", "max_failures")


def run_key(cls_dir: Path | None, seg_dir: Path, cfg: DetectConfig) -> str:
    """sha256 over both models' weights and config.json and the detection params: per-scan results
    in ``scans/`` are reused on a rerun only when this key is unchanged (``scans/run_key.txt``)."""
    from pipeline.config import to_dict

    h = hashlib.sha256()
    for d in (cls_dir, seg_dir):
        for name in ("model.pt", "config.json"):
            f = Path(d) / name if d else None
            if f is not None and f.is_file():
                with open(f, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
            h.update(b"|")
    params = {k: v for k, v in to_dict(cfg).items() if k not in _RUNTIME_FIELDS}
    h.update(repr(sorted(params.items())).encode())
    return h.hexdigest()


def run(paths, model: str | os.PathLike, out_dir: str | os.PathLike, cfg: DetectConfig | None = None, *,
        segmenter: str | os.PathLike | None = None, save_maps: bool = False, overwrite: bool = False,
        scheduler=None, progress: bool = True, stage: str = "detect",
        run_log: str | os.PathLike | None = None) -> DetectResult:
    """Detect nodules in every scan under ``paths``; see the module docstring for the outputs.

    ``scheduler``: None (serial, in-process), a ``tcp://host:port`` Dask address or a Dask Client
    (one task per scan; models loaded once per worker; workers write to ``out_dir``: a shared disk).
    ``stage`` names the progress lines and the run log; ``run_log``: JSON file for the timings,
    device and scheduler of this run (None: only logged).
    Raises DataError/ConfigError for bad models or when no input yields a scan.
    """
    from tqdm import tqdm

    from pipeline.detect import outputs
    from pipeline.detect.report import write_report

    cfg = cfg or DetectConfig()
    t0 = time.perf_counter()
    out = Path(out_dir)
    cls_dir, seg_dir = resolve_model_dirs(model, segmenter)
    jobs, problems = discover(paths)
    for p, why in problems:
        log.warning("%s: %s", p, why)
    if not jobs:
        raise DataError(", ".join(str(p) for p in paths), "no scans found in the given paths")
    load_models(str(cls_dir) if cls_dir else None, str(seg_dir), cfg.device)  # fail early on bad models
    out.mkdir(parents=True, exist_ok=True)
    key = run_key(cls_dir, seg_dir, cfg)
    key_file = out / "scans" / "run_key.txt"
    stale = key_file.read_text().strip() != key if key_file.is_file() else any((out / "scans").glob("*.json"))
    if not overwrite and stale:
        log.info("%s: models or detection params changed since its last run; redoing every scan", out)
        overwrite = True
    if overwrite and (out / "scans").is_dir():
        for old in (out / "scans").glob("*.json"):
            old.unlink()
    from pipeline.utils import write_text

    write_text(key_file, key + "\n")
    todo = [j for j in jobs if overwrite or not outputs.result_path(out, j.id).is_file()]
    n_skip = len(jobs) - len(todo)
    if n_skip:
        log.info("%d of %d scans already done (scans/<id>.json); skipping them", n_skip, len(jobs))
    args = (str(out), str(cls_dir) if cls_dir else None, str(seg_dir), cfg, save_maps)
    bar = tqdm(total=len(todo), desc=stage, unit="scan", disable=not progress)
    plog = ProgressLog(len(todo), stage, every_s=300.0 if progress else 30.0, logger=log, unit="scan")
    done = []
    if scheduler is None:
        for j in todo:
            done.append(process_one(j, *args))
            bar.update()
            plog.update()
    else:
        from dask.distributed import as_completed

        client, own = _client(scheduler)
        try:
            futs = [client.submit(process_one, j, *args, pure=False, key=f"detect-{j.id}-{time.time_ns()}")
                    for j in todo]
            for fut in as_completed(futs):
                done.append(fut.result())
                bar.update()
                plog.update()
        finally:
            if own:
                client.close()
    bar.close()
    findings, errors, records = outputs.collect(out, [j.id for j in jobs])
    errors = pd.concat([errors, pd.DataFrame(problems, columns=outputs.ERROR_COLUMNS)], ignore_index=True)
    outputs.write_tables(out, findings, errors)
    from pipeline.config import to_dict
    from pipeline.detect.scan import STEPS

    dev = load_models(str(cls_dir) if cls_dir else None, str(seg_dir), cfg.device)[-1]
    info = {"counts": {"scans": len(jobs), "ok": len(records), "failed": len(jobs) - len(records),
                       "findings": len(findings), "bad_arguments": len(problems)},
            "steps": list(STEPS),
            "config": to_dict(cfg), "models": {"classifier": outputs.model_provenance(cls_dir),
                                               "segmenter": outputs.model_provenance(seg_dir)}}
    write_report(out / "report.html", records, errors, info)
    from pipeline.utils import write_json

    write_json(out / "run.json", info)
    n_failed = len(jobs) - len(records) + len(problems)
    seconds = time.perf_counter() - t0
    details = {"out_dir": str(out), "scans": len(jobs), "processed": len(done), "skipped_done": n_skip,
               "failed": n_failed, "seconds_total": round(seconds, 3), "device": str(dev),
               "scheduler": None if scheduler is None else str(getattr(scheduler, "scheduler", scheduler)),
               "seconds_per_scan": outputs.timing_summary([r["seconds"] for r in done if r["status"] == "ok"]),
               "per_scan": {r["id"]: {"status": r["status"], "seconds": r["seconds"], "device": r.get("device")}
                            for r in sorted(done, key=lambda r: r["id"])}}
    write_run_log(stage, details, run_log)
    return DetectResult(out, len(jobs), len(records), n_failed, n_skip, findings, errors, seconds, info, details)


def infer_subsets(cls_dir: Path | None, seg_dir: Path) -> list[int]:
    """Test subsets the models were trained without (train.test_subsets, else patches.folds.test)."""
    from pipeline.utils import read_json

    for d in (cls_dir, seg_dir):
        if d is None:
            continue
        c = read_json(Path(d) / "config.json")
        subs = (c.get("train") or {}).get("test_subsets") or ((c.get("patches") or {}).get("folds") or {}).get("test")
        if subs is not None:
            return sorted(int(s) for s in ([subs] if isinstance(subs, int) else subs))
    raise ConfigError("infer.subsets is null and the model config.json names no test subsets; set infer.subsets")


def run_infer(luna_root, model, out_dir, cfg: DetectConfig | None = None, *, segmenter=None,
              progress: bool = True, **kw) -> DetectResult:
    """The ``infer`` stage: detect on the LUNA16 scans of ``cfg.subsets`` (default: the models' test
    subsets), then write ``predictions.csv`` (LUNA16 submission) and ``seriesuids.csv`` (every scan of
    those subsets, no header, failed ones included) next to ``findings.csv`` for the FROC, and
    ``seg_metrics.json`` (the segmenter's validation Dice / AUC from its ``metrics.json``)."""
    from pipeline.io.luna16 import index_root
    from pipeline.utils import write_csv

    cfg = cfg or DetectConfig()
    cls_dir, seg_dir = resolve_model_dirs(model, segmenter)
    subs = list(cfg.subsets) if cfg.subsets is not None else infer_subsets(cls_dir, seg_dir)
    idx = index_root(luna_root)
    sel = idx[idx["subset"].astype(int).isin(subs)]
    if sel.empty:
        raise DataError(luna_root, f"no scans in subsets {subs} (present: {sorted(idx['subset'].unique())})")
    kw.setdefault("stage", "infer")
    res = run(list(sel["path"]), model, out_dir, cfg, segmenter=segmenter, progress=progress, **kw)
    pred = res.findings[["seriesuid", "coordX", "coordY", "coordZ", "probability"]]
    write_csv(Path(out_dir) / "predictions.csv", pred, float_format="%.6g")
    write_csv(Path(out_dir) / "seriesuids.csv", sel[["seriesuid"]], header=False)
    res.run_info["subsets"] = subs
    from pipeline.utils import read_json, write_json

    write_json(Path(out_dir) / "run.json", res.run_info)
    seg_metrics = Path(seg_dir) / "metrics.json"
    if seg_metrics.is_file():  # the segmenter's own validation Dice/AUC, reported with the detection track
        m = read_json(seg_metrics)
        write_json(Path(out_dir) / "seg_metrics.json",
                   {k: m[k] for k in ("best_val_dice", "val_auc", "best_epoch") if k in m})
    return res
