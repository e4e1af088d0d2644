"""``python -m pipeline transfer-report``: the transfer figure + table from the DVC experiments."""
from __future__ import annotations

import argparse
import json


def _report(args: argparse.Namespace) -> int:
    from pipeline.cliutil import check_input_dir, check_output_dir
    from pipeline.report.transfer import write_report

    repo = check_input_dir(args.repo, "--repo", "git + DVC repository with experiments")
    check_output_dir(args.out)
    res = write_report(repo, args.out, include_workspace=args.workspace, all_commits=args.all_commits,
                       names=args.exp or None, readme=args.readme)
    print(json.dumps(res, indent=2))
    return 0


def register(sub) -> None:
    p = sub.add_parser("transfer-report", help="figure (val AUC per epoch) + strategies/encoders table "
                       "from the DVC experiments (dvc exp show + DVCLive curves)")
    p.add_argument("--repo", default=".", help="repository with the experiments (default: .)")
    p.add_argument("--out", default="docs/transfer", help="output folder (default: docs/transfer)")
    p.add_argument("--exp", action="append", help="experiment name to include (repeat; default: all, "
                   "plus the baseline commit)")
    p.add_argument("--workspace", action="store_true", help="also the uncommitted workspace")
    p.add_argument("--all-commits", action="store_true", help="experiments of every commit (dvc exp show -A), "
                   "not only those of HEAD")
    p.add_argument("--readme", default=None, help="also write the table into this file between its "
                   "'<!-- transfer-report:begin -->' and '<!-- transfer-report:end -->' lines (e.g. README.md)")
    p.set_defaults(func=_report)
