"""Probability map -> candidate nodules: threshold, 3D connected components inside the lung, NMS.

All arrays are (z, y, x) on the preprocessed grid described by ``geometry``; world positions are
LPS (x, y, z) mm computed with :meth:`Geometry.voxel_zyx_to_world` only.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from pipeline.io.geometry import Geometry

CANDIDATE_COLUMNS = ["coordX", "coordY", "coordZ", "diameter_mm", "seg_score", "seg_mean", "n_voxels",
                     "pz", "py", "px"]
"""``coordX/Y/Z`` world mm, ``pz/py/px`` continuous voxel index of the probability-weighted centroid
on the preprocessed grid, ``seg_score`` = max and ``seg_mean`` = mean probability of the component."""


def equivalent_diameter_mm(n_voxels, spacing_zyx_mm) -> np.ndarray:
    """Diameter (mm) of the sphere whose volume equals ``n_voxels`` voxels of ``spacing_zyx_mm``."""
    vol = np.asarray(n_voxels, dtype=float) * float(np.prod(spacing_zyx_mm))
    return np.cbrt(6.0 * vol / np.pi)


def components(prob_zyx: np.ndarray, lung_zyx: np.ndarray | None, geometry: Geometry, threshold: float,
               min_size_mm: float = 0.0, max_size_mm: float | None = None) -> pd.DataFrame:
    """Connected components (26-connectivity) of ``prob >= threshold`` inside the lung mask.

    Args:
        prob_zyx: float probability map, shape ``geometry.shape_zyx``.
        lung_zyx: uint8/bool lung mask of the same shape (None = whole volume).
        geometry: the grid of ``prob_zyx``.
        threshold: probability threshold.
        min_size_mm: drop components whose equivalent-sphere diameter is below this.
        max_size_mm: drop components whose equivalent-sphere diameter is above this (None = keep).

    Returns:
        DataFrame with :data:`CANDIDATE_COLUMNS`, one row per component, sorted by seg_score.
    """
    mask = prob_zyx >= threshold
    if lung_zyx is not None:
        mask &= lung_zyx != 0
    if not mask.any():
        return pd.DataFrame(columns=CANDIDATE_COLUMNS)
    labels, n = ndi.label(mask, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return pd.DataFrame(columns=CANDIDATE_COLUMNS)
    zyx = np.nonzero(labels)  # only the thresholded voxels: cheap on full-size scans
    lab = labels[zyx] - 1
    w = prob_zyx[zyx].astype(np.float64)
    count = np.bincount(lab, minlength=n).astype(float)
    wsum = np.bincount(lab, weights=w, minlength=n)
    smax = np.full(n, -np.inf)
    np.maximum.at(smax, lab, w)
    # probability-weighted centroid: sum(p * i) / sum(p) per axis
    cent = np.stack([np.bincount(lab, weights=w * a, minlength=n) for a in zyx], axis=1) / wsum[:, None]
    world = np.atleast_2d(geometry.voxel_zyx_to_world(cent))
    df = pd.DataFrame({"coordX": world[:, 0], "coordY": world[:, 1], "coordZ": world[:, 2],
                       "diameter_mm": equivalent_diameter_mm(count, geometry.spacing_zyx_mm),
                       "seg_score": smax, "seg_mean": wsum / count,
                       "n_voxels": np.asarray(count, dtype=np.int64),
                       "pz": cent[:, 0], "py": cent[:, 1], "px": cent[:, 2]})
    keep = df["diameter_mm"] >= min_size_mm
    if max_size_mm is not None:
        keep &= df["diameter_mm"] <= max_size_mm
    return df[keep].sort_values(["seg_score", "seg_mean"], ascending=False, kind="stable").reset_index(drop=True)


def nms(df: pd.DataFrame, nms_mm: float, score: str = "seg_score") -> pd.DataFrame:
    """Greedy non-maximum suppression on world distance.

    Rows are visited by decreasing ``score`` (ties, common when the max probability saturates at
    1, broken by ``seg_mean``); a row is dropped when its centre lies within ``nms_mm`` of an
    already kept row (the higher-scoring duplicate is kept). Returns the kept rows in that order.
    """
    keys = [score] + (["seg_mean"] if "seg_mean" in df.columns and score != "seg_mean" else [])
    df = df.sort_values(keys, ascending=False, kind="stable").reset_index(drop=True)
    if len(df) == 0 or nms_mm <= 0:
        return df
    from scipy.spatial import cKDTree

    pts = df[["coordX", "coordY", "coordZ"]].to_numpy(float)
    tree = cKDTree(pts)
    suppressed = np.zeros(len(df), bool)
    keep = []
    for i in range(len(df)):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in tree.query_ball_point(pts[i], r=nms_mm):
            if j > i:
                suppressed[j] = True
    return df.iloc[keep].reset_index(drop=True)


def top_candidates(prob_zyx, lung_zyx, geometry: Geometry, *, threshold: float, nms_mm: float,
                   max_candidates: int, min_size_mm: float = 0.0, max_size_mm: float | None = None) -> pd.DataFrame:
    """:func:`components` -> :func:`nms` -> the ``max_candidates`` highest seg scores."""
    cands = nms(components(prob_zyx, lung_zyx, geometry, threshold, min_size_mm, max_size_mm), nms_mm)
    return cands.head(int(max_candidates)).reset_index(drop=True)
