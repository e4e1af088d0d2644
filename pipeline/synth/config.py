"""``SynthConfig``: the ``synth:`` section of params.yaml (defaults = the default params)."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ConfigError

SLICE_CHOICES_MM = (0.625, 1.0, 1.25, 2.0, 2.5)


@dataclass(frozen=True)
class SynthConfig:
    """Synthetic LUNA16-format data set.

    Attributes:
        scans: number of scans written.
        subsets: number of ``subsetK`` folders; scan ``i`` goes to ``subset{i % subsets}``.
        seed: master seed; the same seed gives byte-identical output.
        fov_mm: field of view (x, y, z) mm of each scan (anatomy is scaled to fit).
        spacing_inplane_mm: (min, max) in-plane spacing, drawn uniformly per scan (x = y).
        slice_mm: slice spacings (mm) drawn from per scan.
        flip_fraction: share of scans with one index axis flipped (direction diag(+-1)).
        nodules_per_scan: (min, max) annotated nodules per scan (inclusive).
        diameter_mm: (min, max) nodule diameter; annotated nodules are > 3 mm.
        negatives_per_scan: class-0 candidates per scan.
        hard_negative_fraction: share of class-0 candidates on vessels, branch points, pleura.
        noise_hu: (min, max) standard deviation of the CT noise, drawn per scan.
    """

    scans: int = 12
    subsets: int = 6
    seed: int = 0
    fov_mm: tuple[float, float, float] = (220.0, 220.0, 120.0)
    spacing_inplane_mm: tuple[float, float] = (0.5, 0.9)
    slice_mm: tuple[float, ...] = SLICE_CHOICES_MM
    flip_fraction: float = 0.25
    nodules_per_scan: tuple[int, int] = (0, 4)
    diameter_mm: tuple[float, float] = (3.0, 30.0)
    negatives_per_scan: int = 60
    hard_negative_fraction: float = 0.5
    noise_hu: tuple[float, float] = (20.0, 40.0)

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ConfigError(f"synth: {msg}")

        if int(self.scans) < 1:
            bad(f"scans must be >= 1, got {self.scans}")
        if int(self.subsets) < 1:
            bad(f"subsets must be >= 1, got {self.subsets}")
        if len(self.fov_mm) != 3 or min(self.fov_mm) < 40:
            bad(f"fov_mm must be 3 values (x, y, z) >= 40 mm, got {list(self.fov_mm)}")
        lo, hi = self.spacing_inplane_mm
        if not 0.1 <= lo <= hi <= 5:
            bad(f"spacing_inplane_mm must be [min, max] within 0.1..5 mm, got {list(self.spacing_inplane_mm)}")
        if not self.slice_mm or min(self.slice_mm) <= 0:
            bad(f"slice_mm must be a non-empty list of positive mm, e.g. {list(SLICE_CHOICES_MM)}")
        if not 0 <= self.flip_fraction <= 1:
            bad(f"flip_fraction must be within 0..1, got {self.flip_fraction}")
        n0, n1 = self.nodules_per_scan
        if not 0 <= n0 <= n1 <= 20:
            bad(f"nodules_per_scan must be [min, max] within 0..20, got {list(self.nodules_per_scan)}")
        d0, d1 = self.diameter_mm
        if not 3 <= d0 < d1 <= 40:
            bad(f"diameter_mm must be [min, max] with 3 <= min < max <= 40, got {list(self.diameter_mm)}")
        if int(self.negatives_per_scan) < 0:
            bad(f"negatives_per_scan must be >= 0, got {self.negatives_per_scan}")
        if not 0 <= self.hard_negative_fraction <= 1:
            bad(f"hard_negative_fraction must be within 0..1, got {self.hard_negative_fraction}")
        if not 0 <= self.noise_hu[0] <= self.noise_hu[1] <= 200:
            bad(f"noise_hu must be [min, max] within 0..200 HU, got {list(self.noise_hu)}")
