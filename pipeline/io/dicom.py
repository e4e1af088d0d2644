"""DICOM series reading (and writing, for tests and exports) through SimpleITK/GDCM.

Only geometry and modality tags are read; patient-identifying tags are never
copied into :class:`~pipeline.io.scans.Scan`, logs or error messages.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.io.geometry import Geometry

_SPACING_TOLERANCE = 0.01  # relative deviation of slice gaps allowed before rejecting


def _file_info(fn: str) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    import SimpleITK as sitk

    r = sitk.ImageFileReader()
    r.SetFileName(fn)
    r.ReadImageInformation()

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
    return modality, pos_v, ori_v


def list_series(folder: str | os.PathLike) -> list[str]:
    """Series Instance UIDs found directly in ``folder`` (GDCM's grouping)."""
    import SimpleITK as sitk

    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])


def read_dicom_series(folder: str | os.PathLike, *, series_uid: str | None = None):
    """Read one CT series from a folder of DICOM slices.

    Slices are ordered by their position along the slice normal (GDCM), rescale
    slope/intercept are applied (values in HU), and the series is rejected with a
    :class:`DataError` when it is not CT, has non-uniform slice spacing or a missing
    slice, or when the folder holds several series and ``series_uid`` is not given.
    """
    import SimpleITK as sitk

    from pipeline.io.scans import Scan, _to_hu_array

    folder = Path(folder)
    uids = list_series(folder)
    if not uids:
        raise DataError(folder, "no DICOM series found in folder")
    if series_uid is None:
        if len(uids) > 1:
            raise DataError(folder, f"folder holds {len(uids)} DICOM series; choose one (series_uid) or split the folder")
        series_uid = uids[0]
    elif series_uid not in uids:
        raise DataError(folder, f"series {series_uid} not found in folder ({len(uids)} series present)")
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid))
    if len(files) < 2:
        raise DataError(folder, f"series has {len(files)} slice(s); a CT volume needs at least 2")
    infos = [_file_info(f) for f in files]
    modalities = {m for m, _, _ in infos if m}
    if modalities and modalities != {"CT"}:
        raise DataError(folder, f"not a CT series (modality {', '.join(sorted(modalities))})")
    positions = [p for _, p, _ in infos]
    orients = [o for _, _, o in infos]
    if any(p is None for p in positions) or any(o is None for o in orients):
        raise DataError(folder, "slices lack ImagePositionPatient/ImageOrientationPatient")
    ori = orients[0]
    if any(not np.allclose(o, ori, atol=1e-4) for o in orients):
        raise DataError(folder, "slices have different orientations")
    normal = np.cross(ori[:3], ori[3:])
    dist = np.sort(np.array([float(np.dot(p, normal)) for p in positions]))
    gaps = np.diff(dist)
    if np.any(gaps < 1e-3):
        raise DataError(folder, "duplicate slice positions in series")
    step = float(np.median(gaps))
    if np.any(np.abs(gaps - step) > _SPACING_TOLERANCE * step + 1e-3):
        worst = float(gaps[np.argmax(np.abs(gaps - step))])
        kind = "missing slice" if worst > 1.5 * step else "non-uniform slice spacing"
        raise DataError(folder, f"{kind}: gap of {worst:.3f} mm where the series' spacing is {step:.3f} mm")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise DataError(folder, f"unreadable DICOM series ({str(exc).splitlines()[0][:160]})") from None
    # ITK derives z spacing from the first two slices; use the verified median instead
    sp = list(image.GetSpacing())
    sp[2] = step
    image.SetSpacing(sp)
    geometry = Geometry.from_sitk(image)
    arr = _to_hu_array(image, folder)
    return Scan(arr, geometry, series_uid, str(folder),
                {"format": "dicom", "modality": "CT", "n_slices": len(files)})


def write_dicom_series(array_zyx: np.ndarray, geometry: Geometry, folder: str | os.PathLike,
                       *, seriesuid: str, study_uid: str | None = None, modality: str = "CT",
                       extra_tags: dict[str, str] | None = None) -> Path:
    """Write a (z, y, x) int16 HU volume as a DICOM series (one file per slice), atomically.

    Stores int16 with RescaleIntercept 0 / slope 1. ``extra_tags`` (``"gggg|eeee": value``)
    are written on every slice (tests use this to plant identifiers that must not leak).
    """
    import SimpleITK as sitk

    from pipeline.io.scans import to_sitk

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
