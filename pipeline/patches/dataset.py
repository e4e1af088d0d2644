"""``PatchStore``: read access to ``data/patches`` (index + memory-mapped shards)."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import DataError


class PatchStore:
    """Patches written by the ``patches`` stage.

    Attributes:
        index: DataFrame of ``index.csv`` (one row per sample; ``sample`` = row position).

    ``cubes(rows)`` -> int16 (n, S, S, S) (z, y, x) HU; ``planes(rows)`` -> int16 (n, 3, P, P).
    ``rows`` are sample numbers (``index['sample']``, equal to positions in ``index``).
    Shards are opened with ``np.load(mmap_mode='r')`` once and cached.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        idx = self.root / "index.csv"
        if not idx.is_file():
            raise DataError(idx, "patch index missing (run the patches stage)")
        self.index = pd.read_csv(idx, dtype={"seriesuid": str})
        self._maps: dict[tuple[str, int], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.index)

    @property
    def nodules(self) -> pd.DataFrame | None:
        """``nodules.csv``: annotations in each scan's voxel frame (None for a store without it)."""
        if not hasattr(self, "_nodules"):
            p = self.root / "nodules.csv"
            self._nodules = pd.read_csv(p, dtype={"seriesuid": str}) if p.is_file() else None
        return self._nodules

    def _shard(self, kind: str, shard: int) -> np.ndarray:
        key = (kind, int(shard))
        if key not in self._maps:
            p = self.root / f"{kind}_{int(shard):03d}.npy"
            if not p.is_file():
                raise DataError(p, "patch shard missing")
            self._maps[key] = np.load(p, mmap_mode="r")
        return self._maps[key]

    def _read(self, kind: str, rows: Iterable[int]) -> np.ndarray:
        rows = np.atleast_1d(np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows, dtype=np.int64))
        sel = self.index.iloc[rows]
        shards, offsets = sel["shard"].to_numpy(), sel["offset"].to_numpy()
        first = self._shard(kind, shards[0]) if len(rows) else self._shard(kind, 0)
        out = np.empty((len(rows), *first.shape[1:]), dtype=first.dtype)
        for s in np.unique(shards):
            m = shards == s
            order = np.argsort(offsets[m])
            src = self._shard(kind, s)[offsets[m][order]]
            out[np.nonzero(m)[0][order]] = src
        return out

    def cubes(self, rows: Iterable[int]) -> np.ndarray:
        """3D patches (n, S, S, S) int16 HU, (z, y, x) at the preprocess spacing."""
        return self._read("cubes", rows)

    def planes(self, rows: Iterable[int]) -> np.ndarray:
        """2D / 2.5D patches (n, 3, P, P) int16 HU."""
        return self._read("planes", rows)
