"""HU windowing."""
from __future__ import annotations

import numpy as np


def window_hu(array_zyx: np.ndarray, window_hu: tuple[float, float]) -> np.ndarray:
    """Clip HU values to ``[low, high]``; returns float32 of the same shape (z, y, x).

    Clipping happens *before* resampling so that scanner padding (-2000/-3024 HU outside
    the reconstruction circle) cannot bleed into interpolated voxels.

    Raises:
        ValueError: the volume holds NaN or infinite values.
    """
    if np.issubdtype(array_zyx.dtype, np.floating) and not np.all(np.isfinite(array_zyx)):
        raise ValueError("volume contains NaN or infinite values")
    lo, hi = window_hu
    return np.clip(array_zyx.astype(np.float32, copy=False), lo, hi)
