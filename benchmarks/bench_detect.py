"""End-to-end detection seconds per full-size scan, split into I/O, preprocessing, segmenter,
candidate extraction and classifier. Baselines for the segmenter step, in the same run on the
same preprocessed volume: MONAI sliding window over the WHOLE volume with overlap 0.25, and with
overlap 0.5 (a common choice); ours runs overlap 0.25 on the lung bounding box (+16 mm) only.

Scan: 512 x 512 x 300 voxels at 0.7 x 0.7 x 1.25 mm from pipeline.synth.make_scan, written as
.mhd and read back (I/O). Models: models/classifier + models/segmenter when present (trained),
else untrained default architectures (MedicalNet-ResNet10 FlexibleUNet, EfficientNet-Lite0);
with an untrained segmenter the classifier is timed on ``max_candidates`` lung points instead.
Usage: python benchmarks/bench_detect.py [--threads 2] [--device cpu] [--no-baseline]
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


def make_volume(path: Path) -> None:
    from pipeline.config import from_dict
    from pipeline.io.scans import write_scan
    from pipeline.synth import SynthConfig, make_scan

    fov = [SHAPE[2] * SPACING[0], SHAPE[1] * SPACING[1], SHAPE[0] * SPACING[2]]
    s = make_scan("1.2.3.998", 0, from_dict(SynthConfig, {"fov_mm": fov}, "synth"), shape_zyx=SHAPE,
                  spacing_xyz_mm=SPACING, direction=np.eye(3))
    write_scan(s.array_zyx, s.geometry, path)


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
        (d / "config.json").write_text(json.dumps({"task": name, "kind": model.kind, "model": to_dict(cfg), **ctx}))
    return tmp / "models", "untrained (random init)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from pipeline.detect.batch import load_models
    from pipeline.detect.config import DetectConfig
    from pipeline.detect.scan import amp_dtype_for, detect_scan, preprocess_config, segment
    from pipeline.detect.score import classify, cut_patches, patch_params
    from pipeline.io.scans import read_scan
    from pipeline.preprocess import preprocess_scan

    cfg = DetectConfig(device=args.device)
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        t = time.perf_counter()
        make_volume(tmp / "scan.mhd")
        print(f"generated scan in {time.perf_counter() - t:.1f} s", flush=True)
        mdir, mdesc = model_dirs(tmp)
        seg, seg_cfg, cls, cls_cfg, dev = load_models(str(mdir / "classifier"), str(mdir / "segmenter"), args.device)
        t = time.perf_counter()
        scan = read_scan(tmp / "scan.mhd")
        t_io = time.perf_counter() - t
        res = detect_scan(scan, seg, seg_cfg, cls, cls_cfg, cfg, dev)
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
            note = (f" The segmenter gave {res.n_candidates} candidates (untrained), so the classifier row is "
                    f"{cfg.max_candidates} candidates cut at random lung points and scored.")
        base = {}
        if not args.no_baseline:
            for ov in (0.25, 0.5):
                t = time.perf_counter()
                segment(array, seg, DetectConfig(overlap=ov), dev, amp_dtype_for(cfg.precision, dev))
                base[ov] = time.perf_counter() - t
                print(f"baseline segmenter (whole volume, overlap {ov}): {base[ov]:.1f} s", flush=True)
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
               f"| ours: lung box + 16 mm, overlap 0.25 | {seg_t:.1f} | 1.0x |\n" +
               "".join(f"| baseline: whole volume, overlap {ov} | {v:.1f} | {v / seg_t:.1f}x |\n"
                       for ov, v in base.items()) +
               f"\nEnd to end vs the overlap-0.5 whole-volume baseline: **{(total - seg_t + base[0.5]) / total:.1f}x** "
               "faster per scan.\n")
    print(md)
    from _report import update_section

    update_section("detect", md)


if __name__ == "__main__":
    main()
