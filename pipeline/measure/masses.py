"""Where the lungs hold a mass: seeds for :func:`pipeline.measure.core.measure_lesion`, found by CT
values alone.

A mass (a lesion over 30 mm) is large solid tissue inside the lungs. The nodule segmenter is trained
mostly on 3-30 mm nodules and may leave it out or mark only its edge, so ``detect`` also looks for one
directly: soft tissue (>= ``SOFT_TISSUE_HU``) inside the preprocessing's lung mask whose inscribed
ball has a radius of at least ``MIN_RADIUS_MM`` (a 30 mm sphere's is 15 mm; the pleura and chest wall
inside the mask's 5 mm margin and the vessels are far thinner). Each such core gives one seed, its
deepest point. A seed is only a place to look: ``detect`` measures the lesion there and reports it
only when it is typed ``mass`` (the heart or mediastinum caught by a convex-hull lung mask is
refused by the measurement as "not a lung lesion").
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from pipeline.io.geometry import Geometry

SOFT_TISSUE_HU = -300.0
MIN_RADIUS_MM = 10.0


def mass_seeds(array_zyx: np.ndarray, lung_zyx: np.ndarray, geometry: Geometry,
               min_radius_mm: float = MIN_RADIUS_MM) -> np.ndarray:
    """World points (n, 3) LPS mm: the deepest point of every soft-tissue core inside the lung mask.

    Args:
        array_zyx: HU (z, y, x) on ``geometry`` (e.g. the preprocessed volume).
        lung_zyx: lung mask on the same grid.
        min_radius_mm: the least inscribed radius of a core.
    """
    soft = (np.asarray(array_zyx) >= SOFT_TISSUE_HU) & (np.asarray(lung_zyx) != 0)
    if not soft.any():
        return np.zeros((0, 3))
    dist = ndi.distance_transform_edt(soft, sampling=geometry.spacing_zyx_mm)
    labels, n = ndi.label(dist >= min_radius_mm)
    if n == 0:
        return np.zeros((0, 3))
    idx = ndi.maximum_position(dist, labels, index=np.arange(1, n + 1))
    return np.atleast_2d(geometry.voxel_zyx_to_world(np.asarray(idx, float))).reshape(-1, 3)
