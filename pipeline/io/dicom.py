"""DICOM series reading (and writing, for tests and exports) through SimpleITK/GDCM.

Only geometry and modality tags are read; patient-identifying tags are never
copied into :class:`~pipeline.io.image.Scan`, logs or error messages.
Array order (z, y, x); origin/spacing (mm)/direction in ITK's (x, y, z) index order.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.io.geometry import Geometry
from pipeline.io.image import Scan, Volume, quiet_itk, to_sitk
from pipeline.io.validate import check_modality, make_scan

log = logging.getLogger(__name__)

_SHOW_UIDS = 3             # series UIDs listed in a "several series" error


def list_series(folder: str | os.PathLike) -> list[str]:
    """Series Instance UIDs of the image files directly in ``folder`` (non-DICOM files, DICOMDIR
    and objects without pixel data ignored), sorted."""
    from pipeline.io.dicom_index import index_folder

    return sorted(index_folder(folder).series)


def _index(folder: Path, series_uid: str | None = None):
    """The folder's DICOM index: the files directly in it, or, when it holds none or a series is
    named, its whole tree (a CD/PACS export root, or a series split over sub-folders)."""
    from pipeline.io.dicom_index import index_folder

    if series_uid is not None:
        return index_folder(folder, recursive=True)
    idx = index_folder(folder)
    if not idx.series and not idx.damaged:
        deep = index_folder(folder, recursive=True)
        if deep.series or deep.damaged:
            return deep
        idx.directories += deep.directories
    return idx


def _choose_series(folder: Path, idx, series_uid: str | None) -> str:
    from pipeline.io.dicom_index import is_ct_volume_series

    uids = sorted(idx.series)
    if not uids:
        if idx.damaged:
            raise DataError(folder, f"no DICOM series found in folder (its {len(idx.damaged)} DICOM file(s) "
                                    "are not readable images)")
        if idx.directories or idx.non_image:
            raise DataError(folder, "no DICOM series found in folder (it holds a DICOMDIR index or DICOM "
                                    "objects without images only)")
        raise DataError(folder, "no DICOM series found in folder (no file in it is DICOM)")
    if series_uid is not None:
        if series_uid not in idx.series:
            raise DataError(folder, f"series {series_uid} not found in folder ({len(uids)} series present)")
        return series_uid
    if len(uids) == 1:
        return uids[0]
    volumes = [u for u in uids if is_ct_volume_series(idx.series[u])]
    if len(volumes) == 1:
        log.info("%s: reading CT series %s; %d other series (localizer, non-CT or single image) skipped",
                 folder, volumes[0], len(uids) - 1)
        return volumes[0]
    shown = ", ".join(uids[:_SHOW_UIDS]) + (", ..." if len(uids) > _SHOW_UIDS else "")
    raise DataError(folder, f"folder holds {len(uids)} DICOM series ({shown}); "
                            "choose one (series_uid) or split the folder")


@contextlib.contextmanager
def _itk_paths(files: list[Path]):
    """Paths SimpleITK can take: file names that are not valid UTF-8 (copied from a Windows share)
    crash SimpleITK's string conversion, so such files are reached through links with plain names in
    a temporary folder."""
    def ok(p: Path) -> bool:
        try:
            str(p).encode("utf-8")
            return True
        except UnicodeEncodeError:
            return False

    if all(ok(f) for f in files):
        yield [str(f) for f in files]
        return
    with tempfile.TemporaryDirectory(prefix="pipeline-dicom-") as tmp:
        links = []
        for i, f in enumerate(files):
            link = Path(tmp) / f"s{i:06d}.dcm"
            os.symlink(os.path.abspath(f), link)
            links.append(str(link))
        yield links


def _read_pixels(folder: Path, files: list[Path]) -> np.ndarray:
    """(z, y, x) HU array of classic single-frame slices in the given order (GDCM applies each
    slice's rescale slope/intercept); None when a file cannot be decoded."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    with _itk_paths(files) as names:
        reader.SetFileNames(names)
        try:
            return sitk.GetArrayFromImage(reader.Execute())
        except RuntimeError as exc:
            log.debug("%s: SimpleITK: %s", folder, " ".join(str(exc).split())[:500])
            return None


def _undecodable(files: list[Path]) -> list[Path]:
    """The files of a series that SimpleITK cannot decode one by one (truncated or damaged)."""
    import SimpleITK as sitk

    bad = []
    with _itk_paths(files) as names:
        for f, n in zip(files, names, strict=True):
            try:
                sitk.ReadImage(n)
            except RuntimeError:
                bad.append(f)
    return bad


def _check_slices(folder: Path, files) -> None:
    from pipeline.io.dicom_stack import check_uniform

    if any(f.position_xyz_mm is None for f in files) or any(f.orientation is None for f in files):
        raise DataError(folder, "slices lack ImagePositionPatient/ImageOrientationPatient")
    check_uniform(folder, "slices", [f.orientation for f in files], "orientations", 1e-4)
    if any(f.pixel_spacing_rc_mm is None for f in files):
        raise DataError(folder, "slices lack PixelSpacing; the in-plane voxel size is unknown")
    check_uniform(folder, "slices", [f.pixel_spacing_rc_mm for f in files], "PixelSpacing (mm)", 1e-4)
    check_uniform(folder, "slices", [(f.rows, f.cols) for f in files], "image sizes (rows, columns)", 0)


def _stack(folder: Path, files, damaged: list[Path]):
    from pipeline.io.dicom_stack import stack_geometry

    f0 = files[0]
    try:
        return stack_geometry(folder, np.array([f.position_xyz_mm for f in files]), np.array(f0.orientation),
                              f0.pixel_spacing_rc_mm, (f0.rows, f0.cols))
    except DataError as exc:  # a gap may be a damaged file left out: say so
        if damaged:
            raise DataError(folder, f"{exc.reason}; {len(damaged)} DICOM file(s) in the folder could not be "
                                    f"read (damaged?), e.g. '{damaged[0].name}'") from None
        raise


def _finish(folder: Path, arr: np.ndarray, sg, series_uid: str, meta: dict) -> Scan:
    from pipeline.io.dicom_stack import deshear

    if sg.sheared:
        arr, geometry = deshear(arr, sg)
        log.warning("%s: gantry tilt of %.1f degrees (slice origins step %.2f mm sideways per slice): "
                    "resampled onto a regular grid in the patient's coordinates", folder, sg.tilt_deg,
                    float(np.linalg.norm(sg.step_xyz_mm - sg.geometry.spacing_xyz_mm[2] *
                                         sg.geometry.direction_matrix[:, 2])))
        meta["gantry_tilt_deg"] = round(sg.tilt_deg, 2)
    else:
        geometry = sg.geometry
    vol = Volume(arr, geometry.origin_xyz_mm, geometry.spacing_xyz_mm, geometry.direction_matrix)
    return make_scan(vol, series_uid, folder, meta)


def series_files(folder: str | os.PathLike, series_uid: str | None = None) -> list[Path]:
    """The files :func:`read_dicom_series` reads for ``(folder, series_uid)`` (the chosen series'
    image files), plus any damaged DICOM file beside them; DataError as reading would raise."""
    folder = Path(folder)
    idx = _index(folder, series_uid)
    uid = _choose_series(folder, idx, series_uid)
    return sorted([f.path for f in idx.series[uid]] + list(idx.damaged))


def read_dicom_series(folder: str | os.PathLike, *, series_uid: str | None = None) -> Scan:
    """Read one CT series from a folder of DICOM slices (or of sub-folders holding them).

    The folder's own files are indexed; when it holds none, its whole tree (a CD/PACS export: a
    ``DICOMDIR`` and ``PT*/ST*/SE*`` folders, or one series split over several folders). Files are
    grouped by SeriesInstanceUID (:mod:`pipeline.io.dicom_index`); a DICOMDIR and objects without
    pixel data are ignored. Classic slices are ordered along the plane normal and checked
    (:mod:`pipeline.io.dicom_stack`: positions rounded to 0.1 mm accepted, missing/duplicate
    slices, mixed PixelSpacing/orientation/size refused, gantry tilt resampled onto a regular grid
    with a warning); rescale slope/intercept are applied (values in HU). An enhanced multi-frame
    CT file is read through its per-frame functional groups (:mod:`pipeline.io.dicom_multiframe`).
    Several series without ``series_uid``: the one CT volume among them is read (localizers,
    non-CT and single images skipped), else a DataError lists them. A missing Modality tag is read
    as CT with a logged warning. The result passes :func:`pipeline.io.validate.make_scan`.
    """
    quiet_itk()
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "not a folder (a DICOM series is read from the folder holding its slices)")
    try:
        os.listdir(folder)
    except OSError as exc:
        raise DataError(folder, f"cannot list folder ({exc.strerror or type(exc).__name__})") from None
    idx = _index(folder, series_uid)
    series_uid = _choose_series(folder, idx, series_uid)
    files = idx.series[series_uid]
    modalities = sorted({f.modality for f in files if f.modality})
    if len(modalities) > 1:
        raise DataError(folder, f"not a CT series (mixed modalities {', '.join(modalities)})")
    if len(modalities) == 1 and any(not f.modality for f in files):
        log.warning("%s: some slices have no Modality tag; the others say %s", folder, modalities[0])
    check_modality(modalities[0] if modalities else "", folder)
    if any(f.is_multiframe for f in files):
        from pipeline.io.dicom_multiframe import read_multiframe

        if len(files) > 1:
            raise DataError(folder, f"series is stored in {len(files)} multi-frame files; "
                                    "one enhanced CT file per series is supported")
        arr, sg = read_multiframe(files[0].path, folder)
        return _finish(folder, arr, sg, series_uid, {"format": "dicom", "modality": "CT",
                                                     "n_slices": int(arr.shape[0]), "multiframe": True,
                                                     "instance_numbers": [int(i) + 1 for i in sg.order],
                                                     "study_uid": files[0].study_uid,
                                                     "source_files": [str(files[0].path)]})
    if len(files) < 2:
        raise DataError(folder, f"series has {len(files)} slice(s); a CT volume needs at least 2")
    _check_slices(folder, files)
    damaged = list(idx.damaged)
    sg = _stack(folder, files, damaged)
    ordered = [files[i].path for i in sg.order]
    arr = _read_pixels(folder, ordered)
    if arr is None:  # some slice cannot be decoded: leave it out, then the stack must still be whole
        bad = set(_undecodable(ordered))
        if not bad or len(bad) == len(ordered):
            raise DataError(folder, "DICOM pixel data could not be read (damaged slice or unsupported "
                                    "transfer syntax)")
        damaged += sorted(bad)
        files = [f for f in files if f.path not in bad]
        if len(files) < 2:
            raise DataError(folder, f"series has {len(files)} readable slice(s); a CT volume needs at least 2")
        sg = _stack(folder, files, damaged)
        ordered = [files[i].path for i in sg.order]
        arr = _read_pixels(folder, ordered)
        if arr is None:
            raise DataError(folder, "DICOM pixel data could not be read (damaged slice or unsupported "
                                    "transfer syntax)")
    if damaged:
        log.warning("%s: %d DICOM file(s) in the folder belong to no readable series (damaged?), e.g. '%s'; "
                    "read the series without them", folder, len(damaged), damaged[0].name)
    if arr.shape != (len(ordered), files[0].rows, files[0].cols):
        raise DataError(folder, f"decoded pixel data has shape {arr.shape}, the headers say "
                                f"{(len(ordered), files[0].rows, files[0].cols)}")
    numbers = {f.path: f.instance_number for f in files}
    return _finish(folder, arr, sg, series_uid, {"format": "dicom", "modality": "CT", "n_slices": len(ordered),
                                                 "instance_numbers": [numbers[p] for p in ordered],
                                                 "study_uid": files[0].study_uid,
                                                 "source_files": [str(p) for p in ordered]})


