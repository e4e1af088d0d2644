"""Geometry of a stack of DICOM slices (or the frames of an enhanced multi-frame file).

Given each slice's ImagePositionPatient (world x, y, z mm, LPS), the series' ImageOrientationPatient
and PixelSpacing, :func:`stack_geometry` orders the slices along the plane normal and checks that
they form one regular grid:

* **Positions rounded by the exporter.** Many exports round ImagePositionPatient to 0.1 mm
  (``ROUNDING_MM``). A gap between two neighbouring slices may therefore differ from the series'
  spacing by up to 0.1 mm (two roundings of 0.05 mm) without a slice being missing: the gaps are
  accepted within ``max(1 % of the spacing, ROUNDING_MM + 0.001 mm)``, never more than 40 % of the
  spacing, so a missing slice (a gap of twice the spacing) or a slice out of place is always refused.
  The slice spacing reported is the least-squares slope of position against slice number (not one
  rounded gap).
* **Gantry tilt.** With a tilted gantry the image planes are tilted while the table (and so each
  slice's origin) moves along the patient's axis: the slice-to-slice step is not along the plane
  normal and the stack is *sheared*. Read as a plain grid (origin, spacing along the normal,
  orthonormal direction) every voxel away from the first slice would sit in the wrong place, by
  ``tan(tilt) x distance``. Such a stack is flagged (``tilt_deg``) and :func:`deshear` resamples
  it, with SimpleITK, through the exact affine map of the acquired slices onto a regular grid in the
  same plane orientation (voxels outside the acquired field of view are air, -1024 HU).
* Slices with different PixelSpacing, size or orientation are refused with the values named.

Axis conventions as in :mod:`pipeline.io.geometry`: direction columns are the world directions of
index axes x (DICOM row direction), y (column direction), z (plane normal).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.io.geometry import Geometry

log = logging.getLogger(__name__)

ROUNDING_MM = 0.1        # ImagePositionPatient rounding tolerated (documented in docs/reliability.md)
_REL_TOLERANCE = 0.01    # relative gap deviation always tolerated
_MAX_REL_TOLERANCE = 0.4  # never tolerate more than this fraction of the spacing (a missing slice is 1.0)
OUTSIDE_FOV_HU = -1024.0


@dataclass(frozen=True)
class StackGeometry:
    """``order``: input slice indices sorted along the normal; ``geometry``: the regular grid of the
    sorted stack when it is not sheared (direction = row, column, normal); ``step_xyz_mm``: the
    fitted world step from one slice to the next; ``tilt_deg``: angle between that step and the
    plane normal (0 for an ordinary or a truly oblique series)."""

    order: np.ndarray
    geometry: Geometry
    step_xyz_mm: np.ndarray
    tilt_deg: float
    origin_xyz_mm: np.ndarray

    @property
    def sheared(self) -> bool:
        return self.tilt_deg > 0.0

    def index_to_world(self) -> np.ndarray:
        """3x3 A with ``world = origin + A @ (i, j, k)`` for the acquired (possibly sheared) stack."""
        d = self.geometry.direction_matrix
        sx, sy, _ = self.geometry.spacing_xyz_mm
        return np.column_stack([d[:, 0] * sx, d[:, 1] * sy, self.step_xyz_mm])


def check_uniform(path, files_or_frames: str, values: list, what: str, atol: float) -> None:
    """DataError when ``values`` (one per slice) are not all equal within ``atol``."""
    ref = np.asarray(values[0], dtype=float)
    for v in values[1:]:
        if not np.allclose(np.asarray(v, dtype=float), ref, atol=atol):
            a = ", ".join(f"{x:g}" for x in np.ravel(ref))
            b = ", ".join(f"{x:g}" for x in np.ravel(np.asarray(v, dtype=float)))
            raise DataError(path, f"{files_or_frames} of one series have different {what} ({a} and {b}); "
                                  "a volume needs one grid (export the series again, or split it)")


def gap_tolerance_mm(step_mm: float) -> float:
    """How far a slice gap may differ from the series' spacing (see the module docstring)."""
    return min(max(_REL_TOLERANCE * step_mm, ROUNDING_MM + 1e-3), _MAX_REL_TOLERANCE * step_mm)


