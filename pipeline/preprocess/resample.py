"""Resampling to a target spacing with SimpleITK, keeping origin and direction.

The output grid keeps the original origin (voxel (0,0,0) stays at the same world point)
and direction, and covers the same physical extent: along each index axis
``n_new = max(1, round(n_old * spacing_old / spacing_new))``, so the extent matches the
original within one target voxel.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.io.geometry import Geometry
from pipeline.io.scans import to_sitk

_EXACT_IN_FLOAT32 = tuple(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16))


def target_geometry(geometry: Geometry, spacing_xyz_mm: Sequence[float]) -> Geometry:
    """Grid with ``spacing_xyz_mm`` covering ``geometry``'s extent (same origin and direction)."""
    ext = np.asarray(geometry.extent_xyz_mm, dtype=float)
    sp = np.asarray(spacing_xyz_mm, dtype=float)
    size_xyz = np.maximum(1, np.rint(ext / sp)).astype(int)
    return Geometry(geometry.origin_xyz_mm, tuple(sp), geometry.direction,
                    (int(size_xyz[2]), int(size_xyz[1]), int(size_xyz[0])))


def resample(array_zyx: np.ndarray, geometry: Geometry, target: Geometry, *,
             interpolation: str = "linear", fill_value: float = 0.0,
             extrapolate: bool = True) -> np.ndarray:
    """:func:`resample_image` as a numpy array of its own (a copy of the SimpleITK buffer)."""
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(resample_image(array_zyx, geometry, target, interpolation=interpolation,
                                                 fill_value=fill_value, extrapolate=extrapolate))


def resample_image(array_zyx: np.ndarray, geometry: Geometry, target: Geometry, *,
                   interpolation: str = "linear", fill_value: float = 0.0, extrapolate: bool = True):
    """Resample a (z, y, x) volume from ``geometry`` onto ``target`` with ``sitk.Resample``.

    Args:
        interpolation: ``"linear"`` (images; float32 output; int8/16 and uint8/16 inputs are
            read as they are, float32-exact) or ``"nearest"`` (label masks;
            output keeps the input dtype).
        fill_value: value of target voxels outside the input (e.g. -1000 HU air) when
            ``extrapolate`` is False.
        extrapolate: nearest-neighbour extrapolation outside the input's voxel centres. The
            target grid covers ``n * spacing`` (the voxels' physical extent) while the input's
            centres span ``(n - 1) * spacing``; without extrapolation the last target slices of
            a scan would be filled with air, which joins the lungs to the outside air.

    Returns:
        SimpleITK image of size ``target.shape_zyx`` (read it without a copy through
        ``sitk.GetArrayViewFromImage`` while the image is alive).
    """
    import SimpleITK as sitk

    interps = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}
    if interpolation not in interps:
        raise ValueError(f"interpolation must be one of {sorted(interps)}, got {interpolation!r}")
    src = array_zyx
    out_type = None  # the input's pixel type
    if interpolation == "linear":
        # small integer types are exact in float32 and ITK interpolates in double either way:
        # same output as casting to float32 first, without the float32 copy of the input
        if array_zyx.dtype not in _EXACT_IN_FLOAT32:
            src = array_zyx.astype(np.float32, copy=False)
        out_type = sitk.sitkFloat32
    image = to_sitk(src, geometry)
    nz, ny, nx = target.shape_zyx
    out = sitk.Resample(
        image, [int(nx), int(ny), int(nz)], sitk.Transform(), interps[interpolation],
        target.origin_xyz_mm, target.spacing_xyz_mm, tuple(target.direction_matrix.ravel().tolist()),
        float(fill_value), image.GetPixelID() if out_type is None else out_type, bool(extrapolate),
    )
    return out
