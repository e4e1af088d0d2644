"""``python -m pipeline explain``: saliency maps, feature space before / after transfer, filters."""
from __future__ import annotations

import argparse

from pipeline.cliutil import add_params_arg, check_input_dir, check_output_dir, params_section

HELP = """\
What the transferred classifier learned. With --patches: saliency maps (MONAI Grad-CAM++ / Grad-CAM /
occlusion sensitivity) of --n positives of --split as PNG + .npy per sample and a contact sheet, the
encoder's pooled features before (weights as loaded) and after fine-tuning embedded by PCA and t-SNE,
linear-probe AUCs (fit on the validation split, AUC on the test split) and the first convolution's
filters before / after -> --out (saliency_sheet.png, samples/, feature_space.png, filters.png,
metrics.json). With --detect DIR (a detect output folder): saliency of the top findings of each scan,
cut again from the scans -> --out. Parameters: the 'explain:' section of --params."""


def _config(args):
    from pipeline.config import from_dict
    from pipeline.explain.config import ExplainConfig

    d = params_section(args, "explain")
    for flag, key in (("split", "split"), ("n", "n_sheet"), ("device", "device")):
        if getattr(args, flag) is not None:
            d[key] = getattr(args, flag)
    if args.methods:
        d["methods"] = args.methods
    return from_dict(ExplainConfig, d, "explain")


def _run(args: argparse.Namespace) -> int:
    check_input_dir(args.model, "--model", "classifier model folder")
    check_output_dir(args.out)
    if (args.patches is None) == (args.detect is None):
        from pipeline.errors import ConfigError

        raise ConfigError("explain needs exactly one of --patches DIR or --detect DIR")
    cfg = _config(args)
    if args.detect is not None:
        from pipeline.explain.detect import explain_detect

        check_input_dir(args.detect, "--detect", "detect output folder")
        done = explain_detect(args.detect, args.model, args.out, cfg, top=args.top)
        print(f"explain: maps of {len(done)} report finding(s) -> {args.out}")
        return 0
    from pipeline.explain.stage import run_explain

    check_input_dir(args.patches, "--patches", "patch store folder")
    m = run_explain(args.model, args.patches, args.out, cfg)
    print(f"explain: saliency inside nodule {m['saliency_inside_share']:.2f} ({m['saliency_method']}; "
          f"nodule area {m['nodule_area_share']:.3f}), linear probe AUC before {m['linear_probe_auc_before']:.3f} "
          f"-> after {m['linear_probe_auc_after']:.3f} -> {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("explain", help="saliency, feature space before/after transfer -> eval/explain",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/classifier", help="classifier folder (models/classifier)")
    p.add_argument("--patches", default=None, help="patch store (data/patches)")
    p.add_argument("--detect", default=None, help="a detect output folder (explain its top findings)")
    p.add_argument("--out", default="eval/explain", help="output folder (default eval/explain)")
    p.add_argument("--split", choices=("train", "val", "test"), default=None, help="split to explain (explain.split)")
    p.add_argument("--n", type=int, default=None, help="positives on the contact sheet (explain.n_sheet)")
    p.add_argument("--methods", nargs="+", default=None, help="gradcampp | gradcam | occlusion (explain.methods)")
    p.add_argument("--top", type=int, default=5, help="--detect: findings per scan (default 5, as the report)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="explain.device")
    add_params_arg(p)
    p.set_defaults(func=_run)
