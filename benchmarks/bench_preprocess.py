"""Seconds per full-size scan: the preprocessing before the fast lung mask (old) vs now (new),
measured in the same run, per step and in total, and whether the outputs are identical.

Scan: 512 x 512 x 300 voxels (x, y, z) at 0.7 x 0.7 x 1.25 mm, int16 (pipeline.synth.make_scan
when available, else the test phantom), preprocessed to 1 mm: (z, y, x) = (375, 358, 358).
  old: window_hu (float32 copy) + SimpleITK linear resampling of the float32 volume + rint,
       then ``lungmask_reference.lung_mask_reference`` (skimage convex_hull_image per slice,
       distance_transform_edt dilation).
  new: ``preprocess_scan`` (int16 clip, SimpleITK reads int16, fast lung mask).
Each variant runs in a fresh process (SimpleITK on its default threads = the machine's cores);
the mask steps are also timed alone on the same resampled volume: connected components
(label + sizes), per-slice hull / hole filling, dilation.
Usage: python benchmarks/bench_preprocess.py [--repeats 3] [--scale 1] [--no-write]
(``--scale 0.5``: half-size scan per axis for a quick check; docs/benchmarks.md is then not updated).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
SHAPE, SPACING = (300, 512, 512), (0.7, 0.7, 1.25)
STEPS = ("window + resample", "mask: label + sizes", "mask: hull / fill", "mask: dilation", "lung mask (whole)",
         "total (window, resample, mask)", "total, next scan in the same process")


def make_volume(path: Path) -> str:
    from pipeline.io.scans import write_scan

    try:
        from pipeline.config import from_dict
        from pipeline.synth import SynthConfig, make_scan

        fov = [SHAPE[2] * SPACING[0], SHAPE[1] * SPACING[1], SHAPE[0] * SPACING[2]]
        s = make_scan("1.2.3.999", 0, from_dict(SynthConfig, {"fov_mm": fov}, "synth"),
                      shape_zyx=SHAPE, spacing_xyz_mm=SPACING)
        write_scan(s.array_zyx, s.geometry, path)
        return "pipeline.synth.make_scan"
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "preprocess"))
        from phantom_data import make_phantom

        arr, _, g = make_phantom(SHAPE, SPACING)
        write_scan(arr, g, path)
        return "tests/preprocess/phantom_data.py"


def _timed(fn, *a, **k):
    t0 = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0


def _components(array_zyx, chunked: bool):
    """Label + sizes + the kept labels, as the old (scipy label, one bincount) / new code does."""
    from scipy import ndimage as ndi

    from pipeline.preprocess.lungmask import label_6

    if chunked:  # new: SimpleITK labelling (same numbering), chunked bincount
        labels, _img, n = label_6(array_zyx < -320.0)
        labels = np.array(labels)
    else:
        labels, n = ndi.label(array_zyx < -320.0)
    if chunked:
        flat, sizes = labels.ravel(), np.zeros(n + 1, np.int64)
        for i in range(0, flat.size, 1 << 20):
            sizes += np.bincount(flat[i:i + (1 << 20)], minlength=n + 1)
    else:
        sizes = np.bincount(labels.ravel(), minlength=n + 1).astype(np.int64)
    faces = np.concatenate([labels[:, 0, :].ravel(), labels[:, -1, :].ravel(),
                            labels[:, :, 0].ravel(), labels[:, :, -1].ravel()])
    sizes[0] = 0
    sizes[np.unique(faces)] = 0
    return labels, [int(i) for i in np.argsort(sizes)[::-1][:2] if sizes[i] > 0]


def worker(kind: str, path: str, q) -> None:
    from scipy import ndimage as ndi

    from pipeline.io.scans import read_scan
    from pipeline.preprocess import PreprocessConfig, preprocess_scan
    from pipeline.preprocess.core import PreprocessedScan
    from pipeline.preprocess.fastmorph import hull_or_fill
    from pipeline.preprocess.intensity import window_hu
    from pipeline.preprocess.lungmask import dilate_mm, lung_mask
    from pipeline.preprocess.lungmask_reference import (
        _slice_fill,
        dilate_mm_reference,
        lung_mask_reference,
    )
    from pipeline.preprocess.resample import resample, target_geometry

    scan = read_scan(path)
    cfg = PreprocessConfig()
    g = scan.geometry
    target = target_geometry(g, cfg.spacing_xyz_mm)
    sp = target.spacing_zyx_mm
    t = {}
    t0 = time.perf_counter()
    if kind == "new":
        pre = preprocess_scan(scan, cfg)
        t["total (window, resample, mask)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        preprocess_scan(scan, cfg)
        t["total, next scan in the same process"] = time.perf_counter() - t0
        clip, tclip = _timed(np.clip, scan.array_zyx, -1000, 400)
        _, tres = _timed(lambda: np.rint(resample(clip, g, target, fill_value=-1000.0)).astype(np.int16))
        t["window + resample"] = tclip + tres
        mask, t["lung mask (whole)"] = _timed(lung_mask, pre.array_zyx, sp)
    else:
        w, tw = _timed(window_hu, scan.array_zyx, cfg.window_hu)
        res, tr = _timed(lambda: np.rint(resample(w, g, target, fill_value=-1000.0)).astype(np.int16))
        t["window + resample"] = tw + tr
        mask, t["lung mask (whole)"] = _timed(lung_mask_reference, res, sp)
        t["total (window, resample, mask)"] = time.perf_counter() - t0
        pre = PreprocessedScan(res, mask, target)
        t0 = time.perf_counter()
        w = window_hu(scan.array_zyx, cfg.window_hu)
        lung_mask_reference(np.rint(resample(w, g, target, fill_value=-1000.0)).astype(np.int16), sp)
        t["total, next scan in the same process"] = time.perf_counter() - t0
    (labels, keep), t["mask: label + sizes"] = _timed(_components, pre.array_zyx, kind == "new")
    comps = []
    for lab in keep:
        box = ndi.find_objects((labels == lab).view(np.uint8))[0]
        comps.append((box, labels[box] == lab))
    del labels
    t0 = time.perf_counter()
    und = np.zeros(pre.array_zyx.shape, bool)
    for box, comp in comps:
        und[box] |= (hull_or_fill(comp, cfg.lung_hull_ratio) if kind == "new"
                     else np.stack([_slice_fill(s, cfg.lung_hull_ratio) if s.any() else s for s in comp]))
    t["mask: hull / fill"] = time.perf_counter() - t0
    dil = dilate_mm if kind == "new" else dilate_mm_reference
    _, t["mask: dilation"] = _timed(dil, und, cfg.lung_dilate_mm, sp)
    q.put((kind, t, pre.array_zyx, pre.lung_zyx))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="scan size per axis relative to 512x512x300")
    ap.add_argument("--no-write", action="store_true", help="print only (docs/benchmarks.md untouched)")
    args = ap.parse_args()
    global SHAPE
    SHAPE = tuple(max(32, round(n * args.scale)) for n in SHAPE)
    ctx = mp.get_context("spawn")
    best: dict[str, dict[str, float]] = {}
    ratios, checks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "1.2.3.999.mhd"
        source = make_volume(path)
        for _ in range(args.repeats):
            outs = {}
            for kind in ("old", "new"):
                q = ctx.Queue()
                p = ctx.Process(target=worker, args=(kind, str(path), q))
                p.start()
                outs[kind] = q.get()
                p.join()
                print(kind, {k: round(v, 3) for k, v in outs[kind][1].items()}, flush=True)
            o, n = outs["old"], outs["new"]
            same_array = bool(np.array_equal(o[2], n[2]))
            diff = int((o[3] != n[3]).sum())
            inter = int((o[3].astype(bool) & n[3].astype(bool)).sum())
            dice = 2 * inter / max(1, int(o[3].sum()) + int(n[3].sum()))
            checks.append((same_array, diff, dice))
            ratios.append(o[1]["total (window, resample, mask)"] / n[1]["total (window, resample, mask)"])
            for kind, times in (("old", o[1]), ("new", n[1])):
                b = best.setdefault(kind, dict(times))
                for k, v in times.items():
                    b[k] = min(b[k], v)
    lines = [
        "## Preprocessing (bench_preprocess.py)", "",
        (f"One int16 scan {SHAPE[2]}x{SHAPE[1]}x{SHAPE[0]} (x,y,z) voxels at {SPACING} mm from {source} -> "
         f"1 mm {tuple(o[2].shape)} (z,y,x). Old = the code before the fast lung mask (float32 window copy, "
         "scipy `label`, skimage `convex_hull_image` per slice, `distance_transform_edt` dilation); new = "
         "`preprocess_scan` now. Both in the same run, each variant in a fresh process (its first scan: "
         "cold memory; then the same scan again in that process, as a preprocessing worker runs scan "
         "after scan); best of "
         f"{args.repeats} runs per row (the machine was shared with other jobs: load average "
         f"{os.getloadavg()[0]:.1f} at the end). Mask steps are also timed alone on the same resampled "
         "volume."), "",
        "| step | old s | new s | old / new |", "|---|---|---|---|",
    ]
    for k in STEPS:
        lines.append(f"| {k} | {best['old'][k]:.2f} | {best['new'][k]:.2f} | {best['old'][k] / best['new'][k]:.1f}x |")
    same = all(c[0] for c in checks)
    diffs = ", ".join(str(c[1]) for c in checks)
    lines += ["", (f"Total old / new within each run: {', '.join(f'{r:.1f}x' for r in ratios)}. "
                   f"Outputs of old vs new, every run: resampled volume identical: **{same}**; lung mask "
                   f"voxels that differ: **{diffs}** (Dice {min(c[2] for c in checks):.6f}).")]
    md = "\n".join(lines)
    print(md)
    if args.no_write or args.scale != 1.0:
        return
    from benchmarks._report import update_section

    update_section("bench_preprocess", md)


if __name__ == "__main__":
    main()