def stack_geometry(path: str | Path, positions_xyz_mm: np.ndarray, orientation: np.ndarray,
                   pixel_spacing_rc_mm: tuple[float, float], shape_yx: tuple[int, int]) -> StackGeometry:
    """Order and check a slice stack; see the module docstring. Raises a one-line DataError for
    duplicate, missing or out-of-line slices."""
    pos = np.asarray(positions_xyz_mm, dtype=float).reshape(-1, 3)
    ori = np.asarray(orientation, dtype=float).reshape(6)
    row, col = ori[:3] / np.linalg.norm(ori[:3]), ori[3:] / np.linalg.norm(ori[3:])
    if abs(float(row @ col)) > 1e-3:
        raise DataError(path, "ImageOrientationPatient row and column directions are not perpendicular")
    normal = np.cross(row, col)
    dist = pos @ normal
    order = np.argsort(dist, kind="stable")
    d = dist[order]
    gaps = np.diff(d)
    if np.any(gaps < 1e-3):
        n = int(np.sum(gaps < 1e-3))
        raise DataError(path, f"duplicate slice positions in series ({n} slice(s) repeat a position); "
                              "remove the duplicates")
    step_med = float(np.median(gaps))
    tol = gap_tolerance_mm(step_med)
    dev = np.abs(gaps - step_med)
    if np.any(dev > tol):
        worst = float(gaps[np.argmax(dev)])
        kind = "missing slice" if worst > 1.5 * step_med else "non-uniform slice spacing"
        raise DataError(path, f"{kind}: gap of {worst:.3f} mm where the series' spacing is {step_med:.3f} mm "
                              f"(tolerance {tol:.3f} mm)")
    p = pos[order]
    k = np.arange(len(p), dtype=float)
    # least-squares line through the slice origins: p_k = p0 + k * step
    A = np.column_stack([np.ones_like(k), k])
    coef, *_ = np.linalg.lstsq(A, p, rcond=None)
    p0, step = coef[0], coef[1]
    resid = np.linalg.norm(p - (p0 + np.outer(k, step)), axis=1)
    if resid.max() > ROUNDING_MM + 0.01 * abs(float(step @ normal)) + 1e-3:
        bad = int(np.argmax(resid))
        raise DataError(path, f"slice origins do not lie on one line (slice {bad + 1} of {len(p)} is "
                              f"{resid[bad]:.2f} mm off); not a regular stack")
    along = float(step @ normal)
    inplane = step - along * normal
    drift_mm = float(np.linalg.norm(inplane)) * (len(p) - 1)
    dy, dx = float(pixel_spacing_rc_mm[0]), float(pixel_spacing_rc_mm[1])
    tilt = math.degrees(math.atan2(float(np.linalg.norm(inplane)), along))
    if drift_mm <= 0.5 * min(dx, dy) + ROUNDING_MM:
        tilt = 0.0
        step = along * normal
        p0 = p[0]
    direction = np.column_stack([row, col, normal])
    geometry = Geometry(origin_xyz_mm=tuple(p0 if tilt else p[0]), spacing_xyz_mm=(dx, dy, along),
                        direction=tuple(map(tuple, direction)), shape_zyx=(len(p), *shape_yx))
    return StackGeometry(order=order, geometry=geometry, step_xyz_mm=np.asarray(step), tilt_deg=tilt,
                         origin_xyz_mm=np.asarray(p0 if tilt else p[0]))


def deshear(array_zyx: np.ndarray, sg: StackGeometry) -> tuple[np.ndarray, Geometry]:
    """Resample a sheared (gantry-tilted) stack onto a regular grid: same plane orientation and
    in-plane spacing, slice spacing = the distance between planes along the normal; the in-plane
    extent grows to hold every acquired voxel. Linear interpolation (SimpleITK); voxels outside the
    acquired field of view are ``OUTSIDE_FOV_HU``. Returns ((z, y, x) array, its Geometry)."""
    import SimpleITK as sitk

    g = sg.geometry
    nz, ny, nx = array_zyx.shape
    A = sg.index_to_world()
    D = g.direction_matrix
    sp = np.asarray(g.spacing_xyz_mm)
    corners = np.array([[i, j, k] for i in (0, nx - 1) for j in (0, ny - 1) for k in (0, nz - 1)], dtype=float)
    u = ((corners @ A.T) @ D) / sp  # output-grid index of each acquired corner (origin at p0)
    lo, hi = np.floor(u.min(axis=0) + 1e-6), np.ceil(u.max(axis=0) - 1e-6)
    size = (hi - lo + 1).astype(int)
    origin = sg.origin_xyz_mm + D @ (lo * sp)
    src = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx, dtype=np.float32))  # physical = index
    inv = np.linalg.inv(A)
    tf = sitk.AffineTransform(3)
    tf.SetMatrix(inv.ravel().tolist())
    tf.SetTranslation((-inv @ sg.origin_xyz_mm).tolist())
    out = sitk.Resample(src, [int(v) for v in size], tf, sitk.sitkLinear, origin.tolist(), sp.tolist(),
                        D.ravel().tolist(), OUTSIDE_FOV_HU, sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(out)
    if np.issubdtype(array_zyx.dtype, np.integer):
        arr = np.rint(arr).astype(np.int16)
    geometry = Geometry(origin_xyz_mm=tuple(origin), spacing_xyz_mm=tuple(sp), direction=g.direction,
                        shape_zyx=arr.shape)
    return arr, geometry
