"""End-to-end detection seconds per full-size scan, split into I/O, preprocessing, segmenter,
candidate extraction and classifier (steady state: the scan is preprocessed once, untimed, before).
Baselines for the segmenter step, in the same run on the same preprocessed volume: the path before
the fused CPU model (``segment(..., fuse=False)``: the unfused channels-last model, in a fresh
process with glibc's default malloc, i.e. without ``runtime.keep_freed_memory``), and MONAI
sliding window over the WHOLE volume with overlap 0.25 (``--whole``); ours runs the fused model
(pipeline.models.segmenter_fused) with overlap 0.25 on the lung bounding box (+16 mm) and skips
windows without lung voxels (``infer.roi_mode: auto`` on CPU; on CUDA auto runs the whole volume).

Batch (``--batch N``, default 4; 0 = off): N distinct scans (the same volume, one voxel changed per
copy, so each has its own content identity) through ``pipeline.detect.batch.run`` from the files to
findings.csv: one scan after the other (``prefetch=0``, the old path) vs reading + preprocessing
the next scans in a worker process while the models run (``prefetch=1``), in the same run;
wall time, scans per minute and whether both findings.csv are identical.

Scan: 512 x 512 x 300 voxels at 0.7 x 0.7 x 1.25 mm from pipeline.synth.make_scan, written as
.mhd and read back (I/O). Models: models/classifier + models/segmenter when present (trained),
else untrained default architectures (MedicalNet-ResNet10 FlexibleUNet, EfficientNet-Lite0);
with an untrained segmenter the classifier is timed on ``max_candidates`` lung points instead.
Usage: python benchmarks/bench_detect.py [--threads 2] [--device cpu] [--no-baseline] [--whole] [--batch 2] [--scale 1]
(``--scale 0.5``: half-size scan per axis, for a quick check).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHAPE, SPACING = (300, 512, 512), (0.7, 0.7, 1.25)


def make_volume(path: Path, copies: int = 0) -> None:
    """The benchmark scan at ``path``, plus ``copies`` distinct copies ``batch/1.2.3.<k>.mhd`` next to it."""
    from pipeline.config import from_dict
    from pipeline.io.scans import write_scan
    from pipeline.synth import SynthConfig, make_scan

    fov = [SHAPE[2] * SPACING[0], SHAPE[1] * SPACING[1], SHAPE[0] * SPACING[2]]
    s = make_scan("1.2.3.998", 0, from_dict(SynthConfig, {"fov_mm": fov}, "synth"), shape_zyx=SHAPE,
                  spacing_xyz_mm=SPACING, direction=np.eye(3))
    write_scan(s.array_zyx, s.geometry, path)
    for k in range(copies):
        a = s.array_zyx.copy()
        a[0, 0, 0] += k + 1  # a corner voxel (air): its own content identity, same work
        write_scan(a, s.geometry, path.parent / "batch" / f"1.2.3.{k}.mhd")


def bench_batch(folder: Path, mdir: Path, cfg, tmp: Path) -> tuple[str, dict]:
    """Sequential (prefetch 0) vs overlapped (prefetch 1) ``detect`` of the scans in ``folder``."""
    import pandas as pd

    from pipeline.detect.batch import run

    n = len(list(folder.glob("*.mhd")))
    rows, found = {}, {}
    for name, prefetch in (("sequential (old: read, preprocess, infer one after the other)", 0),
                           ("overlapped (new: 1 worker reads + preprocesses the next scans)", 1)):
        t = time.perf_counter()
        res = run([folder], mdir / "classifier", tmp / f"out{prefetch}", cfg, progress=False, prefetch=prefetch)
        wall = time.perf_counter() - t
        found[prefetch] = pd.read_csv(tmp / f"out{prefetch}" / "findings.csv")
        rows[name] = (wall, 60.0 * n / wall, res.n_ok)
        print(f"batch {name}: {wall:.1f} s, {60.0 * n / wall:.2f} scans/min, {res.n_ok}/{n} ok", flush=True)
    same = found[0].equals(found[1])
    (_, r0, _), (_, r1, _) = rows.values()
    md = (f"\nBatch of {n} distinct scans, files -> findings.csv (`pipeline.detect.batch.run`, same run):\n\n"
          "| batch path | wall s | scans/min | ok |\n|---|---|---|---|\n" +
          "".join(f"| {k} | {w:.1f} | {r:.2f} | {ok}/{n} |\n" for k, (w, r, ok) in rows.items()) +
          f"\nOverlapped / sequential throughput: **{r1 / r0:.2f}x**; findings.csv identical: **{same}**.\n")
    return md, {"same": same, "ratio": r1 / r0}


def _old_segmenter(npz: str, seg_dir: str, threads: int, out: str, q) -> None:
    """Child process (spawned: glibc's default malloc settings): the segmenter step as before the
    fused CPU model, timed; its probability map saved to ``out``."""
    import torch

    torch.set_num_threads(threads)
    from pipeline.detect.config import DetectConfig
    from pipeline.detect.segment import segment
    from pipeline.runtime import load_model

    cfg = DetectConfig()
    seg, _ = load_model(seg_dir)
    d = np.load(npz)
    with torch.inference_mode():  # warm-up, as for ours
        seg(torch.full((cfg.sw_batch_size, 1, *cfg.roi_size), -1000.0))
    t = time.perf_counter()
    prob = segment(d["array"], seg, cfg.roi_size, cfg.sw_batch_size, cfg.overlap, torch.device("cpu"), None,
                   -1000.0, d["lung"], fuse=False)
    q.put(time.perf_counter() - t)
    np.save(out, prob)


def old_segmenter(array, lung, seg_dir: Path, threads: int, tmp: Path) -> tuple[float, np.ndarray]:
    """(seconds, probability map) of :func:`_old_segmenter` in a fresh process."""
    import multiprocessing as mp

    np.savez(tmp / "box.npz", array=array, lung=lung)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_old_segmenter, args=(str(tmp / "box.npz"), str(seg_dir), threads, str(tmp / "old.npy"), q))
    p.start()
    sec = q.get()
    p.join()
    return sec, np.load(tmp / "old.npy")


def model_dirs(tmp: Path) -> tuple[Path, str]:
    """(folder holding classifier/ + segmenter/, description)."""
    if (ROOT / "models" / "segmenter" / "model.pt").is_file() and (ROOT / "models" / "classifier" / "model.pt").is_file():
        return ROOT / "models", "trained (models/)"
    import torch

    from pipeline.config import to_dict
    from pipeline.models.classifier import ModelConfig, build_classifier
    from pipeline.models.segmenter import SegmenterConfig, build_segmenter
    from pipeline.patches.config import PatchesConfig
    from pipeline.preprocess import PreprocessConfig

    ctx = {"preprocess": {"params": PreprocessConfig().output_params()}, "patches": to_dict(PatchesConfig())}
    for name, model, cfg in (("segmenter", build_segmenter(SegmenterConfig()), SegmenterConfig()),
                             ("classifier", build_classifier(ModelConfig(weights="none")), ModelConfig(weights="none"))):
        d = tmp / "models" / name
        d.mkdir(parents=True)
        torch.save(model.state_dict(), d / "model.pt")
        (d / "config.json").write_text(json.dumps({"task": name, "kind": model.kind, "model": to_dict(cfg), **ctx}), encoding="utf-8")
    return tmp / "models", "untrained (random init)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--whole", action="store_true", help="also time the segmenter over the whole volume")
    ap.add_argument("--batch", type=int, default=2, help="scans in the batch benchmark (0: skip it)")
    ap.add_argument("--scale", type=float, default=1.0, help="scan size per axis relative to 512x512x300")
    ap.add_argument("--no-write", action="store_true", help="print only (docs/benchmarks.md untouched; "
                    "implied by --scale other than 1)")
    args = ap.parse_args()
    global SHAPE
    SHAPE = tuple(max(32, round(n * args.scale)) for n in SHAPE)
    import torch

    torch.set_num_threads(args.threads)
    from pipeline.detect.config import DetectConfig
    from pipeline.detect.job import load_models
    from pipeline.detect.scan import amp_dtype_for, detect_scan, preprocess_config, segment
    from pipeline.detect.score import classify, cut_patches, patch_params
    from pipeline.io.scans import read_scan
    from pipeline.preprocess import preprocess_scan

    cfg = DetectConfig(device=args.device)
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        t = time.perf_counter()
        make_volume(tmp / "scan.mhd", copies=max(0, args.batch))
        print(f"generated scan in {time.perf_counter() - t:.1f} s", flush=True)
        mdir, mdesc = model_dirs(tmp)
        seg, seg_cfg, cls, cls_cfg, dev = load_models(str(mdir / "classifier"), str(mdir / "segmenter"), args.device)
        with torch.inference_mode():  # warm-up (oneDNN kernels for the window shape), not timed
            warm = torch.full((cfg.sw_batch_size, 1, *cfg.roi_size), -1000.0)
            seg(warm)
            segment(warm[0, 0].numpy(), seg, cfg, dev, amp_dtype_for(cfg.precision, dev))
        preprocess_scan(read_scan(tmp / "scan.mhd"), preprocess_config(seg_cfg))  # warm-up, not timed
        t = time.perf_counter()
        scan = read_scan(tmp / "scan.mhd")
        t_io = time.perf_counter() - t
        res = detect_scan(scan, seg, seg_cfg, cls, cls_cfg, cfg, dev, keep_maps=True)
        sec = {"io": t_io, **res.seconds}
        print(json.dumps({k: round(v, 2) for k, v in sec.items()}), f"{res.n_candidates} candidates", flush=True)
        array, lung, geom = preprocess_scan(scan, preprocess_config(seg_cfg))
        note = ""
        if res.n_candidates < cfg.max_candidates:  # untrained segmenter: time the classifier on lung points
            rng = np.random.default_rng(0)
            pts = np.argwhere(lung[::4, ::4, ::4])[:, :] * 4
            pts = pts[rng.choice(len(pts), cfg.max_candidates, replace=False)]
            t = time.perf_counter()
            patches = cut_patches(array, geom, pts, cls.kind, patch_params(cls_cfg))
            classify(cls, patches, batch_size=cfg.batch_size, device=dev, amp_dtype=amp_dtype_for(cfg.precision, dev))
            sec["classifier"] = time.perf_counter() - t
            note = (f" The segmenter gave {res.n_candidates} candidates (fewer than max_candidates), so the classifier "
                    f"row is {cfg.max_candidates} candidates cut at random lung points and scored.")
        base, agree = {}, ""
        if not args.no_baseline:
            from pipeline.detect.scan import lung_box

            box = lung_box(lung, geom, cfg.lung_margin_mm)
            base["before"], prob_old = old_segmenter(array[box], lung[box], mdir / "segmenter", args.threads, tmp)
            prob_new = res.prob_zyx[box]
            inside = lung[box].astype(bool)
            agree = (f" Probability maps of ours vs before on the lung mask: max |difference| "
                     f"{float(np.abs(prob_new - prob_old)[inside].max()):.1e}, voxels on different sides of "
                     f"seg_threshold {cfg.seg_threshold}: {int(((prob_new > cfg.seg_threshold) != (prob_old > cfg.seg_threshold))[inside].sum())}.")
            print(f"before: unfused segmenter, default malloc (fresh process): {base['before']:.1f} s.{agree}", flush=True)
            if args.whole:
                t = time.perf_counter()
                segment(array, seg, DetectConfig(overlap=0.25), dev, amp_dtype_for(cfg.precision, dev))
                base["whole"] = time.perf_counter() - t
                print(f"baseline segmenter (whole volume, overlap 0.25): {base['whole']:.1f} s", flush=True)
        batch_md = ""
        if args.batch > 0:
            batch_md, _ = bench_batch(tmp / "batch", mdir, cfg, tmp)
    total = sum(sec.values())
    rows = "\n".join(f"| {k} | {v:.2f} |" for k, v in sec.items())
    md = (f"## Whole-scan detection (bench_detect.py)\n\nOne scan {SHAPE[2]}x{SHAPE[1]}x{SHAPE[0]} (x,y,z) at "
          f"{SPACING} mm (pipeline.synth.make_scan, written as .mhd just before: I/O is a warm-page-cache read) -> preprocessed {tuple(geom.shape_zyx)} (z,y,x) at 1 mm; "
          f"models {mdesc}; device {dev}, {args.threads} torch threads; sliding window roi "
          f"{cfg.roi_size}, sw_batch_size {cfg.sw_batch_size}, gaussian.{note}\n\n"
          f"| step | seconds |\n|---|---|\n{rows}\n| **total per scan** | **{total:.2f}** |\n")
    if base:
        seg_t = sec["segmenter"]
        md += ("\n| segmenter variant | seconds | ours is faster by |\n|---|---|---|\n"
               f"| ours: fused CPU model, freed memory kept; lung box + 16 mm, overlap 0.25, windows without lung skipped | {seg_t:.1f} | 1.0x |\n"
               f"| before: unfused channels-last model, glibc default malloc (fresh process); same windows | {base['before']:.1f} | "
               f"{base['before'] / seg_t:.1f}x |\n" +
               (f"| ours over the whole volume, overlap 0.25 | {base['whole']:.1f} | {base['whole'] / seg_t:.1f}x |\n"
                if "whole" in base else "") +
               f"\nEnd to end per scan: ours {total:.1f} s vs {total - seg_t + base['before']:.1f} s with the "
               f"segmenter step as before (**{(total - seg_t + base['before']) / total:.2f}x**).{agree}\n")
    md += batch_md
    print(md)
    if args.no_write or args.scale != 1.0:
        return
    from _report import update_section

    update_section("detect", md)


if __name__ == "__main__":
    main()
