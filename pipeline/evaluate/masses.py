"""Masses in a detection track: did the findings report each mass, typed ``mass``?

A mass is an excluded finding (``annotations_excluded.csv``) of ``MASS_MIN_MM`` (30 mm) or more (the
synthetic generator lists its masses there with their diameter; LUNA16's FROC ignores marks on them).
It counts as *found* when a finding of ``findings.csv`` (a detect/infer output, with the measured
``type`` column) lies within the mass's radius of its centre and is typed ``mass``; *hit* when any
finding lies there. Scored per scan holding a mass, over the track's scans (``seriesuids.csv``).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.evaluate.froc import COORDS

MASS_MIN_MM = 30.0  # = pipeline.measure.metrics.MASS_MM (not imported: evaluate needs no measure code)


def mass_recall(excluded: pd.DataFrame, findings: pd.DataFrame, seriesuids: Sequence[str],
                mass_min_mm: float = MASS_MIN_MM) -> dict[str, Any] | None:
    """``{"scans_with_mass", "masses", "found_typed_mass", "hit", "fraction_found"}`` or None (no mass).

    Args:
        excluded: seriesuid, coordX/Y/Z (world mm), diameter_mm.
        findings: seriesuid, coordX/Y/Z (world mm), type (``mass`` | ``solid`` | ...).
        seriesuids: the scans the track covers.
    """
    d = pd.to_numeric(excluded["diameter_mm"], errors="coerce").to_numpy(float)
    masses = excluded[(d >= mass_min_mm) & excluded["seriesuid"].isin(set(seriesuids))]
    if not len(masses):
        return None
    found = hit = 0
    for m in masses.itertuples():
        f = findings[findings["seriesuid"] == m.seriesuid]
        near = np.linalg.norm(f[COORDS].to_numpy(float) - [m.coordX, m.coordY, m.coordZ], axis=1) <= m.diameter_mm / 2
        hit += bool(near.any())
        found += bool((near & (f["type"].astype(str) == "mass").to_numpy()).any())
    n = len(masses)
    return {"scans_with_mass": int(masses["seriesuid"].nunique()), "masses": n, "found_typed_mass": found,
            "hit": hit, "fraction_found": round(found / n, 4)}


def read_findings(dirs: Sequence[Path]) -> pd.DataFrame | None:
    """The pooled ``findings.csv`` of a track's folders, or None when a folder has none or no ``type``."""
    parts = []
    for d in dirs:
        p = Path(d) / "findings.csv"
        if not p.is_file():
            return None
        t = pd.read_csv(p, dtype={"seriesuid": str})
        if "type" not in t or not set(COORDS) <= set(t):
            return None
        parts.append(t[["seriesuid", *COORDS, "type"]])
    return pd.concat(parts, ignore_index=True) if parts else None
