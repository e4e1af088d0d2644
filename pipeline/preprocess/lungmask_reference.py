"""REFERENCE (slow) lung mask: the implementation before the fast one (same output), kept verbatim so
tests and ``benchmarks/bench_preprocess.py`` can check that :mod:`pipeline.preprocess.lungmask`
gives the same voxels. Not used by the pipeline.

Classical lung mask (threshold + connected components + morphology), parameters in mm.

Steps, on the volume already resampled to the target spacing (so radii are in mm):

1. ``air = HU < lung_threshold_hu`` (-320 HU separates aerated lung from soft tissue).
2. 3D connected components (6-connectivity, which keeps lungs apart from the outside air
   across thin walls); components reaching an in-plane corner of the image are the air around
   the patient and are dropped (a lung cut by the field of view touches an edge, not a
   corner). Components touching only the z faces are kept: in a slab (a few slices) the lungs
   legitimately touch the first and last slice.
3. Keep the largest component, and the second largest when it is at least ``min_lung_ml``
   and 10 % of the largest (a second lung, not the trachea or bowel gas). When both lungs
   are merged into one component (thin anterior junction) the one component holds both.
4. Per axial slice and per kept component: the convex hull when it is at most
   ``lung_hull_ratio`` times the component's area (closes indentations made by
   juxtapleural nodules and the hilum), else the hole-filled slice (vessels, nodules inside).
5. Dilation by ``lung_dilate_mm`` (Euclidean, via a distance transform in mm on the
   mask's bounding box) to include the pleura and nodules touching it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from pipeline.errors import DataError


def _slice_fill(sl: np.ndarray, hull_ratio: float) -> np.ndarray:
    """One axial slice of one lung (bool 2D) -> hull or hole-filled slice."""
    from skimage.morphology import convex_hull_image

    filled = ndi.binary_fill_holes(sl)
    if hull_ratio <= 0:
        return filled
    ys, xs = np.nonzero(filled)
    if len(ys) < 3:
        return filled
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = filled[y0:y1, x0:x1]
    try:
        hull = convex_hull_image(crop)
    except (ValueError, RuntimeError):  # degenerate (collinear) slice
        return filled
    if hull.sum() <= hull_ratio * crop.sum():
        out = filled.copy()
        out[y0:y1, x0:x1] |= hull
        return out
    return filled


def dilate_mm_reference(mask_zyx: np.ndarray, radius_mm: float, spacing_zyx_mm: Sequence[float]) -> np.ndarray:
    """Euclidean dilation of a bool mask by ``radius_mm`` (anisotropic spacing respected)."""
    if radius_mm <= 0 or not mask_zyx.any():
        return mask_zyx.copy()
    sp = np.asarray(spacing_zyx_mm, dtype=float)
    margin = np.ceil(radius_mm / sp).astype(int) + 1
    idx = np.nonzero(mask_zyx.any(axis=(1, 2)))[0], np.nonzero(mask_zyx.any(axis=(0, 2)))[0], \
        np.nonzero(mask_zyx.any(axis=(0, 1)))[0]
    lo = [max(0, int(i.min()) - m) for i, m in zip(idx, margin)]
    hi = [min(n, int(i.max()) + 1 + m) for i, m, n in zip(idx, margin, mask_zyx.shape)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    dist = ndi.distance_transform_edt(~mask_zyx[box], sampling=sp)
    out = np.zeros_like(mask_zyx)
    out[box] = dist <= radius_mm
    return out


def lung_mask_reference(array_zyx: np.ndarray, spacing_zyx_mm: Sequence[float], *, threshold_hu: float = -320.0,
              dilate_radius_mm: float = 5.0, min_lung_ml: float = 20.0, hull_ratio: float = 1.5,
              path: str = "") -> np.ndarray:
    """Lung mask of a (z, y, x) HU volume with voxel size ``spacing_zyx_mm``.

    Returns:
        uint8 array (z, y, x), 1 = lung (dilated), 0 = elsewhere.

    Raises:
        DataError: no air component of at least ``min_lung_ml`` inside the body.
    """
    sp = np.asarray(spacing_zyx_mm, dtype=float)
    voxel_ml = float(np.prod(sp)) / 1000.0
    air = array_zyx < threshold_hu
    labels, n = ndi.label(air)
    if n == 0:
        raise DataError(path, f"no lungs found (no voxel below {threshold_hu:g} HU)")
    corners = labels[:, [0, 0, -1, -1], [0, -1, 0, -1]]  # the air around the patient reaches a corner
    sizes = np.bincount(labels.ravel(), minlength=n + 1).astype(np.int64)
    sizes[0] = 0
    sizes[np.unique(corners)] = 0
    order = np.argsort(sizes)[::-1]
    first = int(order[0])
    if sizes[first] * voxel_ml < min_lung_ml:
        raise DataError(path, f"no lungs found (largest air region inside the body is "
                              f"{sizes[first] * voxel_ml:.1f} ml < min_lung_ml {min_lung_ml:g})")
    keep = [first]
    if n > 1:
        second = int(order[1])
        if sizes[second] * voxel_ml >= min_lung_ml and sizes[second] >= 0.1 * sizes[first]:
            keep.append(second)
    mask = np.zeros(array_zyx.shape, dtype=bool)
    boxes = ndi.find_objects(labels)
    for lab in keep:
        box = boxes[lab - 1]  # bounding box of the component: per-slice work on the crop only
        comp = labels[box] == lab
        filled = np.stack([_slice_fill(sl, hull_ratio) if sl.any() else sl for sl in comp])
        mask[box] |= filled
    mask = dilate_mm_reference(mask, dilate_radius_mm, sp)
    return mask.astype(np.uint8)
