"""Classifier scoring of candidates (false-positive reduction) and score combination.

The classifier sees exactly what it saw in training: planes or cubes cut by
:mod:`pipeline.patches.extract` with the ``patches`` params saved in its ``config.json``,
from the volume preprocessed with the ``preprocess`` params saved there.
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.errors import ConfigError
from pipeline.io.geometry import Geometry
from pipeline.patches.extract import cube_shape_zyx, extract_cube, extract_planes
from pipeline.runtime import autocast

PATCH_DEFAULTS = {"cube_mm": 48.0, "plane_mm": 48.0, "plane_px": 64, "planes": "orthogonal"}


def patch_params(model_config: dict) -> dict:
    """The patches params a classifier was trained with (defaults for keys it lacks)."""
    saved = dict(model_config.get("patches") or {})
    return {k: saved.get(k, v) for k, v in PATCH_DEFAULTS.items()}


def cut_patches(array_zyx: np.ndarray, geometry: Geometry, centers_zyx: np.ndarray, kind: str,
                params: dict) -> np.ndarray:
    """Classifier inputs around integer voxel centres (N, 3) (z, y, x) of ``array_zyx``.

    Returns int16 planes (N, 3, P, P) for ``kind == '2d'`` or cubes (N, 1, S, S, S) for ``'3d'``.
    """
    sp = geometry.spacing_zyx_mm
    if kind == "2d":
        out = [extract_planes(array_zyx, c, sp, float(params["plane_mm"]), int(params["plane_px"]),
                              str(params["planes"])) for c in centers_zyx]
        shape = (0, 3, int(params["plane_px"]), int(params["plane_px"]))
    elif kind == "3d":
        size = cube_shape_zyx(float(params["cube_mm"]), sp)
        out = [extract_cube(array_zyx, c, size)[None] for c in centers_zyx]
        shape = (0, 1, *size)
    else:
        raise ConfigError(f"classifier kind must be 2d or 3d, got {kind!r}")
    return np.stack(out) if out else np.zeros(shape, np.int16)


@torch.inference_mode()
def classify(model: torch.nn.Module, patches: np.ndarray, *, batch_size: int, device: torch.device,
             amp_dtype: torch.dtype | None = None) -> np.ndarray:
    """Sigmoid probabilities (N,) float64 of ``model`` on int16 HU ``patches``, in batches."""
    probs = []
    for i in range(0, len(patches), int(batch_size)):
        x = torch.from_numpy(np.ascontiguousarray(patches[i:i + int(batch_size)])).float().to(device)
        with autocast(device, amp_dtype):
            logits = model(x)
        probs.append(torch.sigmoid(logits.float().reshape(-1)).cpu().numpy())
    return np.concatenate(probs).astype(np.float64) if probs else np.zeros(0)


def combine(seg_score: np.ndarray, cls_score: np.ndarray | None, how: str) -> np.ndarray:
    """Final probability from segmenter max prob ``s`` and classifier prob ``c`` (see DetectConfig)."""
    s = np.asarray(seg_score, dtype=float)
    if how == "segmenter" or cls_score is None:
        return s.copy()
    c = np.asarray(cls_score, dtype=float)
    if how == "classifier":
        return c.copy()
    if how == "geomean":
        return np.sqrt(np.clip(s, 0, 1) * np.clip(c, 0, 1))
    if how == "product":
        return s * c
    if how == "mean":
        return (s + c) / 2.0
    raise ConfigError(f"combine must be one of classifier, geomean, product, mean, segmenter; got {how!r}")
