"""``python -m pipeline train`` (classifier or segmenter) and ``python -m pipeline predict``."""
from __future__ import annotations

import argparse
import json
import os

from pipeline.cliutil import (
    add_force_arg,
    add_params_arg,
    check_input_dir,
    check_input_file,
    check_output_dir,
    params_section,
)


def _subsets(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected comma-separated subset numbers, e.g. 0,1") from None


def _check_patches(path: str) -> None:
    """--patches: the patches stage's folder with its index.csv (checked before anything is written)."""
    d = check_input_dir(path, "--patches", "patches folder (output of the patches stage)")
    check_input_file(d / "index.csv", "--patches", "patch index (run the patches stage)")


MODEL_SIGNATURES = ("config.json", "last.pt")  # a model folder written before output markers existed
OVERRIDES = ("epochs", "batch_size", "lr", "strategy", "encoder", "weights", "precision", "device",
             "imbalance", "seed", "num_workers", "test_subsets", "val_subsets", "max_train_samples")


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.config import from_dict
    from pipeline.train.config import SegTrainConfig, TrainConfig

    seg = args.task == "segmenter"
    _check_patches(args.patches)
    out = args.out or ("models/segmenter" if seg else "models/classifier")
    check_output_dir(out, "--out", stage="train", force=args.force, signatures=MODEL_SIGNATURES)
    if args.live:
        check_output_dir(args.live, "--live")
    section = "train_seg" if seg else "train"
    values = params_section(args, section)
    for key in OVERRIDES:
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    cfg = from_dict(SegTrainConfig if seg else TrainConfig, values, section)
    live = args.live or f"dvclive/{'segmenter' if seg else 'classifier'}"
    pre = args.preprocessed if args.preprocessed and Path(args.preprocessed).is_dir() else None
    from pipeline.outdir import claim_output_dir
    from pipeline.runlog import run_log_path

    claim_output_dir(out, "train", force=args.force, signatures=MODEL_SIGNATURES)
    kw = {"preprocessed_dir": pre, "live_dir": live, "resume": args.resume, "progress": not args.quiet,
          "run_log": run_log_path(f"train-{Path(out).name}")}
    if seg:
        from pipeline.train.segment import train_segmenter

        res = train_segmenter(args.patches, out, cfg, **kw)
    else:
        from pipeline.train.stage import train_classifier

        res = train_classifier(args.patches, out, cfg, **kw)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(json.dumps(res.metrics, indent=2))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from pipeline.train.predict import predict

    model = check_input_dir(args.model, "--model", "model folder (output of train)")
    check_input_file(model / "config.json", "--model", "model config (run the train stage)")
    _check_patches(args.patches)
    if args.luna is not None:
        check_input_dir(args.luna, "--luna", "LUNA16 root folder")
    check_output_dir(args.out)
    res = predict(args.model, args.patches, args.out, split=args.split, subsets=args.subsets,
                  luna_root=args.luna, device=args.device, batch_size=args.batch_size)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(json.dumps({"candidates": res.n_candidates, "scans": res.n_scans, "subsets": res.subsets,
                          "seconds": round(res.seconds, 2)}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the nodule classifier (or --task segmenter) on data/patches",
                       description="Train on a PatchStore; writes model.pt, last.pt, config.json, provenance.json, "
                       "metrics.json to --out and per-epoch DVCLive metrics to dvclive/<task>. Reads the params "
                       "section train: (classifier) or train_seg: (segmenter); flags override it.")
    p.add_argument("--patches", default="data/patches", help="patches folder (index.csv + shards)")
    p.add_argument("--out", default=None, help="model folder (default models/classifier | models/segmenter)")
    p.add_argument("--task", choices=("classifier", "segmenter"), default="classifier")
    p.add_argument("--preprocessed", default="data/preprocessed",
                   help="preprocess output (its summary.json params go into config.json)")
    p.add_argument("--live", default=None, help="DVCLive folder (default dvclive/<task>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--quiet", action="store_true")
    for key, typ in (("epochs", int), ("batch_size", int), ("lr", float), ("seed", int), ("num_workers", int),
                     ("max_train_samples", int)):
        p.add_argument(f"--{key.replace('_', '-')}", dest=key, type=typ, default=None, help=f"override {key}")
    for key in ("strategy", "encoder", "weights", "precision", "device", "imbalance"):
        p.add_argument(f"--{key}", dest=key, default=None, help=f"override {key}")
    p.add_argument("--test-subsets", dest="test_subsets", type=_subsets, default=None,
                   help="LUNA16 subsets held out as test (e.g. 0); overrides the index split")
    p.add_argument("--val-subsets", dest="val_subsets", type=_subsets, default=None,
                   help="LUNA16 subsets used for validation (e.g. 1)")
    add_params_arg(p)
    add_force_arg(p)
    p.set_defaults(func=_train)

    q = sub.add_parser("predict", help="score the candidates of a split with a trained classifier",
                       description="Writes predictions.csv (LUNA16 submission), scored.csv and seriesuids.csv.")
    q.add_argument("--model", default="models/classifier", help="model folder from train")
    q.add_argument("--patches", default="data/patches")
    q.add_argument("--out", default="data/predict/fpr")
    q.add_argument("--split", default="test", choices=("train", "val", "test"))
    q.add_argument("--subsets", type=_subsets, default=None, help="score these LUNA16 subsets instead of --split")
    q.add_argument("--luna", default=None, help="LUNA16 root: seriesuids.csv lists ALL its scans of the subsets")
    q.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    q.add_argument("--batch-size", dest="batch_size", type=int, default=128)
    q.set_defaults(func=_predict)
