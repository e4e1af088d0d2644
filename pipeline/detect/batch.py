"""Batch detection over many scans: discovery, per-scan isolation, resume, serial or Dask runs.

Each scan is processed on its own by :func:`pipeline.detect.job.process_one` (identity -> read ->
detect -> maps -> crops -> ``scans/<id>.json``); an unreadable scan becomes a row of ``errors.csv`` and the batch goes
on. A per-scan result is reused on a rerun only when it holds the same content identity (a hash of
the scan's bytes, :mod:`pipeline.detect.identity`, never its file name) and the same ``run_key``
(models + detection params). ``findings.csv``, ``errors.csv``, ``report.html`` and ``run.json`` are
rebuilt at the end from the per-scan files of the scans given, so a rerun skips finished scans and
still writes full outputs. One run at a time writes an output folder (:func:`pipeline.lock.output_lock`).
The outputs hold results only; timings, device, scheduler and the count of reused scans go to the
log and the ``run_log`` JSON file (the CLI: ``logs/<detect|infer>.json``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.detect.config import DetectConfig
from pipeline.detect.identity import run_key
from pipeline.detect.job import load_models
from pipeline.errors import DataError
from pipeline.runlog import write_run_log

log = logging.getLogger(__name__)


@dataclass
class DetectResult:
    """Counts add up: ``n_scans == n_ok + n_failed`` (``n_skipped`` of the ok ones reused from an
    earlier run); the ``n_inputs`` PATHs gave those scans (``n_duplicates`` more reached a scan
    already listed) and ``n_no_scan`` PATHs gave none (listed in errors.csv)."""

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
    n_inputs: int = 0
    n_no_scan: int = 0
    n_duplicates: int = 0

    @property
    def exit_code(self) -> int:
        """0 = every scan ok, 3 = some scans failed or PATHs held none (see errors.csv), 1 = none succeeded."""
        if self.n_ok == 0:
            return 1
        return 3 if self.n_failed or self.n_no_scan else 0


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


def run(paths, model: str | os.PathLike, out_dir: str | os.PathLike, cfg: DetectConfig | None = None, *,
        segmenter: str | os.PathLike | None = None, save_maps: bool = False, overwrite: bool = False,
        scheduler=None, progress: bool = True, stage: str = "detect",
        run_log: str | os.PathLike | None = None, wait_s: float = 0.0, prefetch: int = 1,
        force: bool = False) -> DetectResult:
    """Detect nodules in every scan under ``paths``; see the module docstring for the outputs.

    ``scheduler``: None (serial, in-process), a ``tcp://host:port`` Dask address or a Dask Client
    (one task per scan; models loaded once per worker; workers write to ``out_dir``: a shared disk).
    ``stage`` names the progress lines, the run log and the lock message; ``run_log``: JSON file for
    the timings, device and scheduler of this run (None: only logged). ``wait_s``: how long to wait
    when another run holds ``out_dir`` (0: stop at once with a LockedError). ``prefetch``: without
    a scheduler, pool workers that read and preprocess the next scans while this process runs the
    models (0: one scan after the other; :mod:`pipeline.detect.prefetch`).
    ``out_dir`` must be new, empty or a detect output folder (:mod:`pipeline.outdir`; ``force``
    overrides): a folder of the user's own files is never written into.
    Raises DataError/ConfigError for a bad ``out_dir``, bad models or when no input yields a scan.
    """
    with locked_out_dir(out_dir, wait_s, stage, force=force) as out:
        return run_locked(paths, model, out, cfg, segmenter=segmenter, save_maps=save_maps, overwrite=overwrite,
                          scheduler=scheduler, progress=progress, stage=stage, run_log=run_log,
                          prefetch=prefetch)


@contextlib.contextmanager
def locked_out_dir(out_dir, wait_s: float = 0.0, what: str = "detect", force: bool = False):
    """Check ``out_dir`` (one-line DataError when it is a file, under a file, not writable, or a
    folder of files detect did not write), then hold its lock (:func:`pipeline.lock.output_lock`)
    for the body; yields ``out_dir`` as a Path."""
    from pipeline.detect.discover import OUTPUT_MARKER, check_out_dir
    from pipeline.lock import output_lock
    from pipeline.outdir import check_owner, claim_output_dir

    out = check_out_dir(out_dir)
    signature = ("/".join(OUTPUT_MARKER),)
    check_owner(out, "detect", force=force, signatures=signature)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(output_lock(out, wait_s=wait_s, what=what))
        except OSError as exc:
            raise DataError(out, f"cannot create the output folder's lock file ({exc.strerror})") from None
        claim_output_dir(out, "detect", force=force, signatures=signature)
        yield out


def model_cards(cls_dir, seg_dir) -> tuple[dict, str]:
    """The models' cards (``model_card.json``; None for a model without one) and a warning when a
    model was trained on synthetic scans only (empty string otherwise)."""
    from pipeline.modelcard import read_card

    cards = {"classifier": read_card(cls_dir), "segmenter": read_card(seg_dir)}
    synthetic = [k for k, c in cards.items() if c and (c.get("training_data") or {}).get("synthetic")]
    warning = ""
    if synthetic:
        warning = (f"the {' and '.join(synthetic)} model{'s were' if len(synthetic) > 1 else ' was'} trained on "
                   "SYNTHETIC scans only (the default run): its findings on patient scans mean nothing; "
                   "train on the real LUNA16 or your own data first (see MODEL_CARD.md in the model folder)")
    return cards, warning


def run_locked(paths, model, out: Path, cfg: DetectConfig | None, *, segmenter, save_maps: bool, overwrite: bool,
               scheduler, progress: bool, stage: str, run_log, prefetch: int = 1) -> DetectResult:
    """The body of :func:`run`; the caller holds ``out``'s lock (:func:`locked_out_dir`)."""
    from pipeline.config import to_dict
    from pipeline.detect import outputs
    from pipeline.detect.discover import discover
    from pipeline.detect.prefetch import run_jobs
    from pipeline.detect.report import write_report
    from pipeline.detect.scan import STEPS
    from pipeline.detect.slicer import write_markups
    from pipeline.detect.studies import studies_table
    from pipeline.utils import write_csv, write_json, write_text

    cfg = cfg or DetectConfig()
    t0 = time.perf_counter()
    cls_dir, seg_dir = resolve_model_dirs(model, segmenter)
    found = discover(paths, out)
    jobs, problems = found.jobs, found.problems
    for p, why in problems:
        log.warning("%s: %s", p, why)
    if not jobs:
        raise DataError(", ".join(str(p) for p in paths), "no scans found in the given paths")
    load_models(str(cls_dir) if cls_dir else None, str(seg_dir), cfg.device)  # fail early on bad models
    cards, warning = model_cards(cls_dir, seg_dir)
    if warning:
        log.warning("%s", warning)
    key = run_key(cls_dir, seg_dir, cfg)
    key_file = out / "scans" / "run_key.txt"
    try:
        old_key = key_file.read_text(encoding="utf-8").strip() if key_file.is_file() else None
    except (OSError, UnicodeDecodeError):
        old_key = ""
    stale = old_key != key if old_key is not None else any((out / "scans").glob("*.json"))
    if not overwrite and stale:
        log.info("%s: models or detection params changed since its last run; redoing every scan", out)
        overwrite = True
    if overwrite and (out / "scans").is_dir():
        for old in (out / "scans").glob("*.json"):
            old.unlink()
    write_text(key_file, key + "\n")
    args = (str(out), str(cls_dir) if cls_dir else None, str(seg_dir), cfg, save_maps, 5, key,
            outputs.identity_index(out, key))
    done, per_min = run_jobs(jobs, args, scheduler=scheduler, prefetch=prefetch, stage=stage, progress=progress)
    order = {j.rel: k for k, j in enumerate(jobs)}
    done.sort(key=lambda d: order[d["scan"]])
    n_reused = sum(d["status"] == "reused" for d in done)
    if n_reused:
        log.info("%d of %d scans already done (same content, models and params); reused", n_reused, len(jobs))
    findings, errors, records = outputs.collect(out, done)
    errors = pd.concat([errors, pd.DataFrame(problems, columns=outputs.ERROR_COLUMNS)], ignore_index=True)
    outputs.write_tables(out, findings, errors)
    write_markups(out, records)
    studies = studies_table(records)
    write_csv(out / "studies.csv", studies)
    n_ok = len(records)
    counts = {"inputs": found.n_inputs, "scans": len(jobs), "ok": n_ok, "failed": len(jobs) - n_ok,
              "bad_arguments": len(problems), "duplicates": found.duplicates, "findings": len(findings)}
    info = {"counts": counts, "steps": list(STEPS), "config": to_dict(cfg),
            "models": {"classifier": outputs.model_provenance(cls_dir), "segmenter": outputs.model_provenance(seg_dir)},
            "model_cards": cards, **({"warning": warning} if warning else {})}
    write_report(out / "report.html", records, errors, info, studies)
    write_json(out / "run.json", info)
    dev = load_models(str(cls_dir) if cls_dir else None, str(seg_dir), cfg.device)[-1]
    seconds = time.perf_counter() - t0
    details = {"out_dir": str(out), "inputs": found.n_inputs, "scans": len(jobs), "ok": n_ok,
               "processed": sum(d["status"] == "ok" for d in done), "skipped_done": n_reused,
               "failed": len(jobs) - n_ok, "paths_without_scans": len(problems), "duplicates": found.duplicates,
               "seconds_total": round(seconds, 3), "scans_per_min": round(per_min, 3), "device": str(dev),
               "prefetch_workers": int(prefetch) if scheduler is None else 0,
               "scheduler": None if scheduler is None else str(getattr(scheduler, "scheduler", scheduler)),
               "seconds_per_scan": outputs.timing_summary([d["seconds"] for d in done if d["status"] == "ok"]),
               "seconds_identity_reused": outputs.timing_summary(
                   [d["seconds"] for d in done if d["status"] == "reused"]),
               "per_scan": {d["scan"]: {"id": d["id"], "status": d["status"], "seconds": d["seconds"],
                                        "device": d.get("device")} for d in done}}
    write_run_log(stage, details, run_log)
    return DetectResult(out, len(jobs), n_ok, len(jobs) - n_ok, n_reused, findings, errors, seconds, info, details,
                        n_inputs=found.n_inputs, n_no_scan=len(problems), n_duplicates=found.duplicates)
