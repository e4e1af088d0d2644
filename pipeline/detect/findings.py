"""Detect's findings segmented and measured: each finding's lesion mask on the scan's own grid (the
segmenter's component as the prior), its centre moved to the mask's centre, its classifier score
taken again there, and the measurement columns (:mod:`pipeline.measure`) added.

A finding whose mean diameter is above 30 mm is a ``mass``: reported with its measurements and the
segmenter's score (the classifier was trained on nodules of 3-30 mm), never dropped.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from pipeline.io.geometry import Geometry

log = logging.getLogger(__name__)

MEASURE_COLUMNS = ["type", "lungrads", "volume_mm3", "long_axis_mm", "short_axis_mm", "mean_diameter_mm",
                   "max_diameter_3d_mm", "equivalent_diameter_mm", "solid_volume_mm3", "solid_mean_diameter_mm",
                   "mean_hu", "median_hu", "image_number", "side"]
"""Added to ``findings.csv`` (units in the names; ``lungrads`` = Lung-RADS v2022 baseline category,
``image_number`` = DICOM InstanceNumber of the slice through the centre or the 1-based slice number,
``side`` = patient L / R of the midline). Research aids, not clinical measurements."""
_PRIOR_MARGIN = 2  # voxels around the segmenter component's box


def _priors(prob_zyx: np.ndarray, lung_zyx: np.ndarray, geom: Geometry, threshold: float, xyz: np.ndarray):
    """For each world point, the segmenter's thresholded component there (nearest within 3 voxels) as
    ``(mask, Geometry)`` of its box on the preprocessed grid, or None."""
    labels, _ = ndi.label((prob_zyx >= threshold) & (lung_zyx != 0), structure=np.ones((3, 3, 3), bool))
    boxes = ndi.find_objects(labels)
    out = []
    for p in xyz:
        i = np.clip(np.rint(geom.world_to_voxel_zyx(p)).astype(int).reshape(3), 0, np.asarray(labels.shape) - 1)
        lo, hi = np.maximum(i - 3, 0), i + 4
        win = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        k = int(labels[tuple(i)]) or (int(np.bincount(win[win > 0]).argmax()) if (win > 0).any() else 0)
        if k == 0 or boxes[k - 1] is None:
            out.append(None)
            continue
        box = tuple(slice(max(s.start - _PRIOR_MARGIN, 0), min(s.stop + _PRIOR_MARGIN, n))
                    for s, n in zip(boxes[k - 1], labels.shape))
        start = [s.start for s in box]
        g = Geometry(tuple(geom.voxel_zyx_to_world(start).ravel()), geom.spacing_xyz_mm, geom.direction,
                     tuple(s.stop - s.start for s in box))
        out.append((labels[box] == k, g))
    return out


def measure_findings(scan, found: pd.DataFrame, prob_zyx: np.ndarray, lung_zyx: np.ndarray, geom: Geometry,
                     threshold: float, rescore=None, filled: np.ndarray | None = None) -> tuple[pd.DataFrame, list]:
    """Measure every finding of ``found`` (detect's columns) on ``scan``.

    Args:
        prob_zyx / lung_zyx / geom: the segmenter's probability map and the lung mask on the
            preprocessed grid ``geom``.
        threshold: the segmenter threshold (its components are the priors).
        rescore: ``f(xyz (N, 3)) -> classifier scores`` at new centres, or None (keep the scores).
        filled: the filled lungs (:func:`pipeline.measure.masses.filled_lungs`) on ``geom``, or None
            (computed here): where the lung mask finds no lesion, a mass is looked for inside them.

    Returns:
        (findings with the centre moved to each mask's centre, the original-grid voxel index updated,
        the :data:`MEASURE_COLUMNS` added; the masks (:class:`~pipeline.measure.segment.LesionMask`
        or None), in the same order).
    """
    from pipeline.measure.core import measure_lesion, midline_x_mm

    found = found.reset_index(drop=True).copy()
    if len(found) == 0:
        return found.reindex(columns=[*found.columns, *MEASURE_COLUMNS]), []
    xyz = found[["coordX", "coordY", "coordZ"]].to_numpy(float)
    priors = _priors(prob_zyx, lung_zyx, geom, threshold, xyz)
    mid = midline_x_mm(scan.geometry, (lung_zyx, geom))
    if filled is None:
        from pipeline.measure.masses import filled_lungs

        filled = filled_lungs(lung_zyx, geom)
    masks, rows = [], []
    for p, prior in zip(xyz, priors):
        m = measure_lesion(scan, p, lung=(lung_zyx, geom), prior=prior, midline_mm=mid,
                           filled=(filled.view(np.uint8), geom))
        masks.append(m.mask)
        rows.append(m.values)
    meas = pd.DataFrame(rows)
    ok = meas["measured"].fillna(False).astype(bool).to_numpy() if "measured" in meas else np.zeros(len(found), bool)
    new_xyz = xyz.copy()
    if ok.any():
        new_xyz[ok] = meas.loc[ok, ["coordX", "coordY", "coordZ"]].to_numpy(float)
    found[["coordX", "coordY", "coordZ"]] = new_xyz
    idx = scan.geometry.world_to_nearest_voxel_zyx(new_xyz).reshape(-1, 3)
    found[["index_z", "index_y", "index_x"]] = idx
    for col in MEASURE_COLUMNS:
        found[col] = meas.get(col, np.nan)
    if ok.any():
        found.loc[ok, "diameter_mm"] = meas.loc[ok, "mean_diameter_mm"].astype(float)
    if rescore is not None and ok.any():
        found.loc[ok, "cls_score"] = rescore(new_xyz[ok])
    if not ok.all():
        log.info("%s: %d of %d finding(s) could not be segmented at their centre; reported unmeasured",
                 scan.seriesuid, int((~ok).sum()), len(found))
    return found, masks
