"""``python -m pipeline froc`` (one submission, LUNA16 files) and ``python -m pipeline evaluate`` (the stage)."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from pipeline.cliutil import (
    add_params_arg,
    check_input_dir,
    check_input_file,
    check_output_dir,
    params_section,
)


def _froc(args: argparse.Namespace) -> int:
    from pipeline.evaluate.froc import froc
    from pipeline.evaluate.stage import read_scored_uids, write_froc_outputs
    from pipeline.io.luna16 import read_annotations, read_predictions

    for flag in ("annotations", "excluded", "seriesuids", "predictions"):
        if getattr(args, flag) is not None:
            check_input_file(getattr(args, flag), f"--{flag}", "CSV file")
    check_output_dir(args.out)
    if args.bootstrap < 0:
        from pipeline.errors import ConfigError

        raise ConfigError(f"--bootstrap must be >= 0 (0 = no confidence intervals), got {args.bootstrap}")
    ann = read_annotations(args.annotations)
    exc = read_annotations(args.excluded) if args.excluded else None
    pred = read_predictions(args.predictions)
    pred.attrs["path"] = str(args.predictions)
    uids = read_scored_uids([Path(args.seriesuids)])
    res = froc(ann, exc, uids, pred, max_marks=args.max_marks, bootstrap=args.bootstrap, seed=args.seed)
    write_froc_outputs(res, args.out)
    m = res.to_metrics()
    print(json.dumps({"cpm": m["cpm"], "sensitivity": m["sensitivity"], "cpm_ci": m["ci"]["cpm"],
                      "counts": m["counts"]}, indent=2))
    return 0


TRACK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _parse_tracks(values: list[str]) -> dict[str, list[Path]]:
    from pipeline.errors import ConfigError

    tracks: dict[str, list[Path]] = {}
    for v in values or []:
        name, sep, dirs = v.partition("=")
        if not sep or not name.strip() or not dirs.strip():
            raise ConfigError(f"--track {v!r}: expected NAME=DIR[,DIR2...], e.g. fpr=data/fpr_predictions")
        name = name.strip()
        if not TRACK_NAME.fullmatch(name):
            raise ConfigError(f"--track {v!r}: NAME must be letters, digits, '_' or '-' (it names the "
                              "folder OUT/NAME), e.g. fpr=data/predict/fpr")
        paths = [Path(d.strip()) for d in dirs.split(",") if d.strip()]
        tracks.setdefault(name, []).extend(paths)
    return tracks


def _evaluate(args: argparse.Namespace) -> int:
    from pipeline.config import from_dict
    from pipeline.evaluate.stage import EvaluateConfig, run

    tracks = _parse_tracks(args.track)
    luna = check_input_dir(args.luna, "--luna", "LUNA16 root folder")
    check_input_file(luna / "annotations.csv", "--luna", "annotations.csv")
    check_output_dir(args.out)
    values = params_section(args, "evaluate")
    for key in ("bootstrap", "seed", "max_marks", "threshold"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    cfg = from_dict(EvaluateConfig, values, "evaluate")
    res = run(args.luna, tracks, args.out, cfg)
    print(json.dumps(res.metrics, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("froc", help="LUNA16 FROC/CPM of one submission (official rules, bootstrap CIs)",
                       description="LUNA16 FROC/CPM exactly as noduleCADEvaluationLUNA16.py, with scan "
                       "bootstrap 95%% CIs. Writes metrics.json, froc.csv, froc.png, missed.csv to --out.")
    p.add_argument("--annotations", required=True, help="annotations.csv")
    p.add_argument("--excluded", help="annotations_excluded.csv (marks on these are ignored)")
    p.add_argument("--seriesuids", required=True, help="seriesuids.csv: the scored scans (no header)")
    p.add_argument("--predictions", required=True, help="seriesuid,coordX,coordY,coordZ,probability")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--bootstrap", type=int, default=1000, help="scan resamples for CIs (0 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-marks", dest="max_marks", type=int, default=100,
                   help="official per-scan mark limit (default 100; <= 0 = no limit)")
    p.set_defaults(func=_froc)

    e = sub.add_parser("evaluate", help="evaluate tracks (fpr, detection): FROC/CPM + classifier metrics",
                       description="For each --track NAME=DIR[,DIR2...] (folds pooled) write "
                       "OUT/NAME/{metrics.json,froc.csv,froc.png,missed.csv} and a flat OUT/metrics.json.")
    e.add_argument("--luna", default="data/luna16", help="LUNA16 root with annotations(_excluded).csv")
    e.add_argument("--track", action="append", required=True, metavar="NAME=DIR[,DIR2]",
                   help="track folder(s) holding predictions.csv, seriesuids.csv [, scored.csv, seg_metrics.json]")
    e.add_argument("--out", default="eval", help="output folder (default eval)")
    e.add_argument("--bootstrap", type=int, default=None, help="override evaluate.bootstrap")
    e.add_argument("--seed", type=int, default=None, help="override evaluate.seed")
    e.add_argument("--max-marks", dest="max_marks", type=int, default=None, help="override evaluate.max_marks")
    e.add_argument("--threshold", type=float, default=None, help="override evaluate.threshold")
    add_params_arg(e)
    e.set_defaults(func=_evaluate)
