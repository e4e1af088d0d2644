"""Typed config of the ``patches`` stage (the ``patches:`` section of params.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.errors import ConfigError

PLANE_MODES = ("axial", "orthogonal", "adjacent")


@dataclass(frozen=True)
class Folds:
    """LUNA16 subsets held out; every other subset is train."""

    test: tuple[int, ...] = (0,)
    val: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        t, v = tuple(int(s) for s in self.test), tuple(int(s) for s in self.val)
        if set(t) & set(v):
            raise ConfigError(f"patches.folds: subsets {sorted(set(t) & set(v))} are in both test and val")
        object.__setattr__(self, "test", t)
        object.__setattr__(self, "val", v)

    def split_of(self, subset: int) -> str:
        return "test" if subset in self.test else "val" if subset in self.val else "train"


@dataclass(frozen=True)
class PatchesConfig:
    """Patch extraction parameters.

    Attributes:
        cube_mm: edge of the 3D cube in mm (S = round(cube_mm / spacing) voxels per axis).
        plane_mm: edge of the 2D planes in mm, resampled to ``plane_px`` pixels.
        plane_px: pixels per plane edge (P).
        planes: ``axial`` (centre axial slice x3) | ``orthogonal`` (axial, coronal,
            sagittal) | ``adjacent`` (axial slices z-1, z, z+1).
        pos_shifts: extra copies of each positive (every subset) shifted by up to ``shift_mm``;
            used only on the train side of a fold, never scored. Every candidate of the
            candidates CSV is stored (negative subsampling is ``train.neg_ratio``).
        shift_mm: max shift per axis (mm, uniform).
        folds: which subsets are test / val.
        shard_size: max samples per shard file.
        workers: processes over scans.
        seed: RNG seed of the sampling and the shifts.
        candidates_csv: candidate list in the LUNA16 root (``candidates.csv``; real LUNA16 also
            ships ``candidates_V2.csv``, the one the challenge's FPR track uses).
        mass_min_mm: excluded findings (``annotations_excluded.csv``) with a diameter of at least
            this many mm are masses: the segmenter learns them as lesions (targets, not an ignore
            region), while the LUNA16 FROC still ignores marks on them. None: every excluded finding
            stays an ignore region. (Real LUNA16 lists 8 excluded findings of 30 mm or more.)
    """

    cube_mm: float = 48.0
    plane_mm: float = 48.0
    plane_px: int = 64
    planes: str = "orthogonal"
    pos_shifts: int = 0
    shift_mm: float = 2.0
    folds: Folds = field(default_factory=Folds)
    shard_size: int = 2048
    workers: int = 2
    seed: int = 0
    candidates_csv: str = "candidates.csv"
    mass_min_mm: float | None = 30.0

    def __post_init__(self) -> None:
        if self.mass_min_mm is not None and not 3 < float(self.mass_min_mm) <= 200:
            raise ConfigError(f"patches.mass_min_mm must be within 3..200 mm or null, got {self.mass_min_mm!r}")
        if "/" in self.candidates_csv or "\\" in self.candidates_csv:
            raise ConfigError(f"patches.candidates_csv must be a file name in the LUNA16 root, got {self.candidates_csv!r}")
        if self.planes not in PLANE_MODES:
            raise ConfigError(f"patches.planes must be one of {list(PLANE_MODES)}, got {self.planes!r}")
        if self.cube_mm <= 0 or self.plane_mm <= 0 or int(self.plane_px) < 2:
            raise ConfigError("patches.cube_mm and plane_mm must be > 0 and plane_px >= 2")
        if int(self.pos_shifts) < 0 or self.shift_mm < 0:
            raise ConfigError("patches.pos_shifts and shift_mm must be >= 0")
        if int(self.shard_size) < 1 or int(self.workers) < 1:
            raise ConfigError("patches.shard_size and workers must be >= 1")
        if isinstance(self.folds, dict):
            object.__setattr__(self, "folds", Folds(**self.folds))
