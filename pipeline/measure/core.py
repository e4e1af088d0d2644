"""Measure the lesion at a world point of a scan: mask, centre, measurements, type, Lung-RADS, where.

Used by ``detect`` (one call per finding, the segmenter's component as the prior) and by
``python -m pipeline measure`` (a point, or every row of an annotations file). All positions are
world LPS (x, y, z) mm; masks live on the scan's own grid.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.io.geometry import Geometry
from pipeline.measure.lungrads import category
from pipeline.measure.metrics import measure_mask
from pipeline.measure.segment import LesionMask, roi, segment_lesion

ROI_RADII_MM = (40.0, 80.0)  # first try; grown once when the lesion reaches the ROI's edge (masses)


@dataclass
class Measurement:
    """One measured lesion: ``values`` (the ``findings.csv`` columns: centre, image number, side,
    measurements, type, Lung-RADS category) and its ``mask`` (None when nothing was found)."""

    values: dict
    mask: LesionMask | None = None
    notes: list[str] = field(default_factory=list)


def _on_grid(array, geometry: Geometry, target: Geometry) -> np.ndarray:
    from pipeline.preprocess.resample import resample

    return resample(np.asarray(array).astype(np.uint8), geometry, target, interpolation="nearest",
                    fill_value=0, extrapolate=False).astype(bool)


BIG_MM = 6.0  # inscribed radius above which the convex-hull lung mask also counts as lung (masses on the wall)
LUNG_AIR_HU = -600.0  # aerated lung (ground glass at -600 HU and above is not air)
CLOSE_MM = 10.0      # smallest rolling-ball radius: indentations narrower than 2 x this are lung; the
                     # ball grows to 1.5 x the lesion's inscribed radius + 5 mm (masses on the wall)


def _hull_core(lung, target: Geometry, dilate_mm: float = 5.0) -> np.ndarray | None:
    """The preprocessing's lung mask on the ROI, its dilation (``preprocess.lung_dilate_mm``, 5 mm)
    undone: per-slice convex hulls of the lungs, so a lesion on the wall is inside. It may also hold
    parts of the mediastinum, so it only sizes the lesion (the rolling ball of :func:`_allowed`)."""
    from scipy import ndimage as ndi

    m = _on_grid(lung[0], lung[1], target)
    if not m.any():
        return None
    return ndi.distance_transform_edt(m, sampling=target.spacing_zyx_mm) > dilate_mm - 0.5


def _allowed(lung, target: Geometry, hu: np.ndarray, close_mm: float) -> np.ndarray | None:
    """Where a lesion may be in the ROI: the aerated lung (HU < ``LUNG_AIR_HU`` inside the
    preprocessing's lung mask, so never the air around the patient) closed with a ball of
    ``close_mm`` and hole-filled per image. A nodule inside the lung is a hole, a juxta-pleural one an
    indentation the ball rolls over; the chest wall and the mediastinum, wider than the ball, stay
    out. None (anywhere) without a lung mask."""
    if lung is None:
        return None
    from scipy import ndimage as ndi

    m = _on_grid(lung[0], lung[1], target)
    if not m.any():
        return None
    sp = target.spacing_zyx_mm
    air = m & (hu < LUNG_AIR_HU)
    if not air.any():
        return m
    grown = ndi.distance_transform_edt(~air, sampling=sp) <= close_mm
    closed = ndi.distance_transform_edt(grown, sampling=sp) > close_mm
    closed |= air
    for z in range(closed.shape[0]):
        closed[z] = ndi.binary_fill_holes(closed[z])
    return closed & m


def midline_x_mm(scan_geometry: Geometry, lung=None) -> float:
    """World x (mm) of the body midline: the middle of the lungs' left-right extent (the scan's centre
    when no lung mask is given). LPS: x grows towards the patient's left."""
    if lung is not None and np.asarray(lung[0]).any():
        arr, g = lung
        idx = np.argwhere(np.asarray(arr).any(axis=0))  # (y, x) of any lung voxel
        zs = np.zeros(len(idx))
        w = g.voxel_zyx_to_world(np.column_stack([zs, idx]))
        return float((w[:, 0].min() + w[:, 0].max()) / 2)
    return float(scan_geometry.center_xyz_mm()[0])


def image_number(scan, z_index: int) -> int:
    """What a viewer shows for slice ``z_index`` (0-based, scan grid): DICOM InstanceNumber when the
    reader recorded it, else the 1-based slice number."""
    numbers = (scan.meta or {}).get("instance_numbers")
    if numbers and 0 <= z_index < len(numbers) and numbers[z_index] is not None:
        return int(numbers[z_index])
    return int(z_index) + 1


MIN_LUNG_SHARE = 0.5  # a region mostly outside the (ball-closed) aerated lung is not a lung lesion
PRIOR_MARGIN_MM = 5.0
LEAK_VOLUME_FACTOR = 8.0  # a mask this many times the segmenter's component (and 4 cm3 more) has leaked


def _within_prior(les: LesionMask, prior: np.ndarray) -> tuple[LesionMask, bool]:
    """A mask that grew far beyond the segmenter's own component (into a rib, the spine or the
    mediastinum through the convex-hull lung) is cut back to within ``PRIOR_MARGIN_MM`` of it."""
    from scipy import ndimage as ndi

    vox = float(np.prod(les.geometry.spacing_zyx_mm))
    got, seen = float(les.mask_zyx.sum()) * vox, float(prior.sum()) * vox
    if got <= max(LEAK_VOLUME_FACTOR * seen, seen + 4000.0):
        return les, False
    near = ndi.distance_transform_edt(~prior, sampling=les.geometry.spacing_zyx_mm) <= PRIOR_MARGIN_MM
    les.mask_zyx = les.mask_zyx & near
    return les, True


