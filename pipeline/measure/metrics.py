"""Measurements of a lesion mask: volume, axial long and short axis (Lung-RADS mean diameter),
maximal 3D diameter, HU statistics, the solid component, and the type.

Conventions (documented rules, research aids, not clinical measurements):

* *Axial plane* = the scan's image plane (index axes x, y); sizes in mm from the voxel spacing.
* *Long axis*: on each image, the largest distance between two points of the lesion's outline
  (the corners of its pixels, so a disc of diameter D measures D, not D minus one pixel); the image
  where it is largest is the measured one. *Short axis*: on that image, the longest chord
  perpendicular to the long axis (pixel columns across the long axis, their extent plus one pixel).
  *Mean diameter* = (long + short) / 2, rounded to 0.1 mm, as Lung-RADS v2022 asks.
* *Maximal 3D diameter*: largest distance between two voxel-corner points of the mask.
* *Solid component*: voxels at or above ``SOLID_HU`` (-200 HU: soft-tissue attenuation, well above
  ground glass, about half way between ground glass at -450 HU and tissue at 40 HU); measured like
  the lesion (its largest connected part: long/short axis, mean diameter) plus its volume.
* *Type*: ``calcified`` when the 90th HU percentile is >= ``CALCIFIED_HU`` (200 HU); ``mass`` when
  the mean diameter (the Lung-RADS size) is > ``MASS_MM`` (30 mm); else by the solid part's size
  relative to the lesion: ``solid`` when the solid component's volume is >= ``SOLID_FRACTION`` (40 %) of the lesion's (the
  partial-volume rim of a small solid nodule falls below -200 HU), ``part-solid`` when there is a
  solid component of at least ``MIN_SOLID_MM3`` (a 2 mm sphere), ``ground-glass`` otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

SOLID_HU = -200.0
CALCIFIED_HU = 200.0
MASS_MM = 30.0
SOLID_FRACTION = 0.40
MIN_SOLID_MM3 = float(np.pi / 6 * 2.0 ** 3)
TYPES = ("solid", "part-solid", "ground-glass", "calcified", "mass")


@dataclass
class Axes:
    """Axial long / short axis (mm) and the 0-based z index of the image they were taken on."""

    long_mm: float
    short_mm: float
    z: int

    @property
    def mean_mm(self) -> float:
        return round((self.long_mm + self.short_mm) / 2.0 + 1e-9, 1)


def _corners_2d(mask_yx: np.ndarray, sy: float, sx: float) -> np.ndarray:
    """(N, 2) world-scaled (y, x) corner points of the mask's boundary pixels."""
    edge = mask_yx & ~ndi.binary_erosion(mask_yx)
    iy, ix = np.nonzero(edge)
    off = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    pts = (np.stack([iy, ix], 1)[:, None, :] + off[None]).reshape(-1, 2)
    return pts * np.array([sy, sx])


