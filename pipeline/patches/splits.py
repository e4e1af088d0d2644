"""LUNA16 subset-based splits (no series in two splits)."""
from __future__ import annotations

import pandas as pd

from pipeline.errors import PipelineError
from pipeline.patches.config import Folds

SPLITS = ("train", "val", "test")


def assign_splits(subsets: pd.Series, folds: Folds) -> pd.Series:
    """Map LUNA16 subset numbers to ``train|val|test``."""
    return subsets.astype(int).map(folds.split_of)


def check_no_leakage(index: pd.DataFrame) -> None:
    """Raise when a seriesuid appears in more than one split."""
    n = index.groupby("seriesuid")["split"].nunique()
    if (n > 1).any():
        raise PipelineError(f"split leakage: seriesuid {n[n > 1].index[0]} is in several splits")
