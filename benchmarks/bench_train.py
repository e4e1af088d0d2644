"""Training throughput (samples/s) by precision: fp32 (baseline) vs bf16 autocast (vs fp16 +
GradScaler on CUDA), same model, same data, same optimizer step as ``pipeline.train.loop``.

Models: the 2D classifier (efficientnet_lite0, planes 3x64x64, batch 64) and the 3D classifier
(medicalnet_resnet10, random init, cubes 1x48^3, batch --batch-3d). Inputs are random HU
tensors (throughput does not depend on content). All stages train (strategy ``full``).
Loader rows: the same step fed by the real training input (``pipeline.train.memstore.BatchLoader``,
augmentation on) vs the bare step on one fixed batch, for the 2D classifier and the segmenter.
Usage: python benchmarks/bench_train.py [--steps 6 --warmup 2 --device auto --threads 0 --no-report]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(encoder: str, weights: str, shape: tuple, batch: int, precision: str, device, steps: int,
            warmup: int) -> float:
    import torch
    import torch.nn.functional as F

    from pipeline.models.classifier import ModelConfig, build_classifier
    from pipeline.models.transfer import TransferConfig, apply_strategy, set_train_mode
    from pipeline.train.loop import autocast, resolve_precision

    torch.manual_seed(0)
    model = build_classifier(ModelConfig(encoder=encoder, weights=weights)).to(device)
    strategy = "full" if weights == "pretrained" else "scratch"
    opt = torch.optim.AdamW(apply_strategy(model, strategy, TransferConfig(lr=1e-4), 0), weight_decay=1e-4)
    set_train_mode(model, True)
    amp = resolve_precision(precision, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    x = (torch.rand(batch, *shape) * 1400 - 1000).to(device)
    y = (torch.rand(batch) < 0.5).float().to(device)

    def step():
        with autocast(device, amp):
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def random_store(root: Path, n: int = 512, plane: int = 64, cube: int = 48, seed: int = 0) -> Path:
    """A PatchStore of ``n`` random HU samples (30% positives, each with a nodule annotation at the
    cube centre): planes 3 x plane^2, cubes cube^3, one shard. Content does not matter for speed."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    lab = (rng.random(n) < 0.3).astype(int)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "planes_000.npy", rng.integers(-1000, 400, (n, 3, plane, plane), dtype=np.int16))
    np.save(root / "cubes_000.npy", rng.integers(-1000, 400, (n, cube, cube, cube), dtype=np.int16))
    vox = 100 * np.arange(n) + 50
    pd.DataFrame({"sample": np.arange(n), "seriesuid": [f"s{i % 8}" for i in range(n)], "label": lab,
                  "subset": 2, "split": "train", "shard": 0, "offset": np.arange(n), "shifted": False,
                  "vox_z": vox, "vox_y": 50, "vox_x": 50}).to_csv(root / "index.csv", index=False)
    pos = np.flatnonzero(lab)
    r = rng.uniform(2, 6, len(pos))
    pd.DataFrame({"seriesuid": [f"s{i % 8}" for i in pos], "kind": "nodule", "z": vox[pos], "y": 50, "x": 50,
                  "rz": r, "ry": r, "rx": r, "diameter_mm": 2 * r}).to_csv(root / "nodules.csv", index=False)
    return root


