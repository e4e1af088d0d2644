"""``python -m pipeline patches --luna data/luna16 --preprocessed data/preprocessed --out data/patches``."""
from __future__ import annotations

import argparse

from pipeline.cliutil import (
    add_force_arg,
    add_params_arg,
    check_input_dir,
    check_output_dir,
    params_section,
)


def _run(args: argparse.Namespace) -> int:
    from pipeline.config import from_dict
    from pipeline.patches.config import PatchesConfig
    from pipeline.patches.stage import run

    check_input_dir(args.luna, "--luna", "LUNA16 root folder")
    check_input_dir(args.preprocessed, "--preprocessed", "preprocess output folder")
    check_output_dir(args.out, stage="patches", force=args.force, signatures=("index.csv",))
    params = params_section(args, "patches")
    if args.workers is not None:
        params["workers"] = args.workers
    cfg = from_dict(PatchesConfig, params, "patches")
    from pipeline.outdir import claim_output_dir
    from pipeline.runlog import run_log_path

    claim_output_dir(args.out, "patches", force=args.force, signatures=("index.csv",))
    res = run(args.luna, args.preprocessed, args.out, cfg, progress=not args.no_progress,
              run_log=run_log_path("patches"))
    s = res.summary
    print(f"patches: {s['n_samples']} samples from {s['n_scans']} scans in {s['n_shards']} shard(s) "
          f"{s['counts']} -> {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("patches", help="candidate patches (3D cubes, 2D/2.5D planes) -> data/patches",
                              description="Cut 3D cubes and 3-channel planes around every candidate, "
                                          "split by LUNA16 subset, write shards + index.csv.")
    p.add_argument("--luna", "--luna-root", dest="luna", default="data/luna16",
                   help="LUNA16 root (candidates.csv, annotations.csv, subset*/)")
    p.add_argument("--preprocessed", default="data/preprocessed",
                   help="output of the preprocess stage")
    p.add_argument("--out", default="data/patches", help="output folder (default data/patches)")
    p.add_argument("--workers", type=int, default=None, help="processes (overrides params)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_params_arg(p)
    add_force_arg(p)
    p.set_defaults(func=_run)
