"""Segmentation targets from the LUNA16 annotations, in the preprocessed voxel frame.

The patches stage writes ``nodules.csv`` next to the index: one row per annotated nodule
(``annotations.csv``, ``kind = nodule``) and per irrelevant finding
(``annotations_excluded.csv``, ``kind = excluded``) of every stored scan, with its centre
converted world (x, y, z mm) -> continuous voxel (z, y, x) on that scan's preprocessed grid by
:class:`~pipeline.io.geometry.Geometry`, and its radius in voxels per axis (z, y, x).
An excluded finding without a diameter (``-1``) gets 10 mm, as in the LUNA16 FROC rules. An
excluded finding of ``mass_min_mm`` or more (``patches.mass_min_mm``, 30 mm) is a mass
(``kind = mass``): a lesion the segmenter learns, drawn like a nodule.

:func:`draw_targets` turns the rows of one scan into the mask of any cube of that scan: every
annotated nodule that intersects the cube is drawn (label 1), whatever candidate the cube is
centred on, and every mass; the other excluded findings become an ignore region (left out of the segmenter's loss),
except where they overlap a nodule.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline.io.geometry import Geometry

NODULE_COLUMNS = ["seriesuid", "kind", "z", "y", "x", "rz", "ry", "rx", "diameter_mm"]
EXCLUDED_UNKNOWN_DIAMETER_MM = 10.0
_COORDS = ["coordX", "coordY", "coordZ"]


TARGET_KINDS = ("nodule", "mass")


def nodule_table(annotations: pd.DataFrame, excluded: pd.DataFrame | None,
                 geometries: Mapping[str, Geometry], mass_min_mm: float | None = None) -> pd.DataFrame:
    """``nodules.csv`` rows (``NODULE_COLUMNS``) for the scans in ``geometries``.

    Args:
        annotations: seriesuid, coordX/Y/Z (world mm, LPS), diameter_mm.
        excluded: the same columns (diameter -1 = unknown) or None.
        geometries: seriesuid -> preprocessed-grid Geometry.
        mass_min_mm: excluded rows with diameter_mm >= this are ``kind = mass`` (None: none are).
    """
    parts = []
    for kind, table in (("nodule", annotations), ("excluded", excluded)):
        if table is None or not len(table):
            continue
        t = table[table["seriesuid"].isin(geometries)]
        for uid, g in t.groupby("seriesuid", sort=True):
            geom = geometries[uid]
            zyx = np.atleast_2d(geom.world_to_voxel_zyx(g[_COORDS].to_numpy(float)))
            d = g["diameter_mm"].to_numpy(float)
            d = np.where(d > 0, d, EXCLUDED_UNKNOWN_DIAMETER_MM if kind == "excluded" else 0.0)
            r = (d[:, None] / 2.0) / np.asarray(geom.spacing_zyx_mm, float)[None, :]
            kinds = np.where((d >= mass_min_mm) if kind == "excluded" and mass_min_mm is not None
                             else np.zeros(len(d), bool), "mass", kind)
            parts.append(pd.DataFrame({"seriesuid": uid, "kind": kinds, "z": zyx[:, 0], "y": zyx[:, 1],
                                       "x": zyx[:, 2], "rz": r[:, 0], "ry": r[:, 1], "rx": r[:, 2],
                                       "diameter_mm": d}))
    if not parts:
        return pd.DataFrame(columns=NODULE_COLUMNS)
    return pd.concat(parts, ignore_index=True)[NODULE_COLUMNS]


def draw_targets(nodules: pd.DataFrame | np.ndarray, start_zyx: Sequence[int],
                 size_zyx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mask and ignore region of the box ``[start, start + size)`` (voxels, z, y, x).

    Args:
        nodules: rows of :func:`nodule_table` for ONE scan (DataFrame), or an array
            ``(n, 7)`` of (is_target, z, y, x, rz, ry, rx) (a target: nodule or mass).
        start_zyx: the box's first voxel on the preprocessed grid.
        size_zyx: the box shape.

    Returns:
        ``(mask, ignore)``, uint8 arrays of ``size_zyx``: a voxel is in the mask when its centre
        lies inside an annotated nodule's or a mass's ellipsoid, in ``ignore`` when inside another
        excluded finding and in no target.
    """
    size = tuple(int(s) for s in size_zyx)
    mask = np.zeros(size, np.uint8)
    ignore = np.zeros(size, np.uint8)
    rows = as_target_array(nodules) if isinstance(nodules, pd.DataFrame) else np.asarray(nodules, float)
    start = np.asarray(start_zyx, float)
    for is_nod, z, y, x, rz, ry, rx in sorted(rows.tolist(), key=lambda r: r[0]):  # excluded first
        c = np.array([z, y, x]) - start
        r = np.maximum(np.array([rz, ry, rx]), 1e-6)
        lo = np.maximum(np.floor(c - r).astype(int), 0)
        hi = np.minimum(np.ceil(c + r).astype(int) + 1, size)
        if (hi <= lo).any():
            continue  # does not intersect the box
        g = [(np.arange(lo[a], hi[a]) - c[a]) / r[a] for a in range(3)]
        inside = (g[0][:, None, None] ** 2 + g[1][None, :, None] ** 2 + g[2][None, None, :] ** 2) <= 1.0
        sl = tuple(slice(lo[a], hi[a]) for a in range(3))
        if is_nod:
            mask[sl][inside] = 1
            ignore[sl][inside] = 0
        else:
            ignore[sl][inside & (mask[sl] == 0)] = 1
    return mask, ignore


def as_target_array(nodules: pd.DataFrame) -> np.ndarray:
    """(n, 7) float array (is_target, z, y, x, rz, ry, rx) of :func:`nodule_table` rows."""
    if not len(nodules):
        return np.zeros((0, 7))
    return np.column_stack([nodules["kind"].isin(TARGET_KINDS).to_numpy(float),
                            nodules[["z", "y", "x", "rz", "ry", "rx"]].to_numpy(float)])


def in_masses(index: pd.DataFrame, nodules: pd.DataFrame | None) -> np.ndarray:
    """(n,) bool: which patch-store rows (``vox_z/y/x`` on the preprocessed grid) lie inside a mass."""
    out = np.zeros(len(index), bool)
    if nodules is None or not len(nodules) or "vox_z" not in index:
        return out
    masses = nodules[nodules["kind"] == "mass"]
    uids = index["seriesuid"].to_numpy()
    vox = index[["vox_z", "vox_y", "vox_x"]].to_numpy(float)
    for m in masses.itertuples():
        rows = np.flatnonzero(uids == m.seriesuid)
        q = (vox[rows] - [m.z, m.y, m.x]) / np.maximum([m.rz, m.ry, m.rx], 1e-6)
        out[rows[(q ** 2).sum(axis=1) <= 1.0]] = True
    return out
