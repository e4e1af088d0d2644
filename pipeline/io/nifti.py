"""NIfTI (``.nii``/``.nii.gz``, NIfTI-1 and -2) through nibabel.

Why not SimpleITK: its NIfTI reader returns 0 where the file holds NaN or inf, so a damaged
scan would pass as clean. nibabel keeps the stored values; this module converts them to the
Geometry SimpleITK would give (tested against it):

* affine: picked as ITK picks it (:func:`choose_affine`); RAS -> LPS by negating the x and y
  rows (``LPS = diag(-1, -1, 1) @ RAS``);
* spacing = column norms of the 3x3 part (mm), direction = its normalised columns (column j =
  world direction of index axis j), origin = the translation (x, y, z mm);
* data ``[i, j, k]`` -> array ``(z, y, x) = (k, j, i)``; ``scl_slope``/``scl_inter`` applied
  (a slope of 0 or NaN means "no scaling", as the standard says);
* a 4D image with one time point is read as 3D (logged warning); 2D and real 4D are refused.
"""
from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.io.image import Volume

log = logging.getLogger(__name__)

_LPS = np.diag([-1.0, -1.0, 1.0])


def _orthogonal(m: np.ndarray) -> bool:
    norms = np.linalg.norm(m, axis=0)
    if not np.all(np.isfinite(m)) or np.any(norms <= 0):
        return False
    d = m / norms
    return bool(np.allclose(d.T @ d, np.eye(3), atol=1e-4))


def choose_affine(header, path: Path) -> np.ndarray:
    """4x4 RAS affine (index ijk -> world mm), picked as SimpleITK 2.5 / ITK 5.4 pick it:

    1. the sform when its code is 1 (scanner anatomical) and its axes are orthogonal;
    2. else the qform when its code is set (a sheared scanner sform: warning);
    3. else an sform with any other code when orthogonal (sheared: DataError);
    4. else (both codes 0, Analyze-style) ``pixdim`` spacing, identity LPS direction, origin 0.

    An sform whose axis lengths disagree with ``pixdim`` is followed (the standard's rule),
    with a warning: SimpleITK would take the spacing from ``pixdim`` instead.
    """
    sform, scode = header.get_sform(coded=True)
    qform, qcode = header.get_qform(coded=True)
    s_ok = bool(scode) and sform is not None and _orthogonal(sform[:3, :3])
    if s_ok and (scode == 1 or not qcode):
        zooms = np.asarray(header.get_zooms()[:3], dtype=float)
        norms = np.linalg.norm(sform[:3, :3], axis=0)
        if not np.allclose(norms, zooms, rtol=1e-4, atol=1e-6):
            log.warning("%s: NIfTI sform axis lengths %s mm disagree with pixdim %s mm; using the sform",
                        path, np.round(norms, 4).tolist(), np.round(zooms, 4).tolist())
        return np.asarray(sform, dtype=float)
    if qcode and qform is not None:
        if scode == 1:
            log.warning("%s: NIfTI sform has non-orthogonal (sheared) axes; using the qform", path)
        return np.asarray(qform, dtype=float)
    if scode:
        raise DataError(path, "NIfTI sform has non-orthogonal (sheared) axes and there is no qform; "
                              "the grid cannot be expressed as origin, spacing and direction")
    log.warning("%s: NIfTI header sets neither qform nor sform; assuming an axis-aligned LPS grid at origin 0",
                path)
    zx, zy, zz = (float(z) for z in header.get_zooms()[:3])
    return np.diag([-zx, -zy, zz, 1.0])  # RAS of LPS identity: what ITK returns for Analyze-style headers


def _load(path: Path):
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    if path.stat().st_size == 0:
        raise DataError(path, "empty file (0 bytes)")
    try:
        img = nib.load(str(path))
    except (ImageFileError, HeaderDataError, ValueError) as exc:
        log.debug("%s: nibabel: %s", path, " ".join(str(exc).split())[:300])
        raise DataError(path, "unreadable NIfTI file: not a valid NIfTI header") from None
    except (FileNotFoundError, PermissionError):
        raise  # read_scan words these
    except (EOFError, OSError, zlib.error) as exc:
        log.debug("%s: nibabel: %s", path, " ".join(str(exc).split())[:300])
        raise DataError(path, "unreadable NIfTI file: truncated or corrupt (gzip) data") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(path, f"unreadable NIfTI file: holds a {type(img).__name__}")
    # nibabel "fixes" pixdim <= 0 to 1 (or |pixdim|) while loading: check what the file says
    with nib.openers.ImageOpener(str(path)) as f:
        stored = type(img.header).from_fileobj(f, check=False)
    pix = np.asarray(stored["pixdim"][1:4], dtype=float)
    if not np.all(np.isfinite(pix)) or np.any(pix <= 0):
        shown = "(" + ", ".join(f"{v:g}" for v in pix) + ")"
        raise DataError(path, f"voxel spacing (pixdim x, y, z) = {shown} mm: every spacing must be a positive number")
    return img