def measure_loader(task: str, store_root: Path, batch: int, device, steps: int, warmup: int) -> tuple[float, float]:
    """(samples/s of the training step fed by the real training loader (BatchLoader, augmentation on),
    samples/s of the bare step on one fixed batch), same model, same device, same run.
    ``task``: 'classifier' (efficientnet_lite0 2D planes) or 'segmenter' (FlexibleUNet, cubes cropped to 32)."""
    import itertools

    import torch
    import torch.nn.functional as F

    from pipeline.models.transfer import TransferConfig, apply_strategy, set_train_mode
    from pipeline.patches.dataset import PatchStore
    from pipeline.runtime import autocast, resolve_precision
    from pipeline.train.data import EpochSampler, PatchDataset
    from pipeline.train.memstore import BatchLoader

    torch.manual_seed(0)
    store = PatchStore(store_root)
    rows = store.index["sample"].to_numpy()
    if task == "classifier":
        from pipeline.models.classifier import ModelConfig, build_classifier

        model, strategy = build_classifier(ModelConfig(encoder="efficientnet_lite0", weights="pretrained")), "full"
        ds = PatchDataset(store, rows, "2d")

        def loss_fn(logits, b):
            return F.binary_cross_entropy_with_logits(logits.float(), b["y"])
    else:
        from pipeline.models.segmenter import build_segmenter
        from pipeline.train.config import SegTrainConfig
        from pipeline.train.segment import segmenter_task

        cfg = SegTrainConfig(crop=32)
        model, strategy = build_segmenter(cfg.model()), "scratch"
        ds = PatchDataset(store, rows, "3d", crop=32, masks=True)
        loss_fn = segmenter_task(cfg).loss
    model = model.to(device)
    opt = torch.optim.AdamW(apply_strategy(model, strategy, TransferConfig(lr=1e-4), 0), weight_decay=1e-4)
    set_train_mode(model, True)
    amp = resolve_precision("fp32", device)
    sampler = EpochSampler(ds.labels, balanced=True, seed=0)
    loader = BatchLoader(ds, sampler, batch, device, augment=True, seed=0)

    def step(b):
        with autocast(device, amp):
            logits = model(b["x"])
        loss = loss_fn(logits.float(), b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def batches():
        for epoch in itertools.count():
            sampler.set_epoch(epoch)
            yield from loader

    def timed(source) -> float:
        for _ in range(warmup):
            step(next(source))
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, n = time.perf_counter(), 0
        for _ in range(steps):
            b = next(source)
            step(b)
            n += len(b["y"])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t0)

    real = timed(batches())
    fixed = next(batches())
    bare = timed(itertools.repeat(fixed))
    return real, bare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-3d", type=int, default=8)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--batch-loader-2d", type=int, default=64, help="batch of the loader rows, classifier")
    ap.add_argument("--batch-seg", type=int, default=4, help="batch of the loader rows, segmenter")
    ap.add_argument("--store-samples", type=int, default=512, help="samples of the random store of the loader rows")
    ap.add_argument("--skip-precision", action="store_true", help="only the loader rows")
    ap.add_argument("--no-report", action="store_true", help="print only, do not update docs/benchmarks.md")
    args = ap.parse_args()
    import torch

    from pipeline.train.loop import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    cases = [("efficientnet_lite0 2D", "efficientnet_lite0", "pretrained", (3, 64, 64), 64),
             ("medicalnet_resnet10 3D", "medicalnet_resnet10", "none", (1, 48, 48, 48), args.batch_3d)]
    rows = []
    for label, enc, weights, shape, batch in ([] if args.skip_precision else cases):
        base = None
        for prec in precisions:
            sps = measure(enc, weights, shape, batch, prec, device, args.steps, args.warmup)
            base = base or sps
            rows.append(f"| {label} | {'x'.join(map(str, shape))} | {batch} | {prec} | {sps:.1f} | {sps / base:.2f}x |")
            print(rows[-1], flush=True)
    import tempfile

    loader_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = random_store(Path(tmp) / "patches", n=args.store_samples)
        for label, task, batch in (("efficientnet_lite0 2D classifier, planes 3x64x64", "classifier", args.batch_loader_2d),
                                   ("segmenter (FlexibleUNet, resnet10), cubes 32^3 + masks", "segmenter", args.batch_seg)):
            real, bare = measure_loader(task, root, batch, device, args.steps, args.warmup)
            loader_rows.append(f"| {label} | {batch} | {real:.1f} | {bare:.1f} | {100 * real / bare:.0f}% |")
            print(loader_rows[-1], flush=True)
    md = "\n".join([
        "## Training throughput by precision (bench_train.py)", "",
        (f"One AdamW training step (forward, BCE, backward, step; all stages trainable) on random HU inputs, "
        f"{args.steps} timed steps after {args.warmup} warm-up steps, device **{device.type}**, "
        f"{torch.get_num_threads()} torch threads. Baseline = fp32; ratio = samples/s over fp32."), "",
        "| model | input | batch | precision | samples / s | vs fp32 |", "|---|---|---|---|---|---|", *rows, "",
        ("`precision: auto` is fp32 on CPU (bf16 speed on CPU depends on AVX512-BF16/AMX support and it changes "
        "numerics; set `precision: bf16` to use it) and bf16 on CUDA (fp16 + GradScaler where bf16 is unsupported)."),
        "", "### Real training input vs the bare step (same device, same run)", "",
        (f"fp32 training step fed by the training loader (`BatchLoader`: the split in one int16 tensor, "
         f"balanced sampling, batched augmentation on the device) vs the same step repeated on one fixed batch; "
         f"random store of {args.store_samples} samples, {args.steps} timed steps after {args.warmup} warm-up steps, "
         f"device **{device.type}**."), "",
        "| model | batch | loader + step samples/s | bare step samples/s | loader+step / bare |", "|---|---|---|---|---|",
        *loader_rows,
    ])
    print(md)
    if not args.no_report:
        from benchmarks._report import update_section

        update_section("train", md)


if __name__ == "__main__":
    main()