def measure_lesion(scan, seed_xyz_mm, *, lung=None, prior=None, midline_mm: float | None = None,
                   filled=None) -> Measurement:
    """Segment and measure the lesion at ``seed_xyz_mm``; where the lung mask finds none and
    ``filled`` (``(mask_zyx, Geometry)``, :func:`pipeline.measure.masses.filled_lungs`) is given,
    try again inside the filled lungs and keep that result only when it is a ``mass`` (a large
    lesion the lung mask left out). See :func:`_measure_lesion` for the arguments."""
    m = _measure_lesion(scan, seed_xyz_mm, lung=lung, prior=prior, midline_mm=midline_mm)
    if filled is None or lung is None or m.values.get("measured"):
        return m
    mid = midline_x_mm(scan.geometry, lung) if midline_mm is None else midline_mm
    again = _measure_lesion(scan, seed_xyz_mm, lung=filled, prior=prior, midline_mm=mid)
    if again.values.get("type") == "mass":
        again.notes.append("a mass outside the lung mask: measured inside the filled lungs")
        return again
    return m


def _measure_lesion(scan, seed_xyz_mm, *, lung=None, prior=None,
                    midline_mm: float | None = None) -> Measurement:
    """Segment and measure the lesion at ``seed_xyz_mm`` (world LPS mm) of ``scan``.

    Args:
        scan: :class:`~pipeline.io.image.Scan` (HU (z, y, x) and its geometry).
        lung: ``(mask_zyx, Geometry)`` lung mask from the preprocessing (any grid), or None: it
            keeps the lesion apart from the chest wall and mediastinum (:func:`_allowed`).
        prior: ``(mask_zyx, Geometry)`` the segmenter's component of this finding, or None.
        midline_mm: world x of the body midline (default: from ``lung``).
    """
    g = scan.geometry
    seed = np.asarray(seed_xyz_mm, float).reshape(3)
    if not g.contains_world(seed):
        return Measurement({"measured": False}, None, ["the point lies outside the scan's volume"])
    les = None
    for radius in ROI_RADII_MM:
        box, rg = roi(g, seed, radius)
        hu = scan.array_zyx[box]
        start = tuple(s.start for s in box)
        pr = _on_grid(prior[0], prior[1], rg) if prior is not None else None
        vox = rg.world_to_voxel_zyx(seed).reshape(3)
        allowed = aerated = None
        if lung is not None:  # the lesion's size inside the (convex-hull) lung mask sets the ball's size
            hull = _hull_core(lung, rg)
            rough = segment_lesion(hu, rg, vox, allowed=hull, prior=pr, start_zyx=start)
            allowed = _allowed(lung, rg, hu, max(CLOSE_MM, 1.5 * rough.inscribed_mm + 5.0))
            aerated = allowed
            if hull is not None and allowed is not None and rough.inscribed_mm > BIG_MM:
                allowed = allowed | hull  # a large lesion flattened on the wall: the hull holds it, the ball cannot
        les = segment_lesion(hu, rg, vox, allowed=allowed, prior=pr, start_zyx=start)
        if lung is not None and aerated is not None and not les.empty:
            inside = float(aerated[les.mask_zyx].mean())
            if inside < MIN_LUNG_SHARE:
                why = (f"not a lung lesion: {1 - inside:.0%} of the region lies outside the aerated lung "
                       "(mediastinum, heart or chest wall)")
                return Measurement({"measured": False}, None, [why])
        if not les.touches_edge:
            break
    notes = []
    if pr is not None and pr.any() and les is not None and not les.empty:
        les, leaked = _within_prior(les, pr)
        if leaked:
            notes.append(f"the region grew far beyond the segmenter's finding; kept within {PRIOR_MARGIN_MM:g} mm of it")
    if les is None or les.empty:
        return Measurement({"measured": False}, None, ["no lesion found at this point"])
    if les.touches_edge:
        notes.append(f"lesion reaches the {ROI_RADII_MM[-1]:g} mm measuring region; measurements are a lower bound")
    vals = measure_mask(les.mask_zyx, scan.array_zyx[tuple(slice(s, s + n) for s, n in
                                                          zip(les.start_zyx, les.mask_zyx.shape))],
                        g.spacing_zyx_mm)
    centroid = np.argwhere(les.mask_zyx).mean(axis=0) + np.asarray(les.start_zyx)
    cxyz = g.voxel_zyx_to_world(centroid).reshape(3)
    z = int(np.clip(np.rint(centroid[0]), 0, g.shape_zyx[0] - 1))
    mid = midline_x_mm(g, lung) if midline_mm is None else midline_mm
    out = {"measured": True, "coordX": float(cxyz[0]), "coordY": float(cxyz[1]), "coordZ": float(cxyz[2]),
           "image_number": image_number(scan, z), "side": "L" if cxyz[0] > mid else "R", **vals,
           "lungrads": category(vals["type"], vals["mean_diameter_mm"], vals["solid_mean_diameter_mm"]),
           "threshold_hu": round(les.threshold_hu, 1)}
    return Measurement(out, les, notes)
