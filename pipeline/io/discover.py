"""Find scan inputs under a folder: volume files, and folders that hold DICOM files.

DICOM files (the ``DICM`` magic at byte 128, or a preamble-less file pydicom identifies; see
:func:`pipeline.io.formats.is_dicom_file`) are grouped by SeriesInstanceUID wherever they lie
(:mod:`pipeline.io.dicom_index`): a series split over several folders (CD/PACS exports of 100-200
files a folder) is one scan, found at the folders' common parent; a folder holding several series
gives one scan per series (a localizer or other non-volume series beside a CT volume in the same
folder is skipped, INFO line); a ``DICOMDIR`` is an index, never a scan. A README, spreadsheet, PNG
or link beside a scan is ignored with a DEBUG log; FIFOs, sockets and devices are never opened.
Hidden files and folders (``.tmp-*`` of atomic writes) are skipped, symbolic links to folders are
not followed, and nothing under an ``exclude`` folder (the run's own output folder) is returned.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from pipeline.io.formats import DATA_SUFFIXES, VOLUME_SUFFIXES, is_dicom_file, is_regular_file

log = logging.getLogger(__name__)


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


class ScanInput(NamedTuple):
    """One scan found: a volume file or a folder; ``series_uid`` names the DICOM series to read when
    the folder (tree) holds others too (None: the folder's only series)."""

    path: Path
    series_uid: str | None = None


def find_scans(root: str | os.PathLike, exclude: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """The distinct paths of :func:`find_scan_inputs` (volume files and DICOM folders), in walk order."""
    return list(dict.fromkeys(s.path for s in find_scan_inputs(root, exclude)))


def _group_series(per_folder: dict[Path, dict[str, list]]) -> list[ScanInput]:
    """Scan inputs of the DICOM series found, one per series (see the module docstring)."""
    from pipeline.io.dicom_index import is_ct_volume_series

    where: dict[str, list[Path]] = {}
    files: dict[str, list] = {}
    for folder, series in per_folder.items():
        volumes = [u for u, fs in series.items() if is_ct_volume_series(fs)]
        for uid, fs in series.items():
            if len(series) > 1 and volumes and uid not in volumes:
                log.info("%s: series %s (%d file(s): localizer, non-CT or single image) skipped beside the "
                         "CT volume in the same folder", folder, uid, len(fs))
                continue
            where.setdefault(uid, []).append(folder)
            files.setdefault(uid, []).extend(fs)
    out = []
    for uid, folders in list(where.items()):
        if len(folders) > 1:  # copies of one series (same instances in two folders) stay separate scans
            seen: dict[str, Path] = {}
            for folder in folders:
                for f in per_folder[folder][uid]:
                    if f.instance_uid and seen.setdefault(f.instance_uid, folder) != folder:
                        log.info("%s: holds copies of instances also in %s; read as separate scans",
                                 folder, seen[f.instance_uid])
                        break
                else:
                    continue
                break
            else:
                seen = {}
            if seen:
                for folder in folders:
                    only = len(per_folder[folder]) == 1
                    out.append(ScanInput(folder, None if only else uid))
                del where[uid]
    for uid, folders in where.items():
        base = folders[0] if len(folders) == 1 else Path(os.path.commonpath([str(f) for f in folders]))
        if len(folders) > 1:
            log.info("%s: series %s is split over %d folders; read as one scan", base, uid, len(folders))
        others = any(u != uid and any(f == base or base in f.parents for f in fs)
                     for u, fs in where.items())
        out.append(ScanInput(base, uid if others or (len(folders) > 1 and base in per_folder) else None))
    return out


def find_scan_inputs(root: str | os.PathLike, exclude: Iterable[str | os.PathLike] = ()) -> list[ScanInput]:
    """List scan inputs under ``root``: volume files and DICOM series, in walk order.

    Args:
        root: a folder (searched recursively) or a file (returned as is, to be read or refused).
        exclude: folders whose contents are never returned (compared after resolving links).

    Returns:
        Paths as found under ``root`` (not resolved): each volume file (``.mhd/.mha/.nii/
        .nii.gz/.nrrd/.nhdr``; ``.raw`` data files are reached through their header), then each
        DICOM series (its folder, or the common parent of the folders it is split over).
    """
    from pipeline.io.dicom_index import FolderIndex, read_header

    r = Path(root)
    skip = [os.path.realpath(e) for e in exclude]
    if _under(os.path.realpath(r), skip):
        log.debug("%s: inside an excluded folder, not searched", r)
        return []
    if not r.is_dir():
        return [ScanInput(r)]
    out: list[ScanInput] = []
    per_folder: dict[Path, dict[str, list]] = {}
    unreadable: list[Path] = []
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
        idx = FolderIndex()
        for fn in sorted(filenames):
            f = d / fn
            low = fn.lower()
            if low.startswith("."):
                log.debug("%s: hidden file, ignored", f)
            elif not os.path.exists(f):
                log.debug("%s: link to a missing file (or a link loop), ignored", f)
            elif not is_regular_file(f):
                log.debug("%s: not a regular file (FIFO, socket or device), ignored", f)
            elif low.endswith(VOLUME_SUFFIXES):
                out.append(ScanInput(f))
            elif low.endswith(DATA_SUFFIXES):
                continue
            elif is_dicom_file(f):
                idx.add(read_header(f), f)
            else:
                log.debug("%s: not a scan (no scan suffix, not DICOM), ignored", f)
        if idx.series:
            per_folder[d] = idx.series
        elif idx.damaged:
            unreadable.append(d)  # offered as a scan: reading it gives the reason
        if idx.directories:
            log.debug("%s: DICOMDIR (an index of the files below), not a scan", d)
    out += _group_series(per_folder)
    out += [ScanInput(d) for d in unreadable]
    return out