def _data_zyx(img, path: Path) -> np.ndarray:
    """Scaled voxel values, shape (z, y, x); int16/int32 kept integer when the scaling is integral."""
    hdr = img.header
    if not path.name.lower().endswith(".gz"):
        nvox = int(np.prod(img.shape, dtype=np.int64))
        expected = int(img.dataobj.offset) + nvox * hdr.get_data_dtype().itemsize
        actual = path.stat().st_size
        if actual < expected:
            raise DataError(path, f"truncated data file: expected {expected} bytes, found {actual}")
    try:
        raw = np.asarray(img.dataobj.get_unscaled())
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        log.debug("%s: nibabel: %s", path, " ".join(str(exc).split())[:300])
        raise DataError(path, "truncated or corrupt NIfTI data (the data ends before the header's size)") from None
    if raw.dtype.kind not in "iuf":
        raise DataError(path, f"NIfTI data type {hdr.get_data_dtype()} is not a scalar number; "
                              "a CT scan holds one number per voxel")
    slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    if (slope, inter) == (1.0, 0.0) and raw.dtype.kind in "iu":
        arr = raw
    elif raw.dtype.kind in "iu" and slope.is_integer() and inter.is_integer() and raw.size and \
            max(abs(int(raw.min())), abs(int(raw.max()))) * abs(slope) + abs(inter) < 2**31:
        arr = raw.astype(np.int32)
        arr *= int(slope)
        arr += int(inter)
    else:
        arr = raw.astype(np.float32)
        if (slope, inter) != (1.0, 0.0):
            arr *= np.float32(slope)
            arr += np.float32(inter)
    arr = arr.reshape(arr.shape[:3])
    return np.ascontiguousarray(arr.transpose(2, 1, 0))


_UNIT_MM = {"meter": 1000.0, "mm": 1.0, "micron": 0.001, "unknown": 1.0}


def _unit_to_mm(header, path: Path) -> float:
    """Factor from the header's spatial unit (``xyzt_units``) to mm: metres and microns are
    converted (logged); "unknown" (0, most files) is read as mm, as SimpleITK and nibabel do."""
    unit = header.get_xyzt_units()[0]
    factor = _UNIT_MM.get(unit, 1.0)
    if factor != 1.0:
        log.warning("%s: NIfTI spatial unit is %s (xyzt_units); spacing and origin converted to mm", path, unit)
    return factor


def read_nifti(path: str | Path) -> Volume:
    """Read a NIfTI file into a :class:`Volume` ((z, y, x) array; LPS origin/spacing/direction)."""
    path = Path(path)
    img = _load(path)
    shape = tuple(int(n) for n in img.shape)
    if len(shape) < 3:
        raise DataError(path, f"{len(shape)}D image (shape {shape}); a CT scan is a 3D volume")
    extra = shape[3:]
    if any(n > 1 for n in extra):
        what = f"{extra[0]} time points" if len(extra) == 1 else f"extra dimensions {extra}"
        raise DataError(path, f"{len(shape)}D image with {what} (shape {shape}); a CT scan is one 3D volume")
    if extra:
        log.warning("%s: %dD NIfTI with one time point (shape %s), read as the 3D volume it holds",
                    path, len(shape), shape)
    aff = _LPS @ choose_affine(img.header, path)[:3, :]
    aff = aff * _unit_to_mm(img.header, path)
    m = aff[:, :3]
    spacing = np.linalg.norm(m, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        direction = m / np.where(spacing > 0, spacing, 1.0)
    return Volume(_data_zyx(img, path), tuple(aff[:, 3].tolist()), tuple(spacing.tolist()), direction)
