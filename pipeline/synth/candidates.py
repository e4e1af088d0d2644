"""LUNA16-style candidates: class 1 near each annotated nodule, class 0 mostly hard negatives
(vessel branch points, vessels, pleura) plus random lung points, never inside a nodule."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.io.geometry import Geometry
from pipeline.synth.anatomy import LUNG, VESSEL
from pipeline.utils import write_csv

COLUMNS = ["seriesuid", "coordX", "coordY", "coordZ", "class", "kind"]


def _voxels_to_world(geometry: Geometry, flat_idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    idx = np.stack(np.unravel_index(flat_idx, geometry.shape_zyx), axis=1).astype(float)
    return geometry.voxel_zyx_to_world(idx + rng.uniform(-0.3, 0.3, idx.shape))


def _pick(mask_flat_idx: np.ndarray, n: int, rng) -> np.ndarray:
    if n <= 0 or mask_flat_idx.size == 0:
        return np.zeros(0, dtype=np.int64)
    return rng.choice(mask_flat_idx, size=min(n, mask_flat_idx.size), replace=False)


def make_candidates(seriesuid: str, geometry: Geometry, labels: np.ndarray, lung_sd: np.ndarray,
                    nodules: pd.DataFrame, branch_points_xyz_mm: np.ndarray, n_negatives: int,
                    hard_fraction: float, rng: np.random.Generator, *,
                    positives_per_nodule: tuple[int, int] = (1, 2),
                    positive_offset: float = 0.25) -> pd.DataFrame:
    """Candidates of one scan: columns seriesuid, coordX/Y/Z (world mm), class, kind.

    Per nodule, ``positives_per_nodule`` (min, max inclusive) class-1 candidates, each at a
    distance uniform in [0, positive_offset * radius] from the centre. Class 0: up to
    ``n_negatives`` (fewer when the pools run out), never within radius + 1 mm of a nodule.
    ``kind`` (not written to candidates.csv) is nodule | branch | vessel | pleura | lung.
    """
    rows = []
    p_lo, p_hi = int(positives_per_nodule[0]), int(positives_per_nodule[1])
    for nod in nodules.itertuples():
        c = np.array([nod.coordX, nod.coordY, nod.coordZ])
        # one uniform per nodule; for (1, 2) this is the historical `1 + (u < 0.5)` (same bytes)
        n_pos = p_hi - min(int(rng.random() * (p_hi - p_lo + 1)), p_hi - p_lo)
        for _ in range(n_pos):
            d = rng.normal(size=3)
            p = c + d / np.linalg.norm(d) * rng.uniform(0, positive_offset) * nod.diameter_mm / 2
            rows.append((seriesuid, *p, 1, "nodule"))
    n_hard = round(n_negatives * hard_fraction)
    n_branch = n_hard // 3
    n_vessel = (n_hard - n_branch) // 2
    n_pleura = n_hard - n_branch - n_vessel
    over = 2  # draw extra, drop those inside nodules, trim
    lab = labels.ravel()
    sd = lung_sd.ravel()
    negs: list[tuple[str, np.ndarray]] = []
    bp = branch_points_xyz_mm[geometry.contains_world(branch_points_xyz_mm)] if len(branch_points_xyz_mm) else \
        np.zeros((0, 3))
    if len(bp):
        bp = bp[rng.permutation(len(bp))[: n_branch * over]]
        negs.append(("branch", bp))
    vessel_idx = np.flatnonzero(lab == VESSEL)
    negs.append(("vessel", _voxels_to_world(geometry, _pick(vessel_idx, (n_vessel + n_branch - len(bp)) * over
                                                                  if len(bp) < n_branch else n_vessel * over, rng),
                                            rng)))
    pleura_idx = np.flatnonzero((lab == LUNG) & (sd > -2.5))
    negs.append(("pleura", _voxels_to_world(geometry, _pick(pleura_idx, n_pleura * over, rng), rng)))
    lung_idx = np.flatnonzero(lab == LUNG)
    negs.append(("lung", _voxels_to_world(geometry, _pick(lung_idx, (n_negatives - n_hard) * over, rng), rng)))
    want = {"branch": min(n_branch, len(bp)), "vessel": n_vessel + max(0, n_branch - len(bp)),
            "pleura": n_pleura, "lung": n_negatives - n_hard}
    centres = nodules[["coordX", "coordY", "coordZ"]].to_numpy(float).reshape(-1, 3)
    radii = nodules["diameter_mm"].to_numpy(float) / 2
    for kind, pts in negs:
        if len(pts) == 0:
            continue
        keep = np.ones(len(pts), bool)
        for c, r in zip(centres, radii):
            keep &= np.linalg.norm(pts - c, axis=1) > r + 1.0
        for p in pts[keep][: want[kind]]:
            rows.append((seriesuid, *p, 0, kind))
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.iloc[rng.permutation(len(df))].reset_index(drop=True)


def write_candidates(out_dir: Path, table: pd.DataFrame, names: Sequence[str]) -> dict[str, Path]:
    """Write ``table`` as ``out_dir/<name>`` for every name (same bytes); remove other, stale
    ``candidates*.csv`` files there. Returns {"candidates": first path, <stem>: path, ...}."""
    out_dir = Path(out_dir)
    for stale in sorted(out_dir.glob("candidates*.csv")):
        if stale.name not in names:
            stale.unlink()
    paths = {}
    for i, name in enumerate(names):
        paths["candidates" if i == 0 else Path(name).stem] = write_csv(out_dir / name, table)
    return paths
