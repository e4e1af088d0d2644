"""On-disk layout of ``data/preprocessed/`` and its readers.

Per scan: ``<uid>.npy`` (int16 HU, (z, y, x)), ``<uid>.lung.npy`` (uint8, same shape) and
``<uid>.json`` (sidecar). Plain ``.npy`` is used, not compressed ``.npz``/NIfTI, because
``np.load(mmap_mode='r')`` then maps the file without reading it: cutting one 48^3 patch
touches ~48*48 short runs of pages instead of the whole ~100 MB volume, which is what
the patches stage and the detector do thousands of times (``benchmarks/bench_patches.py``
measures mmap vs loading the whole array per scan). The sidecar is written last and is
the "done" marker: a scan whose sidecar exists with the current ``params_hash`` is complete.

The sidecar also holds the sha256 of both array files (``sha256``), written by the stage: a file
changed afterwards (a mask replaced by a valid array of zeros, say) is "not done" for the next
``preprocess`` (recomputed) and refused by :func:`load_preprocessed` (one line: rerun preprocess).
A verified file is remembered per process by (path, size, mtime, inode), so a stage that loads a
scan many times hashes it once.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pipeline.errors import DataError
from pipeline.io.geometry import Geometry
from pipeline.utils import atomic_path, read_json, sha256_file, write_json

_VERIFIED: dict[tuple, str] = {}  # (path, size, mtime_ns, inode) -> sha256 checked in this process


class LoadedScan(NamedTuple):
    """A preprocessed scan read back: memmaps (z, y, x), resampled geometry, sidecar dict."""

    array_zyx: np.ndarray
    lung_zyx: np.ndarray
    geometry: Geometry
    sidecar: dict


def paths_for(out_dir: str | os.PathLike, seriesuid: str) -> dict[str, Path]:
    d = Path(out_dir)
    return {"array": d / f"{seriesuid}.npy", "lung": d / f"{seriesuid}.lung.npy",
            "sidecar": d / f"{seriesuid}.json"}


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """``np.save`` atomically (temp file next to ``path``, renamed on success)."""
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.ascontiguousarray(array))
    return Path(path)


def write_outputs(out_dir: str | os.PathLike, seriesuid: str, array_zyx: np.ndarray,
                  lung_zyx: np.ndarray, sidecar: dict[str, Any]) -> None:
    """Write array, mask, then the sidecar (last = done marker), each atomically."""
    p = paths_for(out_dir, seriesuid)
    save_npy(p["array"], array_zyx.astype(np.int16, copy=False))
    save_npy(p["lung"], lung_zyx.astype(np.uint8, copy=False))
    write_json(p["sidecar"], {**sidecar, "sha256": {k: _sha256(p[k]) for k in ("array", "lung")}})


def _key(path: Path) -> tuple:
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def _sha256(path: Path) -> str:
    key = _key(path)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(path)
    return _VERIFIED[key]


def content_matches(path: Path, side: dict, key: str) -> bool | None:
    """Whether ``path`` still holds the bytes the stage wrote (the sidecar's sha256 of ``key``);
    None for a sidecar written before hashes were recorded."""
    want = (side.get("sha256") or {}).get(key)
    if not want:
        return None
    return _sha256(path) == want


CORRUPT = "truncated or corrupt preprocessed {what}; rerun preprocess"
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError, IndexError)


def _read_sidecar(path: Path) -> dict:
    side = read_json(path)
    if not isinstance(side, dict):
        raise TypeError("sidecar is not a JSON object")
    return side


def _open_npy(path: Path, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Memory-map ``path`` and check it against the sidecar: shape, dtype and the file size the
    header implies (a truncated or padded file is refused). Raises ValueError/EOFError/OSError."""
    arr = np.load(path, mmap_mode="r")
    if not isinstance(arr, np.memmap) or arr.shape != tuple(shape) or arr.dtype != dtype:
        raise ValueError(f"array {getattr(arr, 'shape', '?')} {getattr(arr, 'dtype', '?')} does not match "
                         f"the sidecar ({tuple(shape)} {np.dtype(dtype)})")
    if arr.offset + arr.nbytes != path.stat().st_size:
        raise ValueError(f"file size {path.stat().st_size} bytes, expected {arr.offset + arr.nbytes}")
    return arr


def is_done(out_dir: str | os.PathLike, seriesuid: str, params_hash: str) -> bool:
    """True when all three files exist and are intact: the sidecar is a readable JSON object of this
    scan with ``params_hash``, and both arrays have the sidecar's shape, the expected dtypes and the
    exact file size their headers imply, and both files' sha256 equal the sidecar's. Anything
    unreadable, truncated (a zero-byte file left by a crash included), edited or mismatched is "not
    done", so the scan is computed again."""
    p = paths_for(out_dir, seriesuid)
    if not all(f.is_file() for f in p.values()):
        return False
    try:
        side = _read_sidecar(p["sidecar"])
        if side.get("params_hash") != params_hash or side.get("seriesuid", seriesuid) != seriesuid:
            return False
        shape = tuple(int(n) for n in side["geometry"]["shape_zyx"])
        _open_npy(p["array"], shape, np.int16)
        _open_npy(p["lung"], shape, np.uint8)
        return bool(content_matches(p["array"], side, "array") and content_matches(p["lung"], side, "lung"))
    except _READ_ERRORS:
        return False


def load_preprocessed(out_dir: str | os.PathLike, seriesuid: str) -> LoadedScan:
    """Memory-map a preprocessed scan.

    Returns:
        :class:`LoadedScan` (array_zyx int16 memmap, lung_zyx uint8 memmap, resampled
        :class:`Geometry`, sidecar dict).

    Raises:
        DataError: a file missing, unreadable, truncated or inconsistent with the sidecar (one line
            naming the file; never an ``EOFError``/``ValueError`` from numpy).
    """
    p = paths_for(out_dir, seriesuid)
    for f in (p["sidecar"], p["array"], p["lung"]):
        if not f.is_file():
            raise DataError(f, "preprocessed file missing (was the scan preprocessed successfully?)")
    try:
        side = _read_sidecar(p["sidecar"])
        geom = Geometry.from_dict(side["geometry"])
    except _READ_ERRORS:
        raise DataError(p["sidecar"], CORRUPT.format(what="sidecar")) from None
    arrays = []
    for key, dtype in (("array", np.int16), ("lung", np.uint8)):
        try:
            arrays.append(_open_npy(p[key], geom.shape_zyx, dtype))
        except _READ_ERRORS as exc:
            detail = f" ({exc})" if isinstance(exc, ValueError) and "sidecar" in str(exc) else ""
            raise DataError(p[key], CORRUPT.format(what="array" if key == "array" else "lung mask")
                            + detail) from None
        if content_matches(p[key], side, key) is False:
            raise DataError(p[key], "content changed since preprocess wrote it (sha256 differs from the "
                                    "sidecar's); rerun preprocess")
    return LoadedScan(arrays[0], arrays[1], geom, side)
