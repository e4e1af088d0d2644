"""The one validation every reader's result goes through (mhd/mha, NRRD, NIfTI, DICOM).

Rules (each error is a one-line :class:`~pipeline.errors.DataError` naming the file; each
warning a logged line naming the file):

====================================  =========  =================================================
check                                 outcome    why
====================================  =========  =================================================
any voxel NaN or +-inf                error      a damaged volume must not be analysed as clean
all voxels >= 0 (e.g. uint 0..4095)   error      CT holds air (~-1000 HU): a rescale of -1024
                                                 is missing, the values are not HU
any |voxel| > 100 000                 error      not HU (float junk, wrong scaling)
spacing <= 0 or non-finite            error      a broken header
spacing < 0.1 mm or > 10 mm           error      no CT grid has it: wrong units (m, cm) or header
in-plane spacing > 2 mm               warning    small nodules may be missed
slice spacing > 5 mm                  warning    small nodules may be missed
an axis with fewer than 2 voxels      error      a single slice is not a volume
direction not orthonormal             error      world <-> voxel would be wrong
DICOM Modality not CT                 error      (names the modality)
DICOM Modality missing                warning    read as CT
====================================  =========  =================================================

Axis order: ``spacing_xyz_mm`` is (x, y, z) mm (x, y in-plane, z between slices); arrays are
(z, y, x).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError
from pipeline.io.geometry import Geometry
from pipeline.io.image import Scan, Volume, hu_dtype

log = logging.getLogger(__name__)

MIN_SPACING_MM = 0.1
MAX_SPACING_MM = 10.0
MAX_ABS_HU = 100_000.0  # extended-scale CT reaches ~30 000 HU; padding values ~-32 768
WARN_INPLANE_MM = 2.0
WARN_SLICE_MM = 5.0


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"


def check_spacing(spacing_xyz_mm, path: str | Path) -> tuple[float, float, float]:
    """Spacing (x, y, z) mm: error when <= 0, non-finite, < 0.1 or > 10 mm; warning when coarse."""
    sp = np.asarray(spacing_xyz_mm, dtype=float).ravel()
    if sp.size != 3:
        raise DataError(path, f"spacing has {sp.size} values; a CT volume needs 3 (x, y, z)")
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise DataError(path, f"voxel spacing (x, y, z) = {_fmt(sp)} mm: every spacing must be a positive number")
    if np.any(sp > MAX_SPACING_MM) or np.any(sp < MIN_SPACING_MM):
        raise DataError(path, f"voxel spacing (x, y, z) = {_fmt(sp)} mm is outside {MIN_SPACING_MM:g} to "
                              f"{MAX_SPACING_MM:g} mm: not a CT grid (wrong units or a broken header?)")
    if max(sp[0], sp[1]) > WARN_INPLANE_MM:
        log.warning("%s: in-plane spacing %s mm is coarser than %g mm; small nodules may be missed",
                    path, _fmt(sp[:2]), WARN_INPLANE_MM)
    if sp[2] > WARN_SLICE_MM:
        log.warning("%s: slice spacing %g mm is coarser than %g mm; small nodules may be missed",
                    path, sp[2], WARN_SLICE_MM)
    return (float(sp[0]), float(sp[1]), float(sp[2]))


def check_geometry(vol: Volume, path: str | Path) -> Geometry:
    """Validated :class:`Geometry` of a volume (spacing rules, origin, direction, shape)."""
    spacing = check_spacing(vol.spacing_xyz_mm, path)
    origin = np.asarray(vol.origin_xyz_mm, dtype=float).ravel()
    if origin.size != 3 or not np.all(np.isfinite(origin)):
        raise DataError(path, f"origin {_fmt(origin)} is not 3 finite numbers")
    d = np.asarray(vol.direction, dtype=float)
    if d.shape != (3, 3) or not np.all(np.isfinite(d)) or not np.allclose(d.T @ d, np.eye(3), atol=1e-3):
        raise DataError(path, "direction cosines are not orthonormal; world <-> voxel cannot be computed")
    shape = tuple(int(n) for n in vol.array_zyx.shape)
    if len(shape) != 3:
        raise DataError(path, f"{len(shape)}D array; a CT scan is a 3D volume")
    if min(shape) < 2:
        raise DataError(path, f"shape (z, y, x) {shape}: fewer than 2 voxels along an axis; "
                              "a CT volume needs at least 2 slices")
    try:
        return Geometry(tuple(origin), spacing, d, shape)
    except ValueError as exc:  # pragma: no cover - the checks above cover Geometry's rules
        raise DataError(path, f"invalid geometry: {exc}") from None


def check_values(arr: np.ndarray, path: str | Path) -> None:
    """Voxel values: error on NaN/inf, on |value| > 100 000, and when nothing is below 0 (not HU)."""
    if arr.dtype.kind not in "iufb":
        raise DataError(path, f"voxel type {arr.dtype} is not a number; a CT scan holds one number per voxel")
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            n = int(arr.size - np.count_nonzero(finite))
            raise DataError(path, f"volume contains NaN or infinite values ({n} of {arr.size} voxels); "
                                  "the scan is damaged")
    check_byte_order(arr, path)
    lo, hi = float(arr.min()), float(arr.max())
    if max(abs(lo), abs(hi)) > MAX_ABS_HU:
        raise DataError(path, f"voxel values span {lo:g}..{hi:g} ({arr.dtype}): beyond +-{MAX_ABS_HU:g}, "
                              "not Hounsfield units")
    if lo >= 0:
        raise DataError(path, f"voxel values span {lo:g}..{hi:g} ({arr.dtype}) with none below 0: not "
                              "Hounsfield units (CT air is about -1000 HU); a rescale intercept/offset "
                              "of -1024 is likely missing")


PLAUSIBLE_HU = (-3100.0, 4100.0)  # air, padding (-2000, -3024), tissue, bone; metal is rare


def _plausible_share(values: np.ndarray) -> float:
    return float(np.mean((values >= PLAUSIBLE_HU[0]) & (values <= PLAUSIBLE_HU[1])))


def check_byte_order(arr: np.ndarray, path: str | Path) -> None:
    """Multi-byte integer voxels read with the wrong byte order (a ``.mhd`` whose
    ``BinaryDataByteOrderMSB`` contradicts the data) look like noise over +-32767 that no range
    check catches. Refused when under half of the voxels (a strided sample) lie in plausible HU
    (``PLAUSIBLE_HU``) as read while over 90 % would with the bytes swapped."""
    if arr.dtype.kind not in "iu" or arr.dtype.itemsize < 2 or arr.size == 0:
        return
    sample = arr.reshape(-1)[:: max(1, arr.size // 200_000)]
    as_read = _plausible_share(sample.astype(np.float64))
    if as_read >= 0.5:
        return
    swapped = _plausible_share(sample.byteswap().astype(np.float64))
    if swapped > 0.9:
        raise DataError(path, f"voxel bytes are in the other byte order: as read {as_read:.0%} of voxels are "
                              f"plausible HU, swapped {swapped:.0%} (the header's byte-order flag, e.g. "
                              "BinaryDataByteOrderMSB, contradicts the data)")


def check_modality(modality: str, path: str | Path) -> None:
    """DICOM Modality: missing -> warning (read as CT); anything but CT -> error naming it."""
    m = (modality or "").strip().upper()
    if not m:
        log.warning("%s: DICOM series has no Modality tag; reading it as CT", path)
    elif m != "CT":
        raise DataError(path, f"not a CT series (modality {m})")


def make_scan(vol: Volume, seriesuid: str, path: str | Path, meta: dict[str, Any]) -> Scan:
    """The one exit of every reader: validate geometry and values, return the :class:`Scan`."""
    geometry = check_geometry(vol, path)
    check_values(vol.array_zyx, path)
    return Scan(hu_dtype(vol.array_zyx), geometry, seriesuid, str(path), dict(meta))
