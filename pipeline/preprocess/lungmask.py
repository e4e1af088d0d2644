"""Classical lung mask (threshold + connected components + morphology), parameters in mm.

Steps, on the volume already resampled to the target spacing (so radii are in mm):

1. ``air = HU < lung_threshold_hu`` (-320 HU separates aerated lung from soft tissue).
2. 3D connected components (6-connectivity, which keeps lungs apart from the outside air
   across thin walls); components that reach an in-plane corner of the image (any slice) are
   the air around the patient and are dropped. A component touching an in-plane edge away from
   the corners is a lung cut by the field of view (large patients): kept, with a warning.
   Components touching only the z faces are kept: in a slab (a few slices) the lungs
   legitimately touch the first and last slice.
3. Keep the largest component, and the second largest when it is at least ``min_lung_ml``
   and 10 % of the largest (a second lung, not the trachea or bowel gas). When both lungs
   are merged into one component (thin anterior junction) the one component holds both.
4. Per axial slice and per kept component: the convex hull when it is at most
   ``lung_hull_ratio`` times the component's area (closes indentations made by
   juxtapleural nodules and the hilum), else the hole-filled slice (vessels, nodules inside).
5. Dilation by ``lung_dilate_mm`` (Euclidean ball in mm, on the mask's bounding box) to
   include the pleura and nodules touching it.

Steps 4 and 5 run through :mod:`pipeline.preprocess.fastmorph` (row-wise exact hull
rasterisation, bit-packed ball dilation): voxel for voxel the same mask as the reference
implementation kept in :mod:`pipeline.preprocess.lungmask_reference` (skimage
``convex_hull_image`` per slice, ``distance_transform_edt``), about 8x faster on a
full-size scan (docs/benchmarks.md).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from pipeline.errors import DataError
from pipeline.preprocess.fastmorph import dilate_ball, hull_or_fill

log = logging.getLogger(__name__)


def label_6(mask_zyx: np.ndarray) -> tuple[np.ndarray, object, int]:
    """6-connected components of a bool volume, numbered like ``scipy.ndimage.label`` (in
    raster order of each component's first voxel; checked by the tests), computed by
    SimpleITK's multi-threaded ConnectedComponent. Returns (labels uint32 (z, y, x) view, the
    SimpleITK image that owns the view's memory: keep it alive while using the view, the
    number of components)."""
    import SimpleITK as sitk

    f = sitk.ConnectedComponentImageFilter()
    f.SetFullyConnected(False)
    image = f.Execute(sitk.GetImageFromArray(np.ascontiguousarray(mask_zyx).view(np.uint8)))
    return sitk.GetArrayViewFromImage(image), image, int(f.GetObjectCount())


def _bbox(mask_zyx: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Bounding box (z, y, x slices) of the True voxels, None when there are none."""
    pz = mask_zyx.reshape(mask_zyx.shape[0], -1).any(axis=1)
    if not pz.any():
        return None
    pyx = mask_zyx.any(axis=0)
    iz, iy, ix = np.nonzero(pz)[0], np.nonzero(pyx.any(axis=1))[0], np.nonzero(pyx.any(axis=0))[0]
    return tuple(slice(int(i[0]), int(i[-1]) + 1) for i in (iz, iy, ix))


def component_sizes_boxes(cc_image, n: int) -> tuple[np.ndarray, dict[int, tuple[slice, slice, slice]]]:
    """Voxel counts (int64, index = label, [0] = 0) and bounding boxes ((z, y, x) slices) of the
    labels 1..n of a SimpleITK label image, in one multi-threaded pass
    (``LabelShapeStatisticsImageFilter`` with perimeter / Feret / oriented box off)."""
    import SimpleITK as sitk

    f = sitk.LabelShapeStatisticsImageFilter()
    f.ComputePerimeterOff()
    f.ComputeFeretDiameterOff()
    f.ComputeOrientedBoundingBoxOff()
    f.Execute(cc_image)
    sizes = np.zeros(n + 1, dtype=np.int64)
    boxes = {}
    for lab in f.GetLabels():
        x0, y0, z0, sx, sy, sz = f.GetBoundingBox(lab)
        sizes[lab] = f.GetNumberOfPixels(lab)
        boxes[int(lab)] = (slice(z0, z0 + sz), slice(y0, y0 + sy), slice(x0, x0 + sx))
    return sizes, boxes


def dilate_mm(mask_zyx: np.ndarray, radius_mm: float, spacing_zyx_mm: Sequence[float]) -> np.ndarray:
    """Euclidean dilation of a bool mask by ``radius_mm`` (anisotropic spacing respected): the
    voxels whose centre lies within ``radius_mm`` of a mask voxel's centre."""
    if radius_mm <= 0 or not mask_zyx.any():
        return mask_zyx.copy()
    sp = np.asarray(spacing_zyx_mm, dtype=float)
    margin = np.ceil(radius_mm / sp).astype(int) + 1
    bb = _bbox(mask_zyx)
    box = tuple(slice(max(0, s.start - m), min(n, s.stop + m)) for s, m, n in zip(bb, margin, mask_zyx.shape))
    out = np.zeros_like(mask_zyx, dtype=bool)
    out[box] = dilate_ball(mask_zyx[box], radius_mm, sp)
    return out


def lung_mask(array_zyx: np.ndarray, spacing_zyx_mm: Sequence[float], *, threshold_hu: float = -320.0,
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
    labels, cc_image, n = label_6(array_zyx < threshold_hu)
    if n == 0:
        raise DataError(path, f"no lungs found (no voxel below {threshold_hu:g} HU)")
    sizes, boxes = component_sizes_boxes(cc_image, n)
    _, ny, nx = array_zyx.shape
    outside = set(np.unique(labels[:, [0, 0, ny - 1, ny - 1], [0, nx - 1, 0, nx - 1]]).tolist()) - {0}
    cut = set()
    for lab, (bz, by, bx) in boxes.items():
        if lab in outside:  # the air around the patient: it reaches the image corners
            sizes[lab] = 0
        elif by.start == 0 or by.stop == ny or bx.start == 0 or bx.stop == nx:
            cut.add(lab)  # touches an in-plane edge away from the corners: a lung cut by the field of view
    order = np.argsort(sizes)[::-1]
    first = int(order[0])
    if sizes[first] == 0 or sizes[first] * voxel_ml < min_lung_ml:
        raise DataError(path, f"no lungs found (largest air region inside the body is "
                              f"{sizes[first] * voxel_ml:.1f} ml < min_lung_ml {min_lung_ml:g})")
    keep = [first]
    if n > 1:
        second = int(order[1])
        if sizes[second] > 0 and sizes[second] * voxel_ml >= min_lung_ml and sizes[second] >= 0.1 * sizes[first]:
            keep.append(second)
    if cut & set(keep):
        log.warning("%s: the field of view cuts the lungs (a lung touches the image edge); findings "
                    "near the edge may be missed", path or "scan")
    mask = np.zeros(array_zyx.shape, dtype=bool)
    for lab in keep:
        box = boxes[lab]  # bounding box of the component: per-slice work on the crop only
        mask[box] |= hull_or_fill(labels[box] == lab, hull_ratio)
    del labels, cc_image
    mask = dilate_mm(mask, dilate_radius_mm, sp)
    return mask.view(np.uint8)
