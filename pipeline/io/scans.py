"""Read and write CT scans with exact geometry: the entry points the stages use.

Supported inputs: MetaImage (``.mhd``/``.mha``, the LUNA16 format) and NRRD (``.nrrd``/``.nhdr``)
through SimpleITK (:mod:`pipeline.io.itkfile`), NIfTI (``.nii``/``.nii.gz``) through nibabel
(:mod:`pipeline.io.nifti`: keeps NaN/inf that SimpleITK turns into 0; RAS converted to LPS), and
DICOM series folders (:mod:`pipeline.io.dicom`). Every reader's result passes the same checks
(:mod:`pipeline.io.validate`): non-finite voxels, values that cannot be HU, implausible spacing,
non-CT modality.

The volume is returned as a ``(z, y, x)`` array in Hounsfield units plus a
:class:`~pipeline.io.geometry.Geometry`. Patient-identifying DICOM header values
are never read into :class:`Scan` and never appear in error messages.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.io.discover import find_scans
from pipeline.io.formats import VOLUME_SUFFIXES, display_path, scan_format, scan_id
from pipeline.io.geometry import Geometry
from pipeline.io.image import Scan, to_sitk
from pipeline.io.validate import make_scan

__all__ = [
    "VOLUME_SUFFIXES",
    "Scan",
    "find_scans",
    "read_scan",
    "scan_format",
    "scan_id",
    "to_sitk",
    "write_scan",
]


def read_scan(path: str | os.PathLike, *, series_uid: str | None = None) -> Scan:
    """Read a CT scan from a volume file or a DICOM series folder.

    Args:
        path: ``.mhd/.mha/.nii/.nii.gz/.nrrd/.nhdr`` file, or a folder holding one CT series.
        series_uid: for DICOM folders holding several series, which one to read.

    Returns:
        :class:`Scan` with ``array_zyx`` in HU, shape (z, y, x).

    Raises:
        DataError: one-line message naming the path and the reason.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(p, "no such file or folder" + (" (a link to a missing target)" if p.is_symlink() else ""))
    fmt = scan_format(p)
    if fmt == "dicom":
        from pipeline.io.dicom import read_dicom_series

        return read_dicom_series(p, series_uid=series_uid)
    if not p.is_file():
        raise DataError(p, "not a regular file")
    if not os.access(p, os.R_OK):
        raise DataError(p, "permission denied")
    try:
        if fmt == "nifti":
            from pipeline.io.nifti import read_nifti

            vol = read_nifti(p)
        else:
            from pipeline.io.itkfile import read_itk_file

            vol = read_itk_file(p, fmt)
    except PermissionError:
        raise DataError(p, "permission denied") from None
    except OSError as exc:
        raise DataError(p, f"cannot read file ({exc.strerror or type(exc).__name__})") from None
    return make_scan(vol, display_path(scan_id(p)), p, {"format": fmt, "modality": "CT"})


def _atomic_target_dir(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))


def write_scan(array_zyx: np.ndarray, geometry: Geometry, path: str | os.PathLike,
               *, compress: bool = False) -> Path:
    """Write a (z, y, x) volume with its geometry, atomically.

    The format follows the suffix (``.mhd`` writes ``.mhd`` + ``.raw`` like LUNA16,
    ``.nii.gz``, ``.nrrd``...). Files are written in a temporary folder next to the
    target and renamed into place, data before header, so an interrupted write never
    leaves a header that looks complete.
    """
    import SimpleITK as sitk

    p = Path(path)
    fmt = scan_format(p) if not p.is_dir() else "dicom"
    if fmt == "dicom":
        raise ValueError("use pipeline.io.dicom.write_dicom_series for DICOM output")
    image = to_sitk(array_zyx, geometry)
    tmp = _atomic_target_dir(p)
    try:
        sitk.WriteImage(image, str(tmp / p.name), useCompression=compress)
        # data files first, the header (the file readers look for) last
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == p.name):
            os.replace(f, p.parent / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return p
