"""``preprocess_scan``: THE per-scan preprocessing used by training and by detection."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pipeline.errors import DataError
from pipeline.io.geometry import Geometry
from pipeline.io.scans import Scan
from pipeline.preprocess.config import PreprocessConfig
from pipeline.preprocess.intensity import window_hu
from pipeline.preprocess.lungmask import lung_mask
from pipeline.preprocess.resample import resample_image, target_geometry


class PreprocessedScan(NamedTuple):
    """Output of :func:`preprocess_scan` (unpacks as ``array, lung, geometry``).

    Attributes:
        array_zyx: int16 HU clipped to ``cfg.window_hu``, shape ``geometry.shape_zyx``.
        lung_zyx: uint8 lung mask (1 = lung), same shape.
        geometry: resampled grid: ``cfg.spacing_xyz_mm``, original origin and direction.
    """

    array_zyx: np.ndarray
    lung_zyx: np.ndarray
    geometry: Geometry


def preprocess_scan(scan: Scan, cfg: PreprocessConfig = PreprocessConfig()) -> PreprocessedScan:
    """Window, resample to ``cfg.spacing_xyz_mm`` and compute the lung mask.

    Raises:
        DataError: NaN/inf voxels, or no lungs found (message "path: reason").
    """
    from pipeline.utils import keep_freed_memory

    keep_freed_memory()  # large temporaries reuse freed heap instead of fresh zero-filled pages
    lo, hi = cfg.window_hu
    if scan.array_zyx.dtype == np.int16 and float(lo).is_integer() and float(hi).is_integer():
        # int16 scans (DICOM, LUNA16 .mhd): clip in int16; the resampler reads int16 exactly
        # as the float32 copy window_hu would make, so the output is the same
        windowed = np.clip(scan.array_zyx, int(max(lo, -32768)), int(min(hi, 32767)))
    else:
        try:
            windowed = window_hu(scan.array_zyx, cfg.window_hu)
        except ValueError as exc:
            raise DataError(scan.path, str(exc)) from None
    target = target_geometry(scan.geometry, cfg.spacing_xyz_mm)
    image = resample_image(windowed, scan.geometry, target, interpolation="linear", fill_value=cfg.window_hu[0])
    del windowed
    import SimpleITK as sitk

    array = np.rint(sitk.GetArrayViewFromImage(image)).astype(np.int16)  # no float32 copy of the buffer
    del image
    lung = lung_mask(array, target.spacing_zyx_mm, threshold_hu=cfg.lung_threshold_hu,
                     dilate_radius_mm=cfg.lung_dilate_mm, min_lung_ml=cfg.min_lung_ml,
                     hull_ratio=cfg.lung_hull_ratio, path=scan.path)
    return PreprocessedScan(array, lung, target)
