"""Find scan inputs under a folder: volume files, and folders that hold DICOM files.

A folder is a DICOM series candidate only when it directly holds at least one DICOM file (the
``DICM`` magic at byte 128, or a preamble-less file pydicom identifies; see
:func:`pipeline.io.formats.is_dicom_file`); a README, spreadsheet, PNG or link beside a scan is
ignored with a DEBUG log. Hidden files and folders (``.tmp-*`` of atomic writes) are skipped,
symbolic links to folders are not followed, and nothing under an ``exclude`` folder (the run's
own output folder) is returned.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from pipeline.io.formats import DATA_SUFFIXES, VOLUME_SUFFIXES, is_dicom_file

log = logging.getLogger(__name__)


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def find_scans(root: str | os.PathLike, exclude: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """List scan inputs under ``root``: volume files and DICOM series folders, in walk order.

    Args:
        root: a folder (searched recursively) or a file (returned as is, to be read or refused).
        exclude: folders whose contents are never returned (compared after resolving links).

    Returns:
        Paths as found under ``root`` (not resolved): each volume file (``.mhd/.mha/.nii/
        .nii.gz/.nrrd/.nhdr``; ``.raw`` data files are reached through their header), then the
        folder itself when it holds DICOM files.
    """
    r = Path(root)
    skip = [os.path.realpath(e) for e in exclude]
    if _under(os.path.realpath(r), skip):
        log.debug("%s: inside an excluded folder, not searched", r)
        return []
    if r.is_file():
        return [r]
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(r):
        d = Path(dirpath)
        keep = []
        for n in sorted(dirnames):
            if n.startswith("."):
                log.debug("%s: hidden folder, not searched", d / n)
            elif _under(os.path.realpath(d / n), skip):
                log.debug("%s: excluded folder (run output), not searched", d / n)
            elif os.path.islink(d / n):
                log.debug("%s: link to a folder, not followed", d / n)
            else:
                keep.append(n)
        dirnames[:] = keep
        has_dicom = False
        for fn in sorted(filenames):
            f = d / fn
            low = fn.lower()
            if low.startswith("."):
                log.debug("%s: hidden file, ignored", f)
            elif low.endswith(VOLUME_SUFFIXES):
                if f.exists():
                    out.append(f)
                else:
                    log.debug("%s: link to a missing file, ignored", f)
            elif low.endswith(DATA_SUFFIXES):
                continue
            elif is_dicom_file(f):
                has_dicom = True
            else:
                log.debug("%s: not a scan (no scan suffix, not DICOM), ignored", f)
        if has_dicom:
            out.append(d)
    return out
