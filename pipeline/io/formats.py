"""What kind of scan input a path is: volume-file suffixes, DICOM magic, scan ids."""
from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
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


def is_regular_file(path: str | os.PathLike) -> bool:
    """True for a regular file (links followed); False for FIFOs, sockets, devices, folders,
    dangling links and link loops. Opening a FIFO to look at it would block forever."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a DICOM file: ``DICM`` at byte 128 (Part 10), or a preamble-less
    file that starts with a group 0002/0008 element and that pydicom parses to a dataset with a
    SOP Class or Series Instance UID. Unreadable files (dangling links, no permission) and anything
    that is not a regular file (a FIFO would block the read) are not."""
    if not is_regular_file(path):
        return False
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


def utf8_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is valid UTF-8 (SimpleITK crashes the process on a name that is not)."""
    try:
        os.fsdecode(path).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


@contextlib.contextmanager
def itk_readable_path(path: str | os.PathLike):
    """A path to give SimpleITK for ``path``: itself, or, when its name is not valid UTF-8 (a file
    copied from a Windows share), a link with a plain name in a temporary folder beside links to
    every other entry of its folder (so a header's relative data-file name still resolves)."""
    p = Path(path)
    if utf8_path(p):
        yield str(p)
        return
    parent = os.path.abspath(p.parent)
    with tempfile.TemporaryDirectory(prefix="pipeline-read-") as tmp:
        for name in os.listdir(parent):
            if name != p.name:
                os.symlink(os.path.join(parent, name), os.path.join(tmp, name))
        suffix = next((s for s in sorted(VOLUME_SUFFIXES, key=len, reverse=True) if p.name.lower().endswith(s)), "")
        link = os.path.join(tmp, "scan" + suffix)
        os.symlink(os.path.join(parent, p.name), link)
        log.debug("%s: name is not valid UTF-8; read through a temporary link", p)
        yield link


def display_path(path: str | os.PathLike) -> str:
    """``path`` as text that can be printed and written to CSV/JSON/HTML: bytes of a name that are
    not valid UTF-8 are shown as ``\\xNN`` escapes (never a crash when writing outputs)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
