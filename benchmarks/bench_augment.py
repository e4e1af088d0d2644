"""Training input pipeline, augmentation on: samples/s of ``PatchDataset.__getitem__`` per CPU core,
the per-sample MONAI path before (baseline) vs now, measured in the same run.

  before: ``Compose.set_random_state(seed=...)`` per sample (each call builds a new
          ``RandomState`` for every random transform) and MONAI meta tracking on (MetaTensor).
  now:    one ``RandomState`` shared by every transform, re-seeded per sample; meta tracking off
          inside the transform (``pipeline.train.data._untracked``). Same transforms, same
          per-(seed, epoch, sample) determinism.
Data: a synthetic patch store (2D planes 3x64x64 for the classifier; 3D cubes cropped to 32^3
with nodule masks for the segmenter), built in a temp folder from the project's synth +
preprocess + patches stages. One torch / BLAS thread (per core). Samples are read from memory
(the store is preloaded, as in training).
Usage: python benchmarks/bench_augment.py [--samples 400 --repeats 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _Before:
    """The per-sample augmentation path as it was before (for the baseline)."""

    def __init__(self, ds):
        self.ds = ds

    def __call__(self, i: int) -> dict:
        import torch

        from pipeline.train.data import _mix

        ds = self.ds
        x = ds._array(i)
        x = x[None] if ds.kind == "3d" else x
        item = {"x": x}
        if ds.masks:
            mask, ignore = ds.targets(i, x.shape[-1])
            item["mask"], item["ignore"] = mask[None].astype(np.float32), ignore[None].astype(np.float32)
        ds.augment.set_random_state(seed=_mix(ds.seed, ds.epoch, int(ds.rows[i])))
        item = ds.augment(item)
        out = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32).contiguous() for k, v in item.items()}
        out["y"] = torch.tensor(ds.labels[i], dtype=torch.float32)
        return out


def _store(root: Path):
    from pipeline.patches.dataset import PatchStore
    from pipeline.patches.config import PatchesConfig
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
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
        cases = [("2D planes 3x64x64 (classifier)", dict(rows=np.arange(n), kind="2d", with_mask=False, crop=None)),
                 ("3D cubes 32^3 + masks (segmenter)",
                  dict(rows=np.resize(pos, n), kind="3d", with_mask=True, crop=32))]
        for name, c in cases:
            best = {"before": 0.0, "now": 0.0}
            ratios = []
            for _ in range(args.repeats):
                ds_b = PatchDataset(store, c["rows"], c["kind"], augment=build_augment(c["kind"], with_mask=c["with_mask"]),
                                    crop=c["crop"], masks=c["with_mask"])
                ds_n = PatchDataset(store, c["rows"], c["kind"], augment=build_augment(c["kind"], with_mask=c["with_mask"]),
                                    crop=c["crop"], masks=c["with_mask"])
                before, now = _Before(ds_b), ds_n.__getitem__
                before(0), now(0)  # warm-up
                rb, rn = _rate(before, len(c["rows"])), _rate(now, len(c["rows"]))
                best["before"], best["now"] = max(best["before"], rb), max(best["now"], rn)
                ratios.append(rn / rb)
            # same augmentation semantics: the new path is deterministic per (seed, epoch, sample)
            a, b = ds_n[1]["x"], ds_n[1]["x"]
            assert torch.equal(a, b)
            rows_md.append(f"| {name} | {best['before']:.0f} | {best['now']:.0f} | {best['now'] / best['before']:.1f}x "
                           f"| {', '.join(f'{r:.1f}x' for r in ratios)} |")
            print(rows_md[-1], flush=True)
    md = ("## Training input pipeline, augmentation on (bench_augment.py)\n\n"
          "`PatchDataset.__getitem__` with augmentation (flips, rot90, affine on 30%, noise, intensity "
          "shift), one thread, samples from memory: the per-sample MONAI path before "
          "(`Compose.set_random_state(seed)` per sample, MetaTensor tracking on) vs now (one shared "
          f"`RandomState` re-seeded per sample, tracking off), same run, best of {args.repeats}; "
          f"{args.samples} samples per measurement.\n\n"
          "| input | before samples/s | now samples/s | now / before | per run |\n|---|---|---|---|---|\n"
          + "\n".join(rows_md) + "\n\nStill per sample in Python: the batched, on-device pipeline of the "
          "GPU input-pipeline issue (target at least 5,000 2D / 400 3D samples/s per core) is not built yet.")
    print(update_section("bench_augment", md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
