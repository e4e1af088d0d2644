"""``python -m pipeline detect`` (any scans) and ``python -m pipeline infer`` (the DVC stage)."""
from __future__ import annotations

import argparse
import logging

from pipeline.cliutil import add_params_arg, params_section

DETECT_HELP = """\
Find lung nodules in CT scans. PATH: .mhd/.mha/.nii/.nii.gz/.nrrd files, DICOM series folders, or
folders searched recursively for both.

Models: --model is the classifier folder (models/classifier) and the segmenter is taken from the
sibling folder models/segmenter unless --segmenter is given; --model may also be the folder that
holds both (models). A segmenter folder alone gives segmenter-only detection.
Preprocessing and patch parameters are read from the models' config.json (as in training);
detection parameters from the 'infer:' section of --params, overridden by the flags below.

Outputs in --out: findings.csv (seriesuid,coordX,coordY,coordZ,probability = a LUNA16 submission,
then diameter_mm, index_z/y/x (voxel of the original scan), seg_score, cls_score, scan), errors.csv
(scan, reason), report.html + report/*.png, run.json (counts, detection params, model provenance;
timings, device and scheduler go to logs/detect.json),
scans/<id>.json (per-scan results, keyed by the scan's content hash and the models + detection
params: a rerun reuses the result of an identical scan, never one of a different scan that shares its
file name, unless --overwrite),
maps/<id>_prob.nii.gz + <id>_findings.nii.gz with --save-maps (original scan grid),
report/explain/<id>_<k>.png + .npy with --explain (classifier saliency, shown in report.html).
Privacy: the only DICOM value written anywhere is the SeriesInstanceUID (the LUNA16 scan key);
patient name/ID/dates are never read.

One run at a time writes --out (a lock file .<out>.lock next to it, released when the run ends,
crash included): a second run stops at once with a message, or waits with --wait SECONDS.
--out must not be a file; when it lies inside an input folder, its contents (and those of any other
detect output folder) are never taken as input scans.

Exit code: 0 all scans done, 3 some scans failed or a PATH held no scan (listed in errors.csv),
1 none succeeded or bad arguments/models/--out, or another run holds --out. Research software, not a medical device."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="classifier folder (or folder holding classifier/ and segmenter/)")
    p.add_argument("--segmenter", default=None, help="segmenter folder (default: sibling 'segmenter' of --model)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="default: infer.device (auto)")
    p.add_argument("--batch-size", type=int, default=None, help="classifier patches per batch (infer.batch_size)")
    p.add_argument("--max-findings", type=int, default=None, help="findings kept per scan (infer.max_findings)")
    p.add_argument("--combine", default=None, help="classifier|geomean|product|mean|segmenter (infer.combine)")
    p.add_argument("--save-maps", action="store_true", help="write NIfTI probability/finding maps (original grid)")
    p.add_argument("--dicom-out", action="store_true",
                   help="for DICOM inputs also write a DICOM SEG + SR per series (dicom/); these files carry the "
                        "source's patient and study identity, to be filed back into a PACS")
    p.add_argument("--overwrite", action="store_true", help="redo scans that already have scans/<id>.json")
    p.add_argument("--scheduler", default=None, help="Dask scheduler tcp://HOST:PORT (one task per scan)")
    p.add_argument("--prefetch", type=int, default=1, metavar="N",
                   help="without --scheduler: N worker processes read and preprocess the next scans while "
                        "the models run on the current one (default 1; 0 = one scan after the other)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="when another run is writing --out, wait up to SECONDS for it (default 0: stop at once)")
    p.add_argument("--force", action="store_true",
                   help="write into --out even when it holds files that detect did not write")
    add_params_arg(p)


def _config(args):
    from pipeline.config import from_dict
    from pipeline.detect.config import DetectConfig

    d = params_section(args, "infer")
    for flag, key in (("device", "device"), ("batch_size", "batch_size"), ("max_findings", "max_findings"),
                      ("combine", "combine")):
        if getattr(args, flag) is not None:
            d[key] = getattr(args, flag)
    if getattr(args, "subsets", None) is not None:
        d["subsets"] = args.subsets
    if getattr(args, "dicom_out", False):
        d["dicom_out"] = True
    return from_dict(DetectConfig, d, "infer")


def summary_line(res) -> str:
    """One line whose counts add up: PATHs -> scans (+ duplicates) = ok (reused) + failed, + PATHs
    that held no scan."""
    dup = f", {res.n_duplicates} more path(s) named a scan already listed (counted once)" if res.n_duplicates else ""
    return (f"{res.n_inputs} path(s) -> {res.n_scans} scan(s){dup}: {res.n_ok} ok ({res.n_skipped} reused "
            f"from an earlier run, {res.n_ok - res.n_skipped} processed), {res.n_failed} failed; "
            f"{res.n_no_scan} path(s) held no scan; {len(res.findings)} findings -> {res.out_dir / 'findings.csv'}")


def _summary(res, max_failures: int = 0) -> int:
    log = logging.getLogger("pipeline.detect")
    log.info("%s", summary_line(res))
    if res.n_failed or res.n_no_scan:
        log.warning("failures listed in %s", res.out_dir / "errors.csv")
    if res.exit_code == 3 and res.n_failed + res.n_no_scan <= max_failures:
        return 0
    return res.exit_code


def _detect(args) -> int:
    from pipeline.detect.batch import run
    from pipeline.runlog import run_log_path

    cfg = _config(args)
    res = run(args.paths, args.model, args.out, cfg, segmenter=args.segmenter, save_maps=args.save_maps,
              overwrite=args.overwrite, scheduler=args.scheduler, progress=not args.no_progress,
              run_log=run_log_path("detect"), wait_s=args.wait, prefetch=args.prefetch, force=args.force)
    rc = _summary(res)
    if args.explain:
        _explain(args)
    return rc


def _explain(args) -> None:
    """``--explain``: saliency of each scan's top findings next to their crops in report.html."""
    from pathlib import Path

    from pipeline.config import from_dict
    from pipeline.detect.batch import resolve_model_dirs
    from pipeline.detect.report import add_explain_images
    from pipeline.explain.config import ExplainConfig
    from pipeline.explain.detect import explain_detect

    cls_dir = resolve_model_dirs(args.model, args.segmenter)[0]
    if cls_dir is None:
        logging.getLogger("pipeline.detect").warning("--explain: no classifier model, no saliency maps")
        return
    out = Path(args.out)
    cfg = from_dict(ExplainConfig, params_section(args, "explain"), "explain")
    images = explain_detect(out, cls_dir, out / "report" / "explain", cfg)
    add_explain_images(out / "report.html", images)
    logging.getLogger("pipeline.detect").info("--explain: saliency of %d finding(s) added to %s", len(images),
                                              out / "report.html")


