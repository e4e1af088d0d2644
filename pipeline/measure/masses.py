"""Where the lungs hold a mass: seeds for :func:`pipeline.measure.core.measure_lesion`, found by CT
values alone.

A mass (a lesion over 30 mm) is large solid tissue inside the lungs. The nodule segmenter is trained
mostly on 3-30 mm nodules and may leave it out or mark only its edge, so ``detect`` also looks for one
directly: soft tissue (>= ``SOFT_TISSUE_HU``) inside the *filled lungs* whose inscribed ball has a
radius of at least ``MIN_RADIUS_MM`` (a 30 mm sphere's is 15 mm; the pleura and chest wall inside the
lung mask's 5 mm margin and the vessels are far thinner). Each such core gives one seed, its deepest
point. A seed is only a place to look: ``detect`` measures the lesion there and reports it only when
it is typed ``mass`` (the heart or mediastinum caught by a hull is refused by the measurement as
"not a lung lesion").

*Filled lungs* (:func:`filled_lungs`): the preprocessing's lung mask with every axial slice's lung
(each 2D component) replaced by its convex hull. The preprocessing takes the hull only when it adds
at most half the lung's area, so a mass that fills a large part of its lung, an indentation of the
lung rather than a hole, is outside the lung mask; here it is inside. Measuring uses the filled lungs
only where the lung mask found no lesion (:func:`pipeline.measure.core.measure_lesion`'s ``filled``),
so every nodule the lung mask holds is measured as before.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from pipeline.io.geometry import Geometry

SOFT_TISSUE_HU = -300.0
MIN_RADIUS_MM = 10.0


MIN_SLICE_AREA_MM2 = 100.0  # smaller 2D pieces of the lung mask (an apex, a base) are kept as they are


def filled_lungs(lung_zyx: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The lung mask with each axial slice's 2D lung components replaced by their convex hulls
    (bool (z, y, x)); the preprocessing's fast per-slice hull (:mod:`pipeline.preprocess.fastmorph`)."""
    from pipeline.preprocess.fastmorph import hull_or_fill

    lung = np.asarray(lung_zyx) != 0
    out = lung.copy()
    min_px = MIN_SLICE_AREA_MM2 / float(geometry.spacing_zyx_mm[1] * geometry.spacing_zyx_mm[2])
    for z in np.flatnonzero(lung.any(axis=(1, 2))):
        lab, _ = ndi.label(lung[z])
        for k, box in enumerate(ndi.find_objects(lab), start=1):
            comp = lab[box] == k
            if comp.sum() >= min_px:
                out[z][box] |= hull_or_fill(comp[None], float("inf"))[0]
    return out


def mass_seeds(array_zyx: np.ndarray, lung_zyx: np.ndarray, geometry: Geometry,
               min_radius_mm: float = MIN_RADIUS_MM, filled: np.ndarray | None = None) -> np.ndarray:
    """World points (n, 3) LPS mm: the deepest point of every soft-tissue core inside the filled lungs.

    Args:
        array_zyx: HU (z, y, x) on ``geometry`` (e.g. the preprocessed volume).
        lung_zyx: lung mask on the same grid.
        min_radius_mm: the least inscribed radius of a core.
        filled: :func:`filled_lungs` of ``lung_zyx`` when already computed.
    """
    filled = filled_lungs(lung_zyx, geometry) if filled is None else filled
    soft = (np.asarray(array_zyx) >= SOFT_TISSUE_HU) & filled
    if not soft.any():
        return np.zeros((0, 3))
    dist = ndi.distance_transform_edt(soft, sampling=geometry.spacing_zyx_mm)
    labels, n = ndi.label(dist >= min_radius_mm)
    if n == 0:
        return np.zeros((0, 3))
    idx = ndi.maximum_position(dist, labels, index=np.arange(1, n + 1))
    return np.atleast_2d(geometry.voxel_zyx_to_world(np.asarray(idx, float))).reshape(-1, 3)
