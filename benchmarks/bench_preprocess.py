"""Seconds per full-size scan: our preprocessing vs the naive baseline, and peak RSS.

Scan: 512 x 512 x 300 voxels at 0.7 x 0.7 x 1.25 mm (pipeline.synth.make_scan when available,
else a phantom). Ours = preprocess_scan (window, SimpleITK linear resampling to 1 mm, lung
mask); also timed alone: our resampling step. Baseline = whole-volume
``scipy.ndimage.zoom(order=1)`` to 1 mm (resampling only, no mask). Each variant runs in a
fresh worker process so ``ru_maxrss`` is that worker's peak RSS.
Usage: python benchmarks/bench_preprocess.py [--repeats 1]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
SHAPE, SPACING = (300, 512, 512), (0.7, 0.7, 1.25)


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


def peak_rss_mb() -> float:
    """VmHWM (ru_maxrss survives exec, so a spawned worker would report its parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(kind: str, path: str, q) -> None:
    from pipeline.io.scans import read_scan
    from pipeline.preprocess import PreprocessConfig, preprocess_scan
    from pipeline.preprocess.intensity import window_hu
    from pipeline.preprocess.resample import resample, target_geometry

    scan = read_scan(path)
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    if kind == "ours":
        out = preprocess_scan(scan, PreprocessConfig()).array_zyx
    elif kind == "ours_resample_only":
        g = scan.geometry
        out = resample(window_hu(scan.array_zyx, (-1000, 400)), g, target_geometry(g, (1, 1, 1)),
                       fill_value=-1000)
    else:
        from scipy import ndimage as ndi

        zoom = np.asarray(scan.geometry.spacing_zyx_mm) / 1.0
        out = ndi.zoom(scan.array_zyx.astype(np.float32), zoom, order=1)
    sec = time.perf_counter() - t0
    q.put((kind, sec, peak_rss_mb(), rss0, out.shape))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "1.2.3.999.mhd"
        source = make_volume(path)
        res: dict[str, list] = {}
        for _ in range(args.repeats):
            for kind in ("ours", "ours_resample_only", "naive_zoom"):
                q = ctx.Queue()
                p = ctx.Process(target=worker, args=(kind, str(path), q))
                p.start()
                r = q.get()
                p.join()
                res.setdefault(kind, []).append(r)
                print(r, flush=True)
    best = {k: min(v, key=lambda r: r[1]) for k, v in res.items()}
    lines = [
        "## Preprocessing (bench_preprocess.py)", "",
        f"One scan {SHAPE[2]}x{SHAPE[1]}x{SHAPE[0]} (x,y,z) voxels at {SPACING} mm from {source} -> 1 mm; "
        f"best of {args.repeats}; each variant in a fresh process (peak RSS = that worker, includes the "
        "input scan read before timing).", "",
        "| variant | seconds / scan | peak RSS MB (after reading the scan) | output shape (z,y,x) |",
        "|---|---|---|---|",
    ]
    names = {"ours": "ours: window + SimpleITK resample + lung mask",
             "ours_resample_only": "ours: window + SimpleITK resample only",
             "naive_zoom": "baseline: scipy.ndimage.zoom order 1 (resample only)"}
    for k, (kind, sec, rss, rss0, shape) in best.items():
        lines.append(f"| {names[k]} | {sec:.2f} | {rss:.0f} ({rss0:.0f}) | {shape} |")
    r1 = best["naive_zoom"][1] / best["ours_resample_only"][1]
    r2 = best["naive_zoom"][1] / best["ours"][1]
    lines += ["", f"Resampling speed-up vs naive zoom: **{r1:.1f}x**; full preprocessing (incl. lung mask) "
              f"vs naive zoom alone: **{r2:.2f}x**."]
    md = "\n".join(lines)
    print(md)
    from benchmarks._report import update_section

    update_section("bench_preprocess", md)


if __name__ == "__main__":
    main()
