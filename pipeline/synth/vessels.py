"""Pulmonary vessel trees: random recursive branching of line segments from each hilum,
thinning toward the periphery, rendered by distance to the segments (world mm)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.io.geometry import Geometry
from pipeline.synth.anatomy import F32, Chest


@dataclass(frozen=True)
class Segment:
    a_xyz_mm: np.ndarray
    b_xyz_mm: np.ndarray
    r_a_mm: float
    r_b_mm: float


def _rotate(d: np.ndarray, angle: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two child directions at +-angle from ``d`` around a random perpendicular axis."""
    p = rng.normal(size=3)
    p -= p.dot(d) * d
    p /= np.linalg.norm(p) + 1e-12
    a2 = angle * rng.uniform(0.7, 1.2)
    return (np.cos(angle) * d + np.sin(angle) * p, np.cos(a2) * d - np.sin(a2) * p)


def hilum_xyz_mm(chest: Chest, side: int) -> np.ndarray:
    cx, cy, cz = chest.center_xyz_mm
    return np.array([cx + side * (chest.lung_u - 0.62 * chest.lung_ra), cy + chest.lung_v + 0.05 * chest.lung_rb,
                     cz - 0.05 * chest.fz])


def grow_trees(chest: Chest, rng: np.random.Generator, max_depth: int = 10) -> tuple[list[Segment], np.ndarray]:
    """Vessel segments of both lungs and their branch points (N, 3) world mm."""
    segs: list[Segment] = []
    branches: list[np.ndarray] = []
    s = chest.scale

    def inside(p: np.ndarray, margin: float) -> bool:
        u, v, w = chest.rel(*(np.asarray([c], dtype=F32) for c in p))
        return bool(chest.lung_sd(u, v, w)[0] < -margin)

    def grow(a, d, length, r, depth):
        for _ in range(3):
            b = a + d * length
            if inside(b, max(r, 1.0)):
                break
            length *= 0.55
        else:
            return
        r_b = r * rng.uniform(0.88, 0.95)
        segs.append(Segment(a, b, r, r_b))
        if depth >= max_depth or r_b < 0.45:
            return
        branches.append(b)
        for c in _rotate(d, np.deg2rad(rng.uniform(22, 42)), rng):
            grow(b, c / np.linalg.norm(c), length * rng.uniform(0.75, 0.9), r_b * rng.uniform(0.8, 0.9),
                 depth + 1)

    for side in (-1, 1):
        h = hilum_xyz_mm(chest, side)
        for dz, dy in ((0.9, 0.0), (0.0, 0.4), (-0.9, 0.5), (-0.5, -0.6)):
            d = np.array([side * 1.0, dy, dz]) + rng.normal(0, 0.15, 3)
            grow(h, d / np.linalg.norm(d), 0.25 * chest.lung_rb, rng.uniform(3.5, 4.5) * s, 0)
    return segs, np.asarray(branches, dtype=float).reshape(-1, 3)


def _sub(arr: np.ndarray, sl: tuple[slice, slice, slice]) -> np.ndarray:
    return arr[tuple(s if n > 1 else slice(None) for s, n in zip(sl, arr.shape))]


def bbox_zyx(geometry: Geometry, points_xyz_mm: np.ndarray, margin_mm: float) -> tuple[slice, ...] | None:
    """Index box (z, y, x slices) around world points plus a margin; None if outside the grid."""
    idx = geometry.world_to_voxel_zyx(np.atleast_2d(points_xyz_mm))
    m = margin_mm / np.asarray(geometry.spacing_zyx_mm) + 1
    lo = np.maximum(np.floor(idx.min(0) - m).astype(int), 0)
    hi = np.minimum(np.ceil(idx.max(0) + m).astype(int) + 1, geometry.shape_zyx)
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def render_vessels(segs: list[Segment], geometry: Geometry, axes, voxel_mm: float) -> np.ndarray:
    """Vessel partial-volume fraction (z, y, x) float32 in [0, 1] (max over segments)."""
    x, y, z = axes
    out = np.zeros(geometry.shape_zyx, dtype=F32)
    for sg in segs:
        sl = bbox_zyx(geometry, np.stack([sg.a_xyz_mm, sg.b_xyz_mm]), max(sg.r_a_mm, sg.r_b_mm) + voxel_mm)
        if sl is None:
            continue
        a = sg.a_xyz_mm.astype(F32)
        d = (sg.b_xyz_mm - sg.a_xyz_mm).astype(F32)
        px, py, pz = _sub(x, sl) - a[0], _sub(y, sl) - a[1], _sub(z, sl) - a[2]
        t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / F32(d.dot(d) + 1e-6), 0, 1)
        dist = np.sqrt((px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2)
        r = F32(sg.r_a_mm) + t * F32(sg.r_b_mm - sg.r_a_mm)
        f = np.clip(F32(0.5) - (dist - r) / F32(voxel_mm), 0, 1)
        # thin vessels: partial volume lowers the peak contrast
        f *= np.minimum(F32(1.0), F32(2.0) * r / F32(voxel_mm))
        np.maximum(out[sl], f, out=out[sl])
    return out
