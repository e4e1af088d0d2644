"""DICOM series reading (and writing, for tests and exports) through SimpleITK/GDCM.

Only geometry and modality tags are read; patient-identifying tags are never
copied into :class:`~pipeline.io.image.Scan`, logs or error messages.
Array order (z, y, x); origin/spacing (mm)/direction in ITK's (x, y, z) index order.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.io.formats import is_dicom_file
from pipeline.io.geometry import Geometry
from pipeline.io.image import Scan, sitk_to_volume, to_sitk
from pipeline.io.validate import check_modality, make_scan

log = logging.getLogger(__name__)

_SPACING_TOLERANCE = 0.01  # relative deviation of slice gaps allowed before rejecting
_SHOW_UIDS = 3             # series UIDs listed in a "several series" error


def _file_info(fn: str, folder: Path) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """(Modality, ImagePositionPatient, ImageOrientationPatient) of one slice file."""
    import SimpleITK as sitk

    r = sitk.ImageFileReader()
    r.SetFileName(fn)
    try:
        r.ReadImageInformation()
    except RuntimeError as exc:
        log.debug("%s: SimpleITK: %s", fn, " ".join(str(exc).split())[:300])
        raise DataError(folder, f"slice file '{Path(fn).name}' is not readable DICOM") from None

    def get(tag: str) -> str:
        return r.GetMetaData(tag).strip() if r.HasMetaDataKey(tag) else ""

    modality = get("0008|0060").upper()
    pos = get("0020|0032")
    ori = get("0020|0037")
    try:
        pos_v = np.array([float(v) for v in pos.split("\\")]) if pos else None
        ori_v = np.array([float(v) for v in ori.split("\\")]) if ori else None
    except ValueError:
        pos_v = ori_v = None
    if pos_v is not None and pos_v.shape != (3,) or ori_v is not None and ori_v.shape != (6,):
        pos_v = ori_v = None
    return modality, pos_v, ori_v


def list_series(folder: str | os.PathLike) -> list[str]:
    """Series Instance UIDs found directly in ``folder`` (GDCM's grouping; non-DICOM files ignored)."""
    import SimpleITK as sitk

    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])


def _slice_step(folder: Path, positions: list[np.ndarray], ori: np.ndarray) -> float:
    """Slice spacing (mm) along the slice normal; DataError on duplicate, missing or uneven slices."""
    normal = np.cross(ori[:3], ori[3:])
    dist = np.sort(np.array([float(np.dot(p, normal)) for p in positions]))
    gaps = np.diff(dist)
    if np.any(gaps < 1e-3):
        n = int(np.sum(gaps < 1e-3))
        raise DataError(folder, f"duplicate slice positions in series ({n} slice(s) repeat a position); "
                                "remove the duplicates")
    step = float(np.median(gaps))
    if np.any(np.abs(gaps - step) > _SPACING_TOLERANCE * step + 1e-3):
        worst = float(gaps[np.argmax(np.abs(gaps - step))])
        kind = "missing slice" if worst > 1.5 * step else "non-uniform slice spacing"
        raise DataError(folder, f"{kind}: gap of {worst:.3f} mm where the series' spacing is {step:.3f} mm")
    return step


def _unread_dicom_files(folder: Path, entries: list[Path], uids: list[str], files: list[str]) -> list[Path]:
    """Files with DICOM magic that GDCM put in none of the folder's series (damaged slices).

    ``files`` are the chosen series' files; other series are listed only when there are any."""
    import SimpleITK as sitk

    grouped = {os.path.realpath(f) for f in files}
    rest = [f for f in entries if os.path.realpath(f) not in grouped and f.is_file()]
    if rest and len(uids) > 1:
        grouped |= {os.path.realpath(f) for u in uids
                    for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), u)}
        rest = [f for f in rest if os.path.realpath(f) not in grouped]
    return [f for f in rest if is_dicom_file(f)]


