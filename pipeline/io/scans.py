"""Read and write CT scans with exact geometry.

Supported inputs: MetaImage (``.mhd``/``.mha``, the LUNA16 format), NIfTI
(``.nii``/``.nii.gz``), NRRD (``.nrrd``/``.nhdr``) and DICOM series folders.
Everything goes through SimpleITK so that origin, spacing and direction are read
the way ITK (and 3D Slicer, and the LUNA16 organisers) read them; NIfTI's RAS
storage is converted to LPS by ITK itself.

The volume is returned as a ``(z, y, x)`` array in Hounsfield units plus a
:class:`~pipeline.io.geometry.Geometry`. Patient-identifying DICOM header values
are never read into :class:`Scan` and never appear in error messages.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DataError
from pipeline.io.geometry import Geometry

VOLUME_SUFFIXES = (".mhd", ".mha", ".nii", ".nii.gz", ".nrrd", ".nhdr")
"""File suffixes read as single volumes (a folder is read as a DICOM series)."""

# DICOM tags we read (none identifies the patient).
_TAG_MODALITY = "0008|0060"
_TAG_SERIES_UID = "0020|000e"
_TAG_POSITION = "0020|0032"
_TAG_ORIENTATION = "0020|0037"


@dataclass
class Scan:
    """A CT volume in HU.

    Attributes:
        array_zyx: voxel values, shape (z, y, x), HU (int16 for integer sources, else float32).
        geometry: the voxel grid (origin/spacing/direction in xyz mm, shape in zyx).
        seriesuid: LUNA16 series UID (file stem for files, SeriesInstanceUID for DICOM).
        path: where it was read from.
        meta: non-identifying facts (``format``, ``modality``, ``n_slices``).
    """

    array_zyx: np.ndarray
    geometry: Geometry
    seriesuid: str
    path: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def scan_format(path: str | os.PathLike) -> str:
    """Return ``'mhd' | 'nifti' | 'nrrd' | 'dicom'`` for a path, or raise DataError."""
    p = Path(path)
    if p.is_dir():
        return "dicom"
    name = p.name.lower()
    if name.endswith((".mhd", ".mha")):
        return "mhd"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    raise DataError(
        path, f"unknown scan format; expected a folder (DICOM series) or one of {', '.join(VOLUME_SUFFIXES)}"
    )


def scan_id(path: str | os.PathLike) -> str:
    """File name without its scan suffix (``.../1.2.3.mhd`` -> ``1.2.3``)."""
    name = Path(path).name
    for suf in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def _check_mhd_header(path: Path) -> None:
    """Catch the MetaImage faults ITK reports badly: missing or truncated data files."""
    if path.suffix.lower() != ".mhd":
        return
    header: dict[str, str] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise DataError(path, f"cannot read header ({exc.strerror})") from None
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            header[k.strip()] = v.strip()
    data_file = header.get("ElementDataFile")
    if not data_file:
        raise DataError(path, "MetaImage header has no ElementDataFile")
    if data_file.upper() == "LOCAL" or " " in data_file or data_file.upper().startswith("LIST"):
        return
    raw = path.parent / data_file
    if not raw.exists():
        raise DataError(path, f"header points to missing data file '{data_file}'")
    if header.get("CompressedData", "False").lower() == "true":
        return
    try:
        dims = [int(v) for v in header["DimSize"].split()]
        etype = header["ElementType"]
    except (KeyError, ValueError):
        raise DataError(path, "MetaImage header lacks a valid DimSize or ElementType") from None
    sizes = {"MET_UCHAR": 1, "MET_CHAR": 1, "MET_USHORT": 2, "MET_SHORT": 2, "MET_UINT": 4,
             "MET_INT": 4, "MET_FLOAT": 4, "MET_DOUBLE": 8, "MET_LONG": 8, "MET_ULONG": 8}
    if etype in sizes:
        channels = int(header.get("ElementNumberOfChannels", "1") or 1)
        expected = int(np.prod(dims)) * sizes[etype] * channels
        actual = raw.stat().st_size
        if actual < expected:
            raise DataError(path, f"data file '{data_file}' is truncated: {actual} bytes, header needs {expected}")


def _to_hu_array(image: Any, path: Path) -> np.ndarray:
    import SimpleITK as sitk

    if image.GetDimension() != 3:
        raise DataError(path, f"expected a 3D volume, got {image.GetDimension()}D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(path, f"expected a scalar volume, got {image.GetNumberOfComponentsPerPixel()} components")
    arr = sitk.GetArrayFromImage(image)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise DataError(path, "volume contains NaN or infinite values")
        arr = arr.astype(np.float32, copy=False)
    elif arr.dtype != np.int16:
        lo, hi = int(arr.min()), int(arr.max())
        arr = arr.astype(np.int16) if lo >= -32768 and hi <= 32767 else arr.astype(np.float32)
    return arr


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
        raise DataError(p, "no such file or folder")
    fmt = scan_format(p)
    if fmt == "dicom":
        from pipeline.io.dicom import read_dicom_series

        return read_dicom_series(p, series_uid=series_uid)
    import SimpleITK as sitk

    _check_mhd_header(p)
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        first = next((ln for ln in str(exc).splitlines() if "rror" in ln), str(exc).splitlines()[0] if str(exc) else "")
        raise DataError(p, f"unreadable {fmt} file ({first.strip()[:200]})") from None
    try:
        geometry = Geometry.from_sitk(image)
    except ValueError as exc:
        raise DataError(p, f"invalid geometry: {exc}") from None
    arr = _to_hu_array(image, p)
    return Scan(arr, geometry, scan_id(p), str(p), {"format": fmt, "modality": "CT"})


def to_sitk(array_zyx: np.ndarray, geometry: Geometry) -> Any:
    """Wrap a (z, y, x) array as a SimpleITK image carrying ``geometry``."""
    import SimpleITK as sitk

    if tuple(array_zyx.shape) != tuple(geometry.shape_zyx):
        raise ValueError(f"array shape {array_zyx.shape} != geometry shape_zyx {geometry.shape_zyx}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
    return geometry.apply_to_sitk(image)


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


def find_scans(root: str | os.PathLike) -> list[Path]:
    """List scan inputs under ``root``: volume files, and folders holding ``.dcm``-like files.

    ``.raw``/``.zraw`` data files are skipped (their ``.mhd`` header is listed). A folder is
    listed when it directly holds files that are not volumes (candidate DICOM slices).
    """
    r = Path(root)
    if r.is_file():
        return [r]
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(r):
        dirnames.sort()
        d = Path(dirpath)
        dicom_like = False
        for fn in sorted(filenames):
            low = fn.lower()
            if low.startswith("."):
                continue
            if low.endswith(VOLUME_SUFFIXES):
                out.append(d / fn)
            elif low.endswith((".raw", ".zraw", ".csv", ".json", ".txt", ".md", ".html", ".png")):
                continue
            else:
                dicom_like = True
        if dicom_like:
            out.append(d)
    return out
