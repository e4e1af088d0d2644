"""Batch inputs for ``detect``: the output folder checked up front, scan discovery that never
picks up the run's own outputs (nor any other detect output folder), and an account of every path.

Every PATH given ends up in exactly one place: it yields scans (each scan listed once, however many
PATHs reach it: the extra ones are counted as ``duplicates``), or it is a "no scans found" problem.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import DataError

log = logging.getLogger(__name__)
OUTPUT_MARKER = ("scans", "run_key.txt")  # present in every detect/infer output folder


@dataclass(frozen=True)
class Job:
    """One scan to process: ``path`` absolute, ``rel`` as shown in outputs (relative to the cwd
    when under it), ``id`` file-name-safe and unique within the run (file stem / folder name, plus
    a path hash on clashes)."""

    path: str
    rel: str
    id: str
    series_uid: str | None = None  # the DICOM series to read when ``path``'s tree holds others too


@dataclass
class Discovery:
    jobs: list[Job]
    problems: list[tuple[str, str]]  # (path, reason): PATHs that yield no scan
    n_inputs: int = 0
    duplicates: int = 0  # scans reached again through another PATH (counted once)
    excluded: list[str] = field(default_factory=list)  # scans skipped: under an output folder


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """``--out`` as a Path, after checking it can be a folder: not an existing file, not under a
    file, and creatable/writable. Raises a one-line DataError otherwise (nothing is created)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(out, "--out is an existing file; give a folder for the outputs")
    absolute = Path(os.path.abspath(out))
    for anc in (absolute, *absolute.parents):
        if os.path.lexists(anc):
            if not anc.is_dir():
                raise DataError(out, f"--out lies under '{anc}', which is a file, not a folder")
            if not os.access(anc, os.W_OK | os.X_OK):
                raise DataError(out, f"cannot write the outputs: '{anc}' is not writable")
            break
    return out


def _under(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _find(root: Path, exclude: list[Path]):
    from pipeline.io.discover import find_scan_inputs

    return find_scan_inputs(root, exclude=exclude)


def _resolve(p) -> Path:
    """``Path(p).resolve()``, a link loop as a one-line DataError (Python raises RuntimeError)."""
    try:
        return Path(p).resolve()
    except (RuntimeError, OSError):
        raise DataError(p, "symbolic link loop (the link points back at itself)") from None


def _in_output_folder(scan: Path, root: Path) -> bool:
    """True when ``scan`` lies in a detect output folder found between ``root`` and the scan."""
    for anc in scan.parents:
        if anc != root and root not in anc.parents:
            return False
        if anc.joinpath(*OUTPUT_MARKER).is_file():
            return True
    return False


def discover(paths, out_dir: str | os.PathLike | None = None) -> Discovery:
    """Scan inputs under ``paths`` (files, or folders searched recursively, DICOM series folders).

    ``out_dir`` (the run's output folder) and any other detect output folder inside a searched
    folder are never searched. A PATH that does not exist, or that lies inside ``out_dir``, raises
    DataError (checked for all PATHs before any work).
    """
    from pipeline.detect.outputs import safe_id
    from pipeline.io.formats import display_path
    from pipeline.io.scans import scan_id

    paths = list(paths)
    missing = [str(p) for p in paths if not os.path.lexists(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(display_path(missing[0]), "no such file or folder" + more)
    out = Path(out_dir).resolve() if out_dir is not None else None
    for p in paths:
        try:
            resolved = _resolve(p)
        except DataError:
            continue  # listed as a problem below
        if out is not None and _under(resolved, out):
            raise DataError(p, f"input lies inside the output folder '{out_dir}'; choose another --out")
    cwd = Path.cwd().resolve()
    found: list[tuple[str, str, str, str | None]] = []
    problems: list[tuple[str, str]] = []
    excluded: list[str] = []
    for arg in paths:
        try:
            root = _resolve(arg)
        except DataError as exc:
            problems.append((display_path(arg), exc.reason))
            continue
        scans, n_out = [], 0
        for s in _find(Path(arg), [out] if out is not None else []):
            try:
                a = _resolve(s.path)
            except DataError as exc:
                problems.append((display_path(s.path), exc.reason))
                continue
            if (out is not None and _under(a, out)) or (root.is_dir() and _in_output_folder(a, root)):
                n_out += 1
                excluded.append(str(a))
                continue
            scans.append((a, s.series_uid))
        if not scans and not any(p == display_path(arg) for p, _ in problems):
            why = "no scans found (.mhd/.mha/.nii/.nii.gz/.nrrd files or DICOM folders)"
            if n_out:
                why += f"; {n_out} file(s) skipped inside detect output folders"
            problems.append((display_path(arg), why))
        for a, uid in scans:
            rel = os.path.relpath(a, cwd) if a.is_relative_to(cwd) else str(a)
            rel = display_path(rel) + (f" [series {uid}]" if uid else "")
            found.append((str(a), rel, safe_id(scan_id(a)), uid))
    if excluded:
        log.info("skipped %d file(s) inside detect output folders (the run's --out or an earlier one)",
                 len(excluded))
    seen: dict[str, int] = {}
    for _, _, sid, _ in dict.fromkeys(found):
        seen[sid] = seen.get(sid, 0) + 1
    jobs, used, dup = [], set(), 0
    for a, rel, sid, uid in found:
        if (a, uid) in used:
            dup += 1
            continue
        used.add((a, uid))
        if seen[sid] > 1:
            sid = f"{sid}-{hashlib.sha1((a + (uid or '')).encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
        jobs.append(Job(a, rel, sid, uid))
    if dup:
        log.info("%d path(s) reached a scan already listed; each scan is processed and counted once", dup)
    return Discovery(jobs, problems, len(paths), dup, excluded)
