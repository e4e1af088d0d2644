"""``python -m pipeline preprocess --luna data/luna16 --out data/preprocessed``."""
from __future__ import annotations

import argparse

from pipeline.cliutil import (
    add_force_arg,
    add_params_arg,
    check_input_dir,
    check_not_inside,
    check_output_dir,
    params_section,
)


def _run(args: argparse.Namespace) -> int:
    from pipeline.config import from_dict
    from pipeline.preprocess.config import PreprocessConfig
    from pipeline.preprocess.stage import PREPROCESS_SIGNATURES, run
    from pipeline.runlog import run_log_path

    check_input_dir(args.luna, "--luna", "LUNA16 root folder")
    check_not_inside(args.out, args.luna, "--out", "--luna")
    check_output_dir(args.out, stage="preprocess", force=args.force, signatures=PREPROCESS_SIGNATURES)
    params = params_section(args, "preprocess")
    for key in ("workers", "scheduler", "max_failures"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    cfg = from_dict(PreprocessConfig, params, "preprocess")
    res = run(args.luna, args.out, cfg, progress=not args.no_progress, run_log=run_log_path("preprocess"),
              force=args.force)
    s = res.summary
    print(f"preprocess: {s['ok'] - s['skipped']} done, {s['skipped']} up to date, {s['failed']} failed "
          f"-> {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("preprocess", help="HU window, resample, lung mask -> data/preprocessed",
                              description="Window HU, resample every LUNA16 scan to the target spacing, "
                                          "compute lung masks; resumable and parallel.")
    p.add_argument("--luna", "--luna-root", dest="luna", default="data/luna16",
                   help="LUNA16 root with subset*/<uid>.mhd (default data/luna16)")
    p.add_argument("--out", default="data/preprocessed", help="output folder (default data/preprocessed)")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (overrides params)")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address tcp://host:port (overrides params)")
    p.add_argument("--max-failures", dest="max_failures", type=int, default=None,
                   help="fail when more scans than this fail (overrides params)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_params_arg(p)
    add_force_arg(p)
    p.set_defaults(func=_run)