def _diameter(points: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Largest pairwise distance (and its two end points), over the convex hull's vertices."""
    pts = np.unique(points, axis=0)
    if len(pts) > 3:
        try:
            from scipy.spatial import ConvexHull

            pts = pts[ConvexHull(pts).vertices]
        except Exception:  # noqa: BLE001, S110 - degenerate (collinear / flat) point sets: use them all
            pass
    d = np.linalg.norm(pts[:, None, :] - pts[None, :, :], axis=-1)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    return float(d[i, j]), pts[i], pts[j]


def axial_axes(mask_zyx: np.ndarray, spacing_zyx_mm) -> Axes:
    """Long and short axis on the image where the long axis is largest (see the module docstring)."""
    _, sy, sx = (float(v) for v in spacing_zyx_mm)
    best = Axes(0.0, 0.0, 0)
    best_ends = None
    for z in np.flatnonzero(mask_zyx.reshape(mask_zyx.shape[0], -1).any(axis=1)):
        pts = _corners_2d(mask_zyx[z], sy, sx)
        length, a, b = _diameter(pts)
        if length > best.long_mm:
            best, best_ends = Axes(length, 0.0, int(z)), (a, b)
    if best_ends is None:
        return best
    a, b = best_ends
    u = (b - a) / max(np.linalg.norm(b - a), 1e-9)
    v = np.array([-u[1], u[0]])
    iy, ix = np.nonzero(mask_zyx[best.z])
    p = np.stack([iy * sy, ix * sx], 1)
    pu, pv = p @ u, p @ v
    pix = float(min(sy, sx))
    bins = np.floor((pu - pu.min()) / pix).astype(int)
    lo = np.full(bins.max() + 1, np.inf)
    hi = np.full(bins.max() + 1, -np.inf)
    np.minimum.at(lo, bins, pv)
    np.maximum.at(hi, bins, pv)
    # a chord's extent plus one pixel's width across it (pixel centres -> pixel edges)
    width = abs(v[0]) * sy + abs(v[1]) * sx
    best.short_mm = float(min(np.max(hi - lo) + width, best.long_mm))
    return best


def max_diameter_3d(mask_zyx: np.ndarray, spacing_zyx_mm) -> float:
    """Largest distance (mm) between two voxel-corner points of the mask."""
    sp = np.asarray(spacing_zyx_mm, float)
    edge = mask_zyx & ~ndi.binary_erosion(mask_zyx)
    idx = np.argwhere(edge).astype(float)
    if len(idx) == 0:
        return 0.0
    off = np.array([[a, b, c] for a in (-0.5, 0.5) for b in (-0.5, 0.5) for c in (-0.5, 0.5)])
    pts = ((idx[:, None, :] + off[None]).reshape(-1, 3)) * sp
    return _diameter(pts)[0]


def largest_part(mask_zyx: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask_zyx, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask_zyx
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def nodule_type(volume_mm3: float, solid_mm3: float, mean_diameter_mm: float, hu_p90: float) -> str:
    """One of :data:`TYPES` by the module's documented rules."""
    if hu_p90 >= CALCIFIED_HU:
        return "calcified"
    if mean_diameter_mm > MASS_MM:
        return "mass"
    if volume_mm3 > 0 and solid_mm3 >= SOLID_FRACTION * volume_mm3:
        return "solid"
    if solid_mm3 >= MIN_SOLID_MM3:
        return "part-solid"
    return "ground-glass"


def measure_mask(mask_zyx: np.ndarray, hu_zyx: np.ndarray, spacing_zyx_mm) -> dict:
    """All measurements of one lesion mask (bool, (z, y, x)) with its HU values, spacing (z, y, x) mm.
    Keys carry their units; see the module docstring."""
    sp = np.asarray(spacing_zyx_mm, float)
    voxel_mm3 = float(np.prod(sp))
    n = int(mask_zyx.sum())
    vol = n * voxel_mm3
    vals = np.asarray(hu_zyx)[mask_zyx].astype(np.float64)
    ax = axial_axes(mask_zyx, sp)
    solid = mask_zyx & (np.asarray(hu_zyx) >= SOLID_HU)
    solid_mm3 = float(solid.sum()) * voxel_mm3
    sax = axial_axes(largest_part(solid), sp) if solid.any() else Axes(0.0, 0.0, 0)
    p90 = float(np.percentile(vals, 90)) if n else float("nan")
    return {
        "volume_mm3": round(vol, 1),
        "equivalent_diameter_mm": round(float(np.cbrt(6 * vol / np.pi)), 2),
        "long_axis_mm": round(ax.long_mm, 1),
        "short_axis_mm": round(ax.short_mm, 1),
        "mean_diameter_mm": ax.mean_mm,
        "axes_slice_index": ax.z,
        "max_diameter_3d_mm": round(max_diameter_3d(mask_zyx, sp), 1),
        "mean_hu": round(float(vals.mean()), 1) if n else float("nan"),
        "median_hu": round(float(np.median(vals)), 1) if n else float("nan"),
        "solid_volume_mm3": round(solid_mm3, 1),
        "solid_mean_diameter_mm": sax.mean_mm,
        "type": nodule_type(vol, solid_mm3, ax.mean_mm, p90) if n else "",
    }
