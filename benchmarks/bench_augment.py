"""Training input pipeline, augmentation on: samples/s per CPU core, the per-sample MONAI path
(old, ``PatchDataset.__getitem__``, as through a DataLoader) vs the batched path (new,
``pipeline.train.memstore.BatchLoader``), measured in the same run.

  old: one Python call per sample: MONAI flips / rot90 / RandAffined / noise / shift, one shared
       ``RandomState`` re-seeded per sample, meta tracking off.
  new: the split held in one int16 tensor, batches gathered by the EpochSampler's order, flips and
       rot90 as one gather, the affine (30%) through ``grid_sample``, noise / shift as tensor ops
       (``pipeline.train.batchaug``), one generator per (seed, epoch, batch).
Data: a synthetic patch store (2D planes 3x64x64 for the classifier; 3D cubes cropped to 32^3
with nodule masks for the segmenter), built in a temp folder from the project's synth +
preprocess + patches stages. One torch / BLAS thread (per core). Samples from memory.
Usage: python benchmarks/bench_augment.py [--samples 400 --batched-samples 4096 --repeats 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _store(root: Path):
    from pipeline.patches.config import PatchesConfig
    from pipeline.patches.dataset import PatchStore
    from pipeline.patches.stage import run as patches
    from pipeline.preprocess.stage import run as preprocess
    from pipeline.synth import SynthConfig, generate

    generate(root / "luna", SynthConfig(scans=6, subsets=2, fov_mm=(120.0, 120.0, 60.0), nodules_per_scan=(3, 5)),
             progress=False)
    preprocess(root / "luna", root / "pre", workers=1, progress=False)
    patches(root / "luna", root / "pre", root / "patches", PatchesConfig(workers=1), progress=False)
    return PatchStore(root / "patches")


def _rate(fn, n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t)


def _batched_rate(ds, batch: int, n: int) -> float:
    """Samples/s of the batched loader (augmentation on) over ``n`` samples (after one warm-up batch)."""
    import torch

    from pipeline.train.data import EpochSampler
    from pipeline.train.memstore import BatchLoader

    sampler = EpochSampler(ds.labels, balanced=True, seed=0)
    dl = BatchLoader(ds, sampler, batch, torch.device("cpu"), augment=True, seed=0)
    next(iter(dl))
    done, t = 0, time.perf_counter()
    while done < n:
        sampler.set_epoch(sampler.epoch + 1)
        for b in dl:
            done += len(b["y"])
            if done >= n:
                break
    return done / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=400, help="samples per measurement of the old path")
    ap.add_argument("--batched-samples", type=int, default=4096, help="samples per measurement of the new path")
    ap.add_argument("--batch-2d", type=int, default=256)
    ap.add_argument("--batch-3d", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-report", action="store_true", help="print only, do not update docs/benchmarks.md")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from _report import update_section

    from pipeline.train.data import PatchDataset, build_augment

    rows_md = []
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(Path(tmp))
        n = min(args.samples, len(store.index))
        pos = np.flatnonzero(store.index["label"].to_numpy() == 1)
        cases = [("2D planes 3x64x64 (classifier)", args.batch_2d,
                  {"rows": np.arange(len(store.index)), "kind": "2d", "with_mask": False, "crop": None}),
                 ("3D cubes 32^3 + masks (segmenter)", args.batch_3d,
                  {"rows": np.resize(pos, max(n, 64)), "kind": "3d",
                   "with_mask": True, "crop": 32})]
        for name, batch, c in cases:
            best = {"old": 0.0, "new": 0.0}
            ratios = []
            for _ in range(args.repeats):
                ds_o = PatchDataset(store, c["rows"], c["kind"], augment=build_augment(c["kind"], with_mask=c["with_mask"]),
                                    crop=c["crop"], masks=c["with_mask"])
                ds_o[0]  # warm-up
                ro = _rate(ds_o.__getitem__, min(n, len(ds_o)))
                ds_n = PatchDataset(store, c["rows"], c["kind"], crop=c["crop"], masks=c["with_mask"])
                rn = _batched_rate(ds_n, batch, args.batched_samples)
                best["old"], best["new"] = max(best["old"], ro), max(best["new"], rn)
                ratios.append(rn / ro)
            rows_md.append(f"| {name} | {batch} | {best['old']:.0f} | {best['new']:.0f} | {best['new'] / best['old']:.1f}x "
                           f"| {', '.join(f'{r:.1f}x' for r in ratios)} |")
            print(rows_md[-1], flush=True)
    md = ("## Training input pipeline, augmentation on (bench_augment.py)\n\n"
          "Samples/s with augmentation (flips, rot90, affine on 30%, noise, intensity shift), one thread, "
          "samples from memory: the per-sample MONAI path (old: `PatchDataset.__getitem__`, one shared "
          "`RandomState` re-seeded per sample, tracking off) vs the batched path (new: `BatchLoader`, the "
          "split in one int16 tensor, flips+rot90 as one gather, affine through `grid_sample`, noise/shift as "
          f"tensor ops), same run, best of {args.repeats}; {args.samples} (old) / {args.batched_samples} (new) "
          "samples per measurement. Target of the GPU input-pipeline issue: at least 5,000 2D / 400 3D "
          "samples/s per core.\n\n"
          "| input | batch (new) | old samples/s | new samples/s | new / old | per run |\n|---|---|---|---|---|---|\n"
          + "\n".join(rows_md))
    print(md if args.no_report else update_section("bench_augment", md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
