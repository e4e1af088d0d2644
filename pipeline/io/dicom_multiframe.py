"""Enhanced (multi-frame) CT: one DICOM file holding a whole series, read through its functional groups.

What current scanners export: a single file of SOP class Enhanced CT Image Storage (or Legacy
Converted Enhanced CT) with ``NumberOfFrames`` frames. Geometry and rescale do not sit at the top
level as in classic slices but in the functional groups, each either shared by all frames
(``SharedFunctionalGroupsSequence``) or given per frame (``PerFrameFunctionalGroupsSequence``):

- ``PlanePositionSequence`` -> ImagePositionPatient of each frame (world x, y, z mm, LPS);
- ``PlaneOrientationSequence`` -> ImageOrientationPatient;
- ``PixelMeasuresSequence`` -> PixelSpacing (row, column spacing mm);
- ``PixelValueTransformationSequence`` -> RescaleSlope / RescaleIntercept (to HU).

The frames then go through the same ordering and checks as classic slices
(:func:`pipeline.io.dicom_stack.stack_geometry`). Pixel data are decoded by pydicom (uncompressed,
or compressed where a pydicom pixel-data plugin is installed).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from pipeline.errors import DataError

log = logging.getLogger(__name__)


def _group(ds, i: int, name: str):
    """Functional group ``name`` of frame ``i``: the per-frame item, else the shared one."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is not None and i < len(per) and name in per[i]:
        return per[i][name][0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and name in shared[0]:
        return shared[0][name][0]
    return None


def _frame_values(ds, n: int, seq: str, attr: str, top_level, path: Path, required: bool = True):
    out = []
    for i in range(n):
        g = _group(ds, i, seq)
        v = g.get(attr) if g is not None else None
        if v is None:
            v = top_level
        if v is None and required:
            raise DataError(path, f"enhanced CT frame {i + 1} has no {attr} ({seq})")
        out.append(v)
    return out


def read_multiframe(path: str | Path, folder: str | Path | None = None):
    """Read an enhanced multi-frame CT file. Returns ((z, y, x) float32/int16 HU array ordered
    along the plane normal, :class:`~pipeline.io.dicom_stack.StackGeometry`)."""
    import pydicom

    from pipeline.io.dicom_stack import check_uniform, stack_geometry

    path = Path(path)
    where = folder if folder is not None else path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True)
            frames = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoder errors come in many types
        log.debug("%s: pydicom: %s", path, exc)
        raise DataError(where, f"enhanced CT file '{path.name}': pixel data could not be decoded "
                               f"({type(exc).__name__}; compressed data may need a pydicom plugin)") from None
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.shape[0] != n or frames.ndim != 3:
        raise DataError(where, f"enhanced CT file '{path.name}': {n} frames declared, pixel data shape {frames.shape}")
    if n < 2:
        raise DataError(where, "series has 1 slice(s); a CT volume needs at least 2")
    pos = _frame_values(ds, n, "PlanePositionSequence", "ImagePositionPatient", ds.get("ImagePositionPatient"), where)
    ori = _frame_values(ds, n, "PlaneOrientationSequence", "ImageOrientationPatient",
                        ds.get("ImageOrientationPatient"), where)
    ps = _frame_values(ds, n, "PixelMeasuresSequence", "PixelSpacing", ds.get("PixelSpacing"), where)
    slope = _frame_values(ds, n, "PixelValueTransformationSequence", "RescaleSlope", ds.get("RescaleSlope"),
                          where, required=False)
    icpt = _frame_values(ds, n, "PixelValueTransformationSequence", "RescaleIntercept",
                         ds.get("RescaleIntercept"), where, required=False)
    try:
        pos_a = np.array([[float(v) for v in p] for p in pos])
        ori_a = [[float(v) for v in o] for o in ori]
        ps_a = [[float(v) for v in p] for p in ps]
    except (TypeError, ValueError):
        raise DataError(where, "enhanced CT functional groups hold a non-numeric position, orientation "
                               "or spacing") from None
    check_uniform(where, "frames", ori_a, "orientations", 1e-4)
    check_uniform(where, "frames", ps_a, "PixelSpacing (mm)", 1e-4)
    sg = stack_geometry(where, pos_a, np.array(ori_a[0]), tuple(ps_a[0]), frames.shape[1:])
    s = np.array([1.0 if v is None else float(v) for v in slope])
    b = np.array([0.0 if v is None else float(v) for v in icpt])
    frames = frames[sg.order]
    s, b = s[sg.order], b[sg.order]
    if np.all(s == np.round(s)) and np.all(b == np.round(b)):
        arr = frames.astype(np.int32) * s.astype(np.int32)[:, None, None] + b.astype(np.int32)[:, None, None]
        if arr.min() >= -32768 and arr.max() <= 32767:
            arr = arr.astype(np.int16)
    else:
        arr = (frames.astype(np.float32) * s[:, None, None].astype(np.float32)
               + b[:, None, None].astype(np.float32))
    return arr, sg


def write_multiframe(array_zyx: np.ndarray, geometry, path: str | Path, *, seriesuid: str,
                     study_uid: str | None = None, positions_xyz_mm: np.ndarray | None = None,
                     orientation: tuple[float, ...] | None = None) -> Path:
    """Write a (z, y, x) int16 HU volume as one Enhanced CT file (tests and exports).

    Positions default to the grid's slice origins; ``positions_xyz_mm`` / ``orientation`` override
    them (e.g. to write a tilted acquisition). Stored int16 with slope 1, intercept 0 in the shared
    functional groups."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    arr = np.asarray(array_zyx).astype(np.int16)
    nz, ny, nx = arr.shape
    d = geometry.direction_matrix
    sx, sy, _ = geometry.spacing_xyz_mm
    ori = orientation if orientation is not None else (*d[:, 0], *d[:, 1])
    if positions_xyz_mm is None:
        positions_xyz_mm = np.array([geometry.voxel_zyx_to_world((k, 0, 0)) for k in range(nz)]).reshape(nz, 3)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = seriesuid
    ds.StudyInstanceUID = study_uid or seriesuid.rsplit(".", 1)[0] + ".1"
    ds.FrameOfReferenceUID = seriesuid.rsplit(".", 1)[0] + ".2"
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
               "ReferringPhysicianName", "AccessionNumber", "StudyID"):  # type 2: present, empty
        setattr(ds, kw, "")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.NumberOfFrames = nz
    ds.Rows, ds.Columns = ny, nx
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [f"{sy:.6f}", f"{sx:.6f}"]
    pm.SliceThickness = f"{geometry.spacing_xyz_mm[2]:.6f}"
    po = Dataset()
    po.ImageOrientationPatient = [f"{v:.6f}" for v in ori]
    pv = Dataset()
    pv.RescaleIntercept, pv.RescaleSlope, pv.RescaleType = "0", "1", "HU"
    shared.PixelMeasuresSequence = Sequence([pm])
    shared.PlaneOrientationSequence = Sequence([po])
    shared.PixelValueTransformationSequence = Sequence([pv])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    for k in range(nz):
        item, pp = Dataset(), Dataset()
        pp.ImagePositionPatient = [f"{v:.6f}" for v in positions_xyz_mm[k]]
        item.PlanePositionSequence = Sequence([pp])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    ds.PixelData = arr.tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
