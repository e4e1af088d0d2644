"""Cutting patches out of a (memory-mapped) preprocessed volume, air-padded at the borders.

All functions take centres as integer voxel indices (z, y, x) on the preprocessed grid,
computed once per candidate with ``Geometry.world_to_nearest_voxel_zyx``. The patch centre
voxel is exactly the volume voxel at the candidate: ``cube[S//2, S//2, S//2]`` and
``plane[c, P//2, P//2]`` (for the plane through the centre).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

AIR_HU = -1000


def cube_shape_zyx(cube_mm: float, spacing_zyx_mm: Sequence[float]) -> tuple[int, int, int]:
    """Voxels per axis of a ``cube_mm`` cube at ``spacing_zyx_mm`` (48 at 1 mm)."""
    return tuple(max(1, round(cube_mm / s)) for s in spacing_zyx_mm)


def crop_padded(volume_zyx: np.ndarray, start_zyx: Sequence[int], size_zyx: Sequence[int],
                fill: int = AIR_HU) -> np.ndarray:
    """``volume[start:start+size]`` with out-of-volume voxels set to ``fill``.

    Reads only the in-bounds block, so on a memmap only those pages are touched.
    """
    out = np.full(tuple(int(s) for s in size_zyx), fill, dtype=volume_zyx.dtype)
    src, dst = [], []
    for st, sz, n in zip(start_zyx, size_zyx, volume_zyx.shape):
        a, b = max(int(st), 0), min(int(st) + int(sz), n)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - int(st), b - int(st)))
    out[tuple(dst)] = volume_zyx[tuple(src)]
    return out


def extract_cube(volume_zyx: np.ndarray, center_zyx: Sequence[int], size_zyx: Sequence[int]) -> np.ndarray:
    """Cube of ``size_zyx`` voxels with the centre voxel at index ``size // 2``."""
    start = [int(c) - int(s) // 2 for c, s in zip(center_zyx, size_zyx)]
    return crop_padded(volume_zyx, start, size_zyx)


def _plane_offsets(plane_mm: float, plane_px: int) -> np.ndarray:
    """mm offsets of the P pixel centres along one plane axis; pixel P//2 is offset 0."""
    step = plane_mm / plane_px
    return (np.arange(plane_px) - plane_px // 2) * step


def extract_planes(volume_zyx: np.ndarray, center_zyx: Sequence[int], spacing_zyx_mm: Sequence[float],
                   plane_mm: float, plane_px: int, mode: str) -> np.ndarray:
    """Three 2D planes (3, P, P) int16 through ``center_zyx``, sampled in mm.

    Each plane spans ``plane_mm`` x ``plane_mm`` (pixel step ``plane_mm / P`` mm on both plane
    axes, converted to voxels with the per-axis spacing, so anisotropic grids give square
    mm fields of view); linear interpolation, air outside the volume.
    ``mode``: ``axial`` (axial x3), ``orthogonal`` (axial (y,x), coronal (z,x), sagittal (z,y)),
    ``adjacent`` (axial at z-1, z, z+1 voxels).
    """
    sp = np.asarray(spacing_zyx_mm, dtype=float)
    off_mm = _plane_offsets(plane_mm, plane_px)
    half = np.ceil(np.abs(off_mm).max() / sp).astype(int) + 2
    half[0] = max(half[0], 2)
    start = np.asarray(center_zyx, dtype=int) - half
    block = crop_padded(volume_zyx, start, 2 * half + 1).astype(np.float32)
    c = half.astype(float)  # centre inside the block
    o = [off_mm / s for s in sp]  # voxel offsets per axis (z, y, x)

    def sample(fixed_axis: int, fixed_at: float) -> np.ndarray:
        axes = [a for a in range(3) if a != fixed_axis]
        r, q = np.meshgrid(o[axes[0]], o[axes[1]], indexing="ij")
        coords = np.empty((3,) + r.shape)
        coords[fixed_axis] = fixed_at
        coords[axes[0]] = c[axes[0]] + r
        coords[axes[1]] = c[axes[1]] + q
        return ndi.map_coordinates(block, coords, order=1, mode="constant", cval=AIR_HU)

    if mode == "axial":
        ax = sample(0, c[0])
        planes = [ax, ax, ax]
    elif mode == "orthogonal":
        planes = [sample(0, c[0]), sample(1, c[1]), sample(2, c[2])]
    elif mode == "adjacent":
        planes = [sample(0, c[0] - 1), sample(0, c[0]), sample(0, c[0] + 1)]
    else:
        raise ValueError(f"planes mode must be axial|orthogonal|adjacent, got {mode!r}")
    return np.rint(np.stack(planes)).astype(np.int16)