def _infer(args) -> int:
    from pipeline.detect.infer import run_infer
    from pipeline.runlog import run_log_path

    cfg = _config(args)
    res = run_infer(args.luna, args.model, args.out, cfg, segmenter=args.segmenter, save_maps=args.save_maps,
                    overwrite=args.overwrite, scheduler=args.scheduler, progress=not args.no_progress,
                    run_log=run_log_path("infer"), wait_s=args.wait, prefetch=args.prefetch, force=args.force)
    return _summary(res, int(cfg.max_failures))


def register(subparsers) -> None:
    p = subparsers.add_parser("detect", help="find nodules in CT scans (files, DICOM folders)",
                              description=DETECT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="scan files or folders")
    p.add_argument("--explain", action="store_true",
                   help="saliency maps (params 'explain:') of the top findings next to their crops in report.html")
    _common(p)
    p.set_defaults(func=_detect)
    q = subparsers.add_parser("infer", help="stage: detection on the LUNA16 test subsets (for the FROC)",
                              description="Run detection on the scans of LUNA16 subsets; writes findings.csv, "
                              "predictions.csv (LUNA16 submission) and seriesuids.csv (no header) for evaluate. "
                              "Exit codes as for detect, except that up to infer.max_failures failed scans still exit 0.", formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--luna", default="data/luna16", help="LUNA16 root (subsetK/*.mhd)")
    q.add_argument("--subsets", type=int, nargs="+", default=None,
                   help="subsets to run on (default: infer.subsets, else the models' test subsets)")
    _common(q)
    q.set_defaults(func=_infer)
