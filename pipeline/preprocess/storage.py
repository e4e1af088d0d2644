"""On-disk layout of ``data/preprocessed/`` and its readers.

Per scan: ``<uid>.npy`` (int16 HU, (z, y, x)), ``<uid>.lung.npy`` (uint8, same shape) and
``<uid>.json`` (sidecar). Plain ``.npy`` is used, not compressed ``.npz``/NIfTI, because
``np.load(mmap_mode='r')`` then maps the file without reading it: cutting one 48^3 patch
touches ~48*48 short runs of pages instead of the whole ~100 MB volume, which is what
the patches stage and the detector do thousands of times (``benchmarks/bench_patches.py``
measures mmap vs loading the whole array per scan). The sidecar is written last and is
the "done" marker: a scan whose sidecar exists with the current ``params_hash`` is complete.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pipeline.errors import DataError
from pipeline.io.geometry import Geometry
from pipeline.utils import atomic_path, read_json, write_json


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
    write_json(p["sidecar"], sidecar)


def is_done(out_dir: str | os.PathLike, seriesuid: str, params_hash: str) -> bool:
    """True when all three files exist, the sidecar has ``params_hash`` and shapes agree."""
    p = paths_for(out_dir, seriesuid)
    if not all(f.is_file() for f in p.values()):
        return False
    try:
        side = read_json(p["sidecar"])
        if side.get("params_hash") != params_hash:
            return False
        shape = tuple(side["geometry"]["shape_zyx"])
        a = np.load(p["array"], mmap_mode="r")
        m = np.load(p["lung"], mmap_mode="r")
        return a.shape == shape and m.shape == shape and a.dtype == np.int16 and m.dtype == np.uint8
    except (ValueError, KeyError, OSError):
        return False


def load_preprocessed(out_dir: str | os.PathLike, seriesuid: str) -> LoadedScan:
    """Memory-map a preprocessed scan.

    Returns:
        :class:`LoadedScan` (array_zyx int16 memmap, lung_zyx uint8 memmap, resampled
        :class:`Geometry`, sidecar dict).

    Raises:
        DataError: files missing or inconsistent with the sidecar.
    """
    p = paths_for(out_dir, seriesuid)
    for f in (p["sidecar"], p["array"], p["lung"]):
        if not f.is_file():
            raise DataError(f, "preprocessed file missing (was the scan preprocessed successfully?)")
    side = read_json(p["sidecar"])
    geom = Geometry.from_dict(side["geometry"])
    arr = np.load(p["array"], mmap_mode="r")
    lung = np.load(p["lung"], mmap_mode="r")
    if arr.shape != geom.shape_zyx or lung.shape != geom.shape_zyx:
        raise DataError(p["array"], f"shape {arr.shape}/{lung.shape} != sidecar shape_zyx {geom.shape_zyx}")
    return LoadedScan(arr, lung, geom, side)
