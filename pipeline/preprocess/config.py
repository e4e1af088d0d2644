"""Typed config of the ``preprocess`` stage (the ``preprocess:`` section of params.yaml)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from pipeline.errors import ConfigError

# Fields that change the output bytes (hashed into ``params_hash``); the others only
# change how the work is scheduled.
OUTPUT_FIELDS = ("window_hu", "spacing_xyz_mm", "lung_threshold_hu", "lung_dilate_mm",
                 "min_lung_ml", "lung_hull_ratio")
FORMAT_VERSION = 1  # bump when the algorithm changes so old outputs are recomputed


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing parameters.

    Attributes:
        window_hu: (low, high) HU clip window; low is also the padding value (air).
        spacing_xyz_mm: target voxel spacing (x, y, z) in mm.
        lung_threshold_hu: voxels below this HU are air/lung candidates.
        lung_dilate_mm: final dilation radius of the lung mask in mm (includes juxtapleural
            nodules, vessels and the pleura).
        min_lung_ml: smallest air component (ml) accepted as a lung.
        lung_hull_ratio: per slice, replace each lung by its convex hull when the hull is at
            most this many times the lung's area (closes juxtapleural indentations, skips
            crescent-shaped slices where the hull would swallow the mediastinum).
        workers: processes for the local pool (1 = run in-process).
        scheduler: ``tcp://host:port`` of a Dask scheduler, or None for the local pool.
        max_failures: the stage fails (exit 1) when more scans than this fail.
    """

    window_hu: tuple[float, float] = (-1000.0, 400.0)
    spacing_xyz_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    lung_threshold_hu: float = -320.0
    lung_dilate_mm: float = 5.0
    min_lung_ml: float = 20.0
    lung_hull_ratio: float = 1.5
    workers: int = 2
    scheduler: str | None = None
    max_failures: int = 2

    def __post_init__(self) -> None:
        w = tuple(float(v) for v in self.window_hu)
        s = tuple(float(v) for v in self.spacing_xyz_mm)
        if len(w) != 2 or not w[0] < w[1]:
            raise ConfigError(f"preprocess.window_hu must be [low, high] with low < high, got {list(w)}")
        if not -32768 <= w[0] and w[1] <= 32767:
            raise ConfigError(f"preprocess.window_hu must fit int16, got {list(w)}")
        if len(s) != 3 or min(s) <= 0:
            raise ConfigError(f"preprocess.spacing_xyz_mm must be 3 positive mm values [x, y, z], got {list(s)}")
        if self.lung_dilate_mm < 0 or self.min_lung_ml < 0 or self.lung_hull_ratio < 1.0 and self.lung_hull_ratio != 0:
            raise ConfigError("preprocess.lung_dilate_mm and min_lung_ml must be >= 0; "
                              "lung_hull_ratio must be >= 1 (or 0 = no convex hull)")
        if int(self.workers) < 1:
            raise ConfigError(f"preprocess.workers must be >= 1, got {self.workers}")
        if self.scheduler is not None and not str(self.scheduler).startswith(("tcp://", "tls://", "inproc://")):
            raise ConfigError(f"preprocess.scheduler must be null or a Dask address tcp://host:port, "
                              f"got {self.scheduler!r}")
        if int(self.max_failures) < 0:
            raise ConfigError(f"preprocess.max_failures must be >= 0, got {self.max_failures}")
        object.__setattr__(self, "window_hu", w)
        object.__setattr__(self, "spacing_xyz_mm", s)

    def output_params(self) -> dict:
        """The parameters that determine the output bytes (JSON-able)."""
        d = {k: getattr(self, k) for k in OUTPUT_FIELDS}
        d = {k: list(v) if isinstance(v, tuple) else float(v) for k, v in d.items()}
        d["format_version"] = FORMAT_VERSION
        return d

    def params_hash(self) -> str:
        """sha256 (16 hex) of :meth:`output_params`; stored in each sidecar for resuming."""
        blob = json.dumps(self.output_params(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