def write_dicom_series(array_zyx: np.ndarray, geometry: Geometry, folder: str | os.PathLike,
                       *, seriesuid: str, study_uid: str | None = None, modality: str = "CT",
                       extra_tags: dict[str, str] | None = None, positions_xyz_mm: np.ndarray | None = None,
                       orientation: tuple[float, ...] | None = None, position_decimals: int = 6) -> Path:
    """Write a (z, y, x) int16 HU volume as a DICOM series (one file per slice), atomically.

    Stores int16 with RescaleIntercept 0 / slope 1. ``extra_tags`` (``"gggg|eeee": value``)
    are written on every slice (tests use this to plant identifiers that must not leak).
    ``positions_xyz_mm`` (z, 3) / ``orientation`` (6 cosines) override the grid's slice origins and
    plane orientation (e.g. a gantry-tilted acquisition); ``position_decimals`` rounds
    ImagePositionPatient as some exporters do (1: to 0.1 mm).
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
        "0020|0052": seriesuid.rsplit(".", 1)[0] + ".2",  # FrameOfReferenceUID (required by the CT IOD)
        "0020|0037": "\\".join(f"{v:.6f}" for v in (orientation if orientation is not None
                                                      else (*d[:, 0], *d[:, 1]))),
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
            pos = (geometry.voxel_zyx_to_world((k, 0, 0)).ravel() if positions_xyz_mm is None
                   else np.asarray(positions_xyz_mm[k], dtype=float))
            sl.SetMetaData("0020|0032", "\\".join(f"{round(float(v), position_decimals):.{position_decimals}f}"
                                                   for v in pos))
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
