"""Training throughput (samples/s) by precision: fp32 (baseline) vs bf16 autocast (vs fp16 +
GradScaler on CUDA), same model, same data, same optimizer step as ``pipeline.train.loop``.

Models: the 2D classifier (efficientnet_lite0, planes 3x64x64, batch 64) and the 3D classifier
(medicalnet_resnet10, random init, cubes 1x48^3, batch --batch-3d). Inputs are random HU
tensors (throughput does not depend on content). All stages train (strategy ``full``).
Usage: python benchmarks/bench_train.py [--steps 6 --warmup 2 --device auto --threads 0]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-3d", type=int, default=8)
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
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
    for label, enc, weights, shape, batch in cases:
        base = None
        for prec in precisions:
            sps = measure(enc, weights, shape, batch, prec, device, args.steps, args.warmup)
            base = base or sps
            rows.append(f"| {label} | {'x'.join(map(str, shape))} | {batch} | {prec} | {sps:.1f} | {sps / base:.2f}x |")
            print(rows[-1], flush=True)
    md = "\n".join([
        "## Training throughput by precision (bench_train.py)", "",
        (f"One AdamW training step (forward, BCE, backward, step; all stages trainable) on random HU inputs, "
        f"{args.steps} timed steps after {args.warmup} warm-up steps, device **{device.type}**, "
        f"{torch.get_num_threads()} torch threads. Baseline = fp32; ratio = samples/s over fp32."), "",
        "| model | input | batch | precision | samples / s | vs fp32 |", "|---|---|---|---|---|---|", *rows, "",
        ("`precision: auto` is fp32 on CPU (bf16 speed on CPU depends on AVX512-BF16/AMX support and it changes "
        "numerics; set `precision: bf16` to use it) and bf16 on CUDA (fp16 + GradScaler where bf16 is unsupported)."),
    ])
    print(md)
    if not args.no_report:
        from benchmarks._report import update_section

        update_section("train", md)


if __name__ == "__main__":
    main()
