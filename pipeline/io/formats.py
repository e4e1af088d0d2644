"""What kind of scan input a path is: volume-file suffixes, DICOM magic, scan ids."""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from pipeline.errors import DataError

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".mhd", ".mha", ".nii", ".nii.gz", ".nrrd", ".nhdr")
"""File suffixes read as single volumes (a folder is read as a DICOM series)."""

DATA_SUFFIXES = (".raw", ".zraw", ".raw.gz")
"""Data files that belong to a volume header (listed through their header, never alone)."""


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


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a DICOM file: ``DICM`` at byte 128 (Part 10), or a preamble-less
    file that starts with a group 0002/0008 element and that pydicom parses to a dataset with a
    SOP Class or Series Instance UID. Unreadable files (dangling links, no permission) are not."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8 or head[:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    try:
        import pydicom

        with warnings.catch_warnings():  # junk decodes to odd character sets: not worth a warning
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True,
                                 specific_tags=["SOPClassUID", "SeriesInstanceUID"])
            return "SOPClassUID" in ds or "SeriesInstanceUID" in ds
    except Exception:  # noqa: BLE001 - any parse failure means "not DICOM" here
        log.debug("%s: starts like DICOM but pydicom cannot parse it", path)
        return False
