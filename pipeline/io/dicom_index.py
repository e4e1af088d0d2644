"""Which DICOM files make up which series: the header facts of every file, grouped by Series UID.

Real exports are not one folder per series: CD/PACS layouts split a series over folders of 100-200
files (``SE0001/``, ``SE0002/`` ...), carry a ``DICOMDIR`` index beside the images, mix series
(scouts, dose reports, several reconstructions) in one folder, and current scanners write a whole
series as one enhanced multi-frame file. This module reads each file's header once (pydicom,
``stop_before_pixels``, only the tags listed in ``_TAGS``: no patient-identifying tag is read) and
groups the image files by ``SeriesInstanceUID``, wherever they lie. A ``DICOMDIR`` (Media Storage
Directory) and objects without pixel data (structured reports, presentation states) are indexed as
what they are and never offered as a scan.
"""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.io.formats import is_dicom_file, is_regular_file

log = logging.getLogger(__name__)

MEDIA_DIRECTORY_CLASS = "1.2.840.10008.1.3.10"  # DICOMDIR
ENHANCED_IMAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT",
}
_TAGS = ["SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "Modality", "ImagePositionPatient", "ImageOrientationPatient",
         "PixelSpacing", "Rows", "Columns", "NumberOfFrames", "InstanceNumber", "ImageType",
         "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"]


def _floats(value, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


@dataclass(frozen=True)
class DicomFile:
    """Header facts of one DICOM file (no identifiers). ``pixel_spacing_rc_mm`` is DICOM's
    PixelSpacing: (spacing between rows = y, between columns = x) in mm; ``orientation`` the six
    ImageOrientationPatient cosines (row direction = x index axis, then column direction = y)."""

    path: Path
    series_uid: str
    sop_class: str = ""
    modality: str = ""
    position_xyz_mm: tuple[float, float, float] | None = None
    orientation: tuple[float, ...] | None = None
    pixel_spacing_rc_mm: tuple[float, float] | None = None
    rows: int = 0
    cols: int = 0
    n_frames: int = 1
    instance_number: int | None = None
    image_type: str = ""
    instance_uid: str = ""
    study_uid: str = ""  # StudyInstanceUID: groups scans into studies (studies.csv); not a patient identifier

    @property
    def is_image(self) -> bool:
        return self.rows > 0 and self.cols > 0 and self.sop_class != MEDIA_DIRECTORY_CLASS

    @property
    def is_multiframe(self) -> bool:
        return self.n_frames > 1 or self.sop_class in ENHANCED_IMAGE_CLASSES

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type.upper()


def read_header(path: str | os.PathLike) -> DicomFile | None:
    """Header facts of one file, or None when it is not DICOM or pydicom cannot parse it."""
    import pydicom

    p = Path(path)
    if not is_dicom_file(p):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(p, force=True, stop_before_pixels=True, specific_tags=_TAGS)
            meta = getattr(ds, "file_meta", None)
            sop = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
            if sop == MEDIA_DIRECTORY_CLASS or p.name.upper() == "DICOMDIR":
                return DicomFile(p, "", sop_class=MEDIA_DIRECTORY_CLASS)
            n_frames = int(ds.get("NumberOfFrames", 1) or 1)
            pos, ori, ps = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"), ds.get("PixelSpacing")
            shared = ds.get("SharedFunctionalGroupsSequence")
            if shared and (ori is None or ps is None):  # enhanced: the shared functional groups
                g = shared[0]
                if ori is None and "PlaneOrientationSequence" in g:
                    ori = g.PlaneOrientationSequence[0].get("ImageOrientationPatient")
                if ps is None and "PixelMeasuresSequence" in g:
                    ps = g.PixelMeasuresSequence[0].get("PixelSpacing")
            inst = ds.get("InstanceNumber")
            return DicomFile(
                p, str(ds.get("SeriesInstanceUID", "") or ""), sop_class=sop,
                modality=str(ds.get("Modality", "") or "").strip().upper(),
                position_xyz_mm=_floats(pos, 3) if pos is not None else None,
                orientation=_floats(ori, 6) if ori is not None else None,
                pixel_spacing_rc_mm=_floats(ps, 2) if ps is not None else None,
                rows=int(ds.get("Rows", 0) or 0), cols=int(ds.get("Columns", 0) or 0), n_frames=n_frames,
                instance_number=int(inst) if inst not in (None, "") else None,
                image_type="\\".join(str(v) for v in (ds.get("ImageType") or [])),
                instance_uid=str(ds.get("SOPInstanceUID", "") or ""),
                study_uid=str(ds.get("StudyInstanceUID", "") or ""))
    except Exception:  # noqa: BLE001 - a file pydicom cannot parse is a damaged file, reported by the caller
        log.debug("%s: DICOM magic but pydicom cannot parse the header", p)
        return None


@dataclass
class FolderIndex:
    """The DICOM content of a folder (tree): image files by series, and what else was there."""

    series: dict[str, list[DicomFile]] = field(default_factory=dict)
    directories: list[Path] = field(default_factory=list)   # DICOMDIR files (an index, not a scan)
    non_image: list[DicomFile] = field(default_factory=list)  # no pixel data (SR, KO, PR ...)
    damaged: list[Path] = field(default_factory=list)        # DICOM magic, header unreadable

    def add(self, f: DicomFile | None, path: Path) -> None:
        if f is None:
            self.damaged.append(path)
        elif f.sop_class == MEDIA_DIRECTORY_CLASS:
            self.directories.append(path)
        elif not f.is_image or not f.series_uid:
            self.non_image.append(f)
        else:
            self.series.setdefault(f.series_uid, []).append(f)

    @property
    def n_files(self) -> int:
        return sum(len(v) for v in self.series.values())


def _candidate_files(folder: Path, recursive: bool) -> Iterable[Path]:
    if not recursive:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return
        for n in names:
            if not n.startswith("."):
                yield folder / n
        return
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not os.path.islink(os.path.join(dirpath, d)))
        for n in sorted(filenames):
            if not n.startswith("."):
                yield Path(dirpath) / n


def index_folder(folder: str | os.PathLike, *, recursive: bool = False) -> FolderIndex:
    """Index the regular, non-hidden files directly in ``folder`` (``recursive``: in its whole
    tree, links to folders not followed). FIFOs, sockets and devices are skipped (DEBUG line)."""
    idx = FolderIndex()
    for p in _candidate_files(Path(folder), recursive):
        if not is_regular_file(p):
            log.debug("%s: not a regular file, skipped", p)
            continue
        if not is_dicom_file(p):
            continue
        idx.add(read_header(p), p)
    return idx


def is_ct_volume_series(files: list[DicomFile]) -> bool:
    """Whether a series looks like a CT volume a scan reader should be offered: CT (or no
    modality), not a localizer (scout), and several slices or one multi-frame file."""
    modalities = {f.modality for f in files} - {""}
    if modalities and modalities != {"CT"}:
        return False
    if all(f.is_localizer for f in files):
        return False
    return len(files) >= 2 or any(f.n_frames > 1 for f in files)