def read_dicom_series(folder: str | os.PathLike, *, series_uid: str | None = None) -> Scan:
    """Read one CT series from a folder of DICOM slices.

    Slices are ordered by their position along the slice normal (GDCM), rescale
    slope/intercept are applied (values in HU), and the series is rejected with a
    :class:`DataError` when it is not CT, has duplicate slices, non-uniform slice spacing or a
    missing slice, or when the folder holds several series and ``series_uid`` is not given
    (the message lists them). A missing Modality tag is read as CT with a logged warning.
    The result passes :func:`pipeline.io.validate.make_scan` like every other reader's.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "not a folder (a DICOM series is read from the folder holding its slices)")
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(folder, f"cannot list folder ({exc.strerror or type(exc).__name__})") from None
    uids = list_series(folder)
    if not uids:
        has_dicom = any(f.is_file() and is_dicom_file(f) for f in entries)
        raise DataError(folder, "no DICOM series found in folder" + (
            " (its DICOM files are not readable images)" if has_dicom else " (no file in it is DICOM)"))
    if series_uid is None:
        if len(uids) > 1:
            shown = ", ".join(uids[:_SHOW_UIDS]) + (", ..." if len(uids) > _SHOW_UIDS else "")
            raise DataError(folder, f"folder holds {len(uids)} DICOM series ({shown}); "
                                    "choose one (series_uid) or split the folder")
        series_uid = uids[0]
    elif series_uid not in uids:
        raise DataError(folder, f"series {series_uid} not found in folder ({len(uids)} series present)")
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid))
    if len(files) < 2:
        raise DataError(folder, f"series has {len(files)} slice(s); a CT volume needs at least 2")
    infos = [_file_info(f, folder) for f in files]
    modalities = sorted({m for m, _, _ in infos if m})
    if len(modalities) > 1:
        raise DataError(folder, f"not a CT series (mixed modalities {', '.join(modalities)})")
    if len(modalities) == 1 and any(not m for m, _, _ in infos):
        log.warning("%s: some slices have no Modality tag; the others say %s", folder, modalities[0])
    check_modality(modalities[0] if modalities else "", folder)
    positions = [p for _, p, _ in infos]
    orients = [o for _, _, o in infos]
    if any(p is None for p in positions) or any(o is None for o in orients):
        raise DataError(folder, "slices lack ImagePositionPatient/ImageOrientationPatient")
    ori = orients[0]
    if any(not np.allclose(o, ori, atol=1e-4) for o in orients):
        raise DataError(folder, "slices have different orientations")
    unread = _unread_dicom_files(folder, entries, uids, files)
    try:
        step = _slice_step(folder, positions, ori)
    except DataError as exc:  # a gap may be a damaged file GDCM left out: say so
        if unread:
            raise DataError(folder, f"{exc.reason}; {len(unread)} DICOM file(s) in the folder could not be "
                                    f"read (damaged?), e.g. '{unread[0].name}'") from None
        raise
    if unread:
        log.warning("%s: %d DICOM file(s) in the folder belong to no readable series (damaged?), e.g. '%s'; "
                    "read the series without them", folder, len(unread), unread[0].name)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        log.debug("%s: SimpleITK: %s", folder, " ".join(str(exc).split())[:500])
        raise DataError(folder, "DICOM pixel data could not be read (damaged slice or unsupported "
                                "transfer syntax)") from None
    vol = sitk_to_volume(image, folder)
    # ITK derives z spacing from the first two slices; use the verified median instead
    vol.spacing_xyz_mm = (*vol.spacing_xyz_mm[:2], step)
    return make_scan(vol, series_uid, folder, {"format": "dicom", "modality": "CT", "n_slices": len(files)})


def write_dicom_series(array_zyx: np.ndarray, geometry: Geometry, folder: str | os.PathLike,
                       *, seriesuid: str, study_uid: str | None = None, modality: str = "CT",
                       extra_tags: dict[str, str] | None = None) -> Path:
    """Write a (z, y, x) int16 HU volume as a DICOM series (one file per slice), atomically.

    Stores int16 with RescaleIntercept 0 / slope 1. ``extra_tags`` (``"gggg|eeee": value``)
    are written on every slice (tests use this to plant identifiers that must not leak).
    """
    import SimpleITK as sitk

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    image = to_sitk(np.asarray(array_zyx).astype(np.int16), geometry)
    d = geometry.direction_matrix
    study_uid = study_uid or seriesuid.rsplit(".", 1)[0] + ".1"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    common = {
        "0008|0060": modality,
        "0020|000d": study_uid,
        "0020|000e": seriesuid,
        "0020|0037": "\\".join(f"{v:.6f}" for v in (*d[:, 0], *d[:, 1])),
        "0028|1052": "0",
        "0028|1053": "1",
        "0008|0008": "ORIGINAL\\PRIMARY\\AXIAL",
    }
    common.update(extra_tags or {})
    try:
        for k in range(image.GetDepth()):
            sl = image[:, :, k]
            for tag, value in common.items():
                sl.SetMetaData(tag, value)
            pos = geometry.voxel_zyx_to_world((k, 0, 0))
            sl.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in pos))
            sl.SetMetaData("0020|0013", str(k + 1))
            sl.SetMetaData("0008|0018", f"{seriesuid}.{k + 1}")
            sl.SetMetaData("0018|0050", f"{geometry.spacing_xyz_mm[2]:.6f}")
            writer.SetFileName(str(tmp / f"slice{k:04d}.dcm"))
            writer.Execute(sl)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
