"""``python -m pipeline synth --out DIR [--scans N] [--seed S] [--subsets K] [--params params.yaml]``."""
from __future__ import annotations

import argparse

from pipeline.cliutil import add_force_arg, add_params_arg, check_output_dir, params_section


def register(subparsers) -> None:
    p = subparsers.add_parser("synth", help="generate a synthetic LUNA16-format data set",
                              description="Write subsetK/<uid>.mhd+.raw, annotations.csv, "
                              "annotations_excluded.csv, candidates.csv, seriesuids.csv, synth_summary.json; "
                              "timings go to logs/synth.json.")
    p.add_argument("--out", required=True, help="output LUNA16 root, e.g. data/luna16")
    p.add_argument("--scans", type=int, help="number of scans (overrides synth.scans)")
    p.add_argument("--seed", type=int, help="seed (overrides synth.seed)")
    p.add_argument("--subsets", type=int, help="number of subsetK folders (overrides synth.subsets)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_params_arg(p)
    add_force_arg(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pipeline.config import from_dict
    from pipeline.runlog import run_log_path
    from pipeline.synth.config import SynthConfig
    from pipeline.synth.generate import SYNTH_SIGNATURES, generate

    check_output_dir(args.out, stage="synth", force=args.force, signatures=SYNTH_SIGNATURES)
    values = params_section(args, "synth")
    for key in ("scans", "seed", "subsets"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    cfg = from_dict(SynthConfig, values, "synth")
    res = generate(args.out, cfg, progress=not args.no_progress, run_log=run_log_path("synth"), force=args.force)
    c = res.counts
    print(f"synth: {c['scans']} scans ({c['flipped']} flipped), {c['annotations']} nodules, "
          f"{c['excluded']} excluded, {c['candidates']} candidates ({c['candidates_pos']} positive) "
          f"in {res.seconds:.1f} s, {res.bytes_per_scan / 1e6:.1f} MB/scan -> {res.out_dir}")
    return 0
