"""One scan of a detection batch: :func:`prepare` (content identity -> is a result already there ->
read -> optionally preprocess) and :func:`process_one` (models -> findings -> per-scan files).

:func:`prepare` is the same step whether it runs in this process or, ahead of time, in a pool worker
(:mod:`pipeline.detect.prefetch`); :func:`process_one` takes its result either way. Models are loaded
once per process (:func:`load_models`).
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.detect.config import DetectConfig
from pipeline.detect.discover import Job
from pipeline.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """What :func:`prepare` hands to :func:`process_one`: the content ``identity``, the ``scan`` (None
    when a reusable result exists: nothing was read), ``pre`` = ``(PreprocessConfig,
    PreprocessedScan)`` when preprocessed ahead, and the ``seconds`` spent per step."""

    identity: str
    scan: object | None = None
    pre: tuple | None = None
    seconds: dict = field(default_factory=dict)


def prepare(job: Job, out_dir: str, key: str, index: dict, save_maps: bool, pcfg=None) -> Prepared:
    """Identity (file bytes; the decoded array when the files cannot be hashed), then the scan read
    unless ``scans/`` already holds a reusable result for this content (at ``job.id`` or where
    ``index`` points), then, with ``pcfg``, the segmenter's preprocessing. Raises DataError (one-line
    reason) for an unreadable scan."""
    from pipeline.detect import outputs
    from pipeline.detect.identity import array_identity, file_identity
    from pipeline.io.scans import read_scan

    sec: dict[str, float] = {}
    out = Path(out_dir)

    def reusable(i: str) -> bool:
        return any(outputs.reusable(out, sid, i, key, save_maps) for sid in {index.get(i) or job.id, job.id})

    t = time.perf_counter()
    ident = file_identity(job.path, job.series_uid)
    sec["identity"] = time.perf_counter() - t
    if ident is not None and reusable(ident):
        return Prepared(ident, None, None, sec)
    t = time.perf_counter()
    scan = read_scan(job.path, series_uid=job.series_uid)
    sec["io"] = time.perf_counter() - t
    if ident is None:
        t = time.perf_counter()
        ident = array_identity(scan)
        sec["identity"] += time.perf_counter() - t
        if reusable(ident):
            return Prepared(ident, None, None, sec)
    if pcfg is None:
        return Prepared(ident, scan, None, sec)
    from pipeline.preprocess import preprocess_scan

    t = time.perf_counter()
    pre = preprocess_scan(scan, pcfg)
    sec["preprocess"] = time.perf_counter() - t
    return Prepared(ident, scan, (pcfg, pre), sec)


@functools.lru_cache(maxsize=4)
def load_models(cls_dir: str | None, seg_dir: str, device: str):
    """(seg_model, seg_cfg, cls_model, cls_cfg, torch device), cached per process (one load per Dask worker)."""
    from pipeline.runtime import configure_device, load_model, resolve_device

    dev = resolve_device(device)
    configure_device(dev)
    seg, seg_cfg = load_model(seg_dir, dev)
    if seg_cfg.get("task") != "segmenter":
        raise ConfigError(f"{seg_dir}: is not a segmenter model (task {seg_cfg.get('task')!r})")
    cls, cls_cfg = (load_model(cls_dir, dev) if cls_dir else (None, None))
    return seg, seg_cfg, cls, cls_cfg, dev


def _prepared(pre):
    """``preprocess_fn`` for :func:`detect_scan` that returns the prefetched ``(pcfg, result)`` for
    ``pcfg`` and preprocesses anew for any other config (None: the default preprocessing)."""
    if pre is None:
        return None
    from pipeline.preprocess import preprocess_scan

    pcfg, result = pre

    def fn(scan, cfg):
        return result if cfg == pcfg else preprocess_scan(scan, cfg)
    return fn


def _dicom(out: Path, sid: str, scan, res, cls_dir: str | None, seg_dir: str) -> dict:
    """DICOM SEG + SR of this scan's findings (:mod:`pipeline.detect.dicom_export`); a scan that is
    not a DICOM series (or cannot be exported) gets ``{"skipped": reason}``, never a failure."""
    from pipeline.detect import outputs
    from pipeline.detect.dicom_export import export_scan

    if (scan.meta or {}).get("format") != "dicom":
        return {"skipped": "not a DICOM series"}
    labels = outputs.finding_mask(res.findings, res.original_geometry or scan.geometry, res.masks)
    models = {f"{k}_sha256": (outputs.model_provenance(Path(d)) or {}).get("model_sha256")
              for k, d in (("classifier", cls_dir), ("segmenter", seg_dir)) if d}
    records = res.findings.astype(object).where(res.findings.notna(), None).to_dict("records")
    got = export_scan(out / "dicom", sid, scan, records, labels, models)
    if "skipped" in got:
        log.warning("%s: no DICOM SEG/SR: %s", scan.path, got["skipped"])
    return got


def process_one(job: Job, out_dir: str, cls_dir: str | None, seg_dir: str, cfg: DetectConfig,
                save_maps: bool = False, report_top: int = 5, key: str = "", index: dict | None = None,
                prefetched=None) -> dict:
    """Detect on one scan and write its per-scan files, or reuse them when ``scans/<id>.json`` holds
    this content's result under run key ``key`` (at ``job.id``, or at the id ``index`` maps this
    content to: :func:`outputs.identity_index`). Returns ``{id, scan, status, reason, seconds,
    device}``: status ``ok`` / ``reused`` / ``failed``; ``id`` may differ from ``job.id`` when that
    slot holds the result of a different scan of the same name (see :func:`outputs.claim_id`).
    The scan comes from :func:`prepare`, here or (``prefetched``: a future of it, with the
    preprocessing done ahead by a pool worker) in another process; its errors fail this scan."""
    import torch

    from pipeline.detect import outputs
    from pipeline.detect.report import render_scan
    from pipeline.detect.scan import detect_scan
    from pipeline.io.scans import read_scan

    out = Path(out_dir)
    sid = job.id
    seconds: dict[str, float] = {}

    def reused(ident: str) -> dict | None:
        nonlocal sid
        prev = (index or {}).get(ident)
        if prev is not None and outputs.reusable(out, prev, ident, key, save_maps):
            sid = prev
        else:
            sid = outputs.claim_id(out, job.id, ident)
        if outputs.reusable(out, sid, ident, key, save_maps):
            return {"id": sid, "scan": job.rel, "status": "reused", "reason": "",
                    "seconds": {k: round(float(v), 4) for k, v in seconds.items()}}
        return None

    try:
        prep = prefetched.result() if prefetched is not None else prepare(job, out_dir, key, index or {}, save_maps)
        seconds.update(prep.seconds)
        if hit := reused(prep.identity):
            return hit
        seg, seg_cfg, cls, cls_cfg, dev = load_models(cls_dir, seg_dir, cfg.device)
        scan = prep.scan
        if scan is None:  # the worker saw a reusable result that is gone now: read it here
            t = time.perf_counter()
            scan = read_scan(job.path, series_uid=job.series_uid)
            seconds["io"] = time.perf_counter() - t
        with torch.inference_mode():
            res = detect_scan(scan, seg, seg_cfg, cls, cls_cfg, cfg, dev, keep_maps=save_maps,
                              preprocess_fn=_prepared(prep.pre))
        seconds.update(res.seconds)
        if prep.pre is not None:
            seconds["preprocess"] = prep.seconds["preprocess"]  # done by the pool worker
        t = time.perf_counter()
        if save_maps:
            outputs.write_maps(out / "maps", sid, res)
        crops = render_scan(scan.array_zyx, scan.geometry, res.findings, out / "report", sid,
                            top=max(report_top, len(res.findings)), masks=res.masks)
        extra = {"crops": crops, "identity": prep.identity, "run_key": key,
                 "study_uid": (scan.meta or {}).get("study_uid") or None}
        if cfg.dicom_out:
            extra["dicom"] = _dicom(out, sid, scan, res, cls_dir, seg_dir)
        seconds["outputs"] = time.perf_counter() - t
        outputs.write_scan_result(out, sid, job.rel, res, extra)
        return {"id": sid, "scan": job.rel, "status": "ok", "reason": "",
                "seconds": {k: round(float(v), 4) for k, v in seconds.items()}, "device": str(dev)}
    except DataError as exc:
        reason = str(exc)
    except Exception as exc:
        log.debug("scan %s failed", job.rel, exc_info=True)
        reason = f"{job.rel}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    outputs.write_scan_error(out, sid, job.rel, reason)
    log.warning("scan failed: %s", reason)
    return {"id": sid, "scan": job.rel, "status": "failed", "reason": reason, "seconds": {}}
