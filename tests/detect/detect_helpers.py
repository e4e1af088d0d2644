"""Detection test helpers: world-space chest phantoms with planted nodules, real torch models
(a fixed blob-responding conv 'segmenter' and patch-contrast 'classifier'), and model folders
holding real (untrained, head-biased) FlexibleUNet segmenter / EfficientNet-Lite0 classifier."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.io.geometry import Geometry

SPACING_MM = 2.0  # preprocess spacing of the test models (small volumes, fast)


def make_phantom(shape_zyx=(40, 100, 110), spacing_xyz_mm=(0.9, 0.9, 2.0), direction=None,
                 nodules=(((-22.0, 3.0, 2.0), 10.0),), seed=0, noise_hu=10.0):
    """(array_zyx int16 HU, Geometry) of a body ellipse with two lungs (-850 HU) and sphere
    nodules ``((center_xyz_mm, diameter_mm), ...)`` at 60 HU, all defined in world mm around 0."""
    direction = np.eye(3) if direction is None else np.asarray(direction, float)
    g0 = Geometry((0.0, 0.0, 0.0), spacing_xyz_mm, direction, shape_zyx)
    geom = Geometry(tuple(-(g0.center_xyz_mm())), spacing_xyz_mm, direction, shape_zyx)
    idx = np.indices(shape_zyx).reshape(3, -1).T
    w = geom.voxel_zyx_to_world(idx)
    x, y, z = w[:, 0], w[:, 1], w[:, 2]
    hu = np.full(len(w), -1000.0, np.float32)
    hu[(x / 48.0) ** 2 + (y / 42.0) ** 2 <= 1] = 40.0
    for cx in (-22.0, 22.0):
        hu[((x - cx) / 16.0) ** 2 + (y / 28.0) ** 2 + (z / 34.0) ** 2 <= 1] = -850.0
    for c, d in nodules:
        hu[np.sum((w - np.asarray(c)) ** 2, axis=1) <= (d / 2) ** 2] = 60.0
    hu += np.random.default_rng(seed).normal(0, noise_hu, hu.shape).astype(np.float32)
    return np.clip(np.rint(hu), -1024, 3000).astype(np.int16).reshape(shape_zyx), geom


class BlobSegmenter(nn.Module):
    """A fixed local-contrast (difference of box filters) blob detector on HU:
    logit = (mean 3^3 - mean 11^3 - 600) / 40: compact bright blobs in air-filled lung respond,
    walls (half tissue / half lung in the large box) do not."""

    kind = "3d"

    def forward(self, x):
        x = x.float()
        small = F.avg_pool3d(x, 3, stride=1, padding=1, count_include_pad=False)
        large = F.avg_pool3d(x, 11, stride=1, padding=5, count_include_pad=False)
        return (small - large - 450.0) / 40.0


class ContrastClassifier(nn.Module):
    """2D classifier on planes (B, 3, P, P): logit = (centre 5x5 mean - border mean) / 200 - 1."""

    kind = "2d"

    def forward(self, x):
        x = x.float()
        p = x.shape[-1]
        c = x[..., p // 2 - 2:p // 2 + 3, p // 2 - 2:p // 2 + 3].mean(dim=(-1, -2, -3))
        border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], -1).mean(dim=(-1, -2))
        return (c - border) / 200.0 - 1.0


def preprocess_ctx(spacing=SPACING_MM) -> dict:
    from pipeline.preprocess import PreprocessConfig

    pc = PreprocessConfig(spacing_xyz_mm=(spacing,) * 3, min_lung_ml=5.0)
    return {"preprocess": {"params": pc.output_params()},
            "patches": {"cube_mm": 32.0, "plane_mm": 32.0, "plane_px": 32, "planes": "orthogonal",
                        "folds": {"test": [0], "val": [1]}},
            "spacing_xyz_mm": [spacing] * 3}


def write_model_dirs(root: Path, seg_bias: float = 1.0) -> Path:
    """``root/segmenter`` + ``root/classifier`` in the train stage's format (real architectures,
    untrained; the segmenter head is set to a constant logit ``seg_bias`` so its output is known)."""
    from pipeline.config import to_dict
    from pipeline.models.classifier import ModelConfig, build_classifier
    from pipeline.models.segmenter import SegmenterConfig, build_segmenter

    torch.manual_seed(0)
    seg = build_segmenter(SegmenterConfig())
    with torch.no_grad():
        seg.net.segmentation_head[0].weight.zero_()
        seg.net.segmentation_head[0].bias.fill_(seg_bias)
    cls = build_classifier(ModelConfig(weights="none"))
    ctx = preprocess_ctx()
    for name, model, cfg, task in (("segmenter", seg, SegmenterConfig(), "segmenter"),
                                   ("classifier", cls, ModelConfig(weights="none"), "classifier")):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), d / "model.pt")
        conf = {"task": task, "kind": model.kind, "model": to_dict(cfg), "train": {"test_subsets": [0]}, **ctx}
        (d / "config.json").write_text(json.dumps(conf))
        (d / "provenance.json").write_text(json.dumps({"encoder": cfg.encoder, "weights_source": "random"}))
    return root
