"""The scan type and its SimpleITK / array conversions: the leaf every reader and writer imports.

Axis order: arrays are ``(z, y, x)`` (``SimpleITK.GetArrayFromImage`` order); origin, spacing
(mm) and direction follow ITK's ``(x, y, z)`` index order (see :mod:`pipeline.io.geometry`).
Nothing here reads files or DICOM headers, so no patient identifier can pass through it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError
from pipeline.io.geometry import Geometry

log = logging.getLogger(__name__)


@dataclass
class Scan:
    """A CT volume in HU.

    Attributes:
        array_zyx: voxel values, shape (z, y, x), HU (int16 for integer sources, else float32).
        geometry: the voxel grid (origin/spacing/direction in xyz mm, shape in zyx).
        seriesuid: LUNA16 series UID (file stem for files, SeriesInstanceUID for DICOM).
        path: where it was read from.
        meta: non-identifying facts (``format``, ``modality``, ``n_slices``; DICOM:
            ``instance_numbers``, the InstanceNumber (frame number for a multi-frame file) of each
            z slice, what a viewer shows as the image number; ``gantry_tilt_deg`` when resampled;
            ``study_uid`` (StudyInstanceUID) and ``source_files`` (the files of z slice 0, 1, ...;
            one file for an enhanced multi-frame series): for studies.csv and the DICOM SEG/SR).
    """

    array_zyx: np.ndarray
    geometry: Geometry
    seriesuid: str
    path: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Volume:
    """What a reader hands to :func:`pipeline.io.validate.make_scan` before any check.

    ``array_zyx`` is (z, y, x) after rescale (slope/intercept applied); ``origin_xyz_mm``,
    ``spacing_xyz_mm`` (mm) and ``direction`` (3x3, column j = world direction of index axis j,
    LPS) are as found in the file, not yet validated.
    """

    array_zyx: np.ndarray
    origin_xyz_mm: tuple[float, ...]
    spacing_xyz_mm: tuple[float, ...]
    direction: Any


def hu_dtype(arr: np.ndarray) -> np.ndarray:
    """Floats -> float32; int16 kept; other integers -> int16 when they fit, else float32."""
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32, copy=False)
    if arr.dtype == np.int16:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.int16)
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    return arr.astype(np.int16) if lo >= -32768 and hi <= 32767 else arr.astype(np.float32)


def sitk_to_volume(image: Any, path: str | Path) -> Volume:
    """A 3D scalar SimpleITK image -> :class:`Volume` ((z, y, x) array, xyz geometry fields).

    A 4D image with one time point is read as 3D (logged warning); 2D, 4D with several time
    points, 5D+ and vector images are refused with a one-line :class:`DataError`.
    """
    dim = image.GetDimension()
    size = image.GetSize()
    if dim == 4:
        if size[3] != 1:
            raise DataError(path, f"4D image with {size[3]} time points (size {tuple(size)}); "
                                  "a CT scan is one 3D volume")
        log.warning("%s: 4D image with one time point, read as the 3D volume it holds", path)
        image = image[:, :, :, 0]
    elif dim != 3:
        raise DataError(path, f"{dim}D image (size {tuple(size)}); a CT scan is a 3D volume")
    ncomp = image.GetNumberOfComponentsPerPixel()
    if ncomp != 1:
        raise DataError(path, f"{ncomp} values per voxel (a colour or vector image); a CT scan has one")
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(image)
    return Volume(arr, tuple(image.GetOrigin()), tuple(image.GetSpacing()),
                  np.asarray(image.GetDirection(), dtype=float).reshape(3, 3))


def quiet_itk() -> None:
    """Keep ITK's own warning text (multi-line, with C++ file names) off stderr: the readers log
    what matters as one line, and ITK's exception text only at DEBUG."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)


def to_sitk(array_zyx: np.ndarray, geometry: Geometry) -> Any:
    """Wrap a (z, y, x) array as a SimpleITK image carrying ``geometry``."""
    import SimpleITK as sitk

    if tuple(array_zyx.shape) != tuple(geometry.shape_zyx):
        raise ValueError(f"array shape {array_zyx.shape} != geometry shape_zyx {geometry.shape_zyx}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
    return geometry.apply_to_sitk(image)
