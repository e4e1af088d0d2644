"""``SynthConfig``: the ``synth:`` section of params.yaml (defaults = the default params)."""
from __future__ import annotations

import re
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
        positives_per_nodule: (min, max) class-1 candidates per annotated nodule (inclusive), the
            count drawn uniformly per nodule. LUNA16's candidates_V2.csv has ~1.3 per nodule,
            up to several.
        positive_offset: max distance of a class-1 candidate from its nodule's centre, as a
            fraction of the radius (0..1); the distance is drawn uniformly in [0, offset * radius]
            in a random direction. LUNA16-like: 1.0 (candidates anywhere inside the nodule).
        negatives_per_scan: class-0 candidates per scan (requested). Drawn from finite pools
            (branch points, vessel, pleura, lung voxels) and never within radius + 1 mm of an
            annotated nodule; a few hundred fit a 120 x 120 x 60 mm scan. When a pool runs out
            (e.g. thousands on a small, coarse grid) the scan gets fewer class-0 rows (never rows
            inside a nodule).
        hard_negative_fraction: share of class-0 candidates on vessels, branch points, pleura.
        mass_fraction: share of scans holding one mass (a lesion over 30 mm: irregular, solid, about
            half of them on the chest wall), exactly ``round(mass_fraction * scans)`` scans, chosen by
            a random stream of its own (the other scans are byte-identical to a run without masses).
            A mass is listed in ``annotations_excluded.csv`` with the diameter of the sphere
            around its centre that holds all of it, lobes included (the LUNA16 FROC
            ignores marks on it, as LUNA16 does with lesions over 30 mm) and gets class-0
            candidates on it (as LUNA16's candidate detectors fire on masses); the patch
            store turns excluded findings of ``patches.mass_min_mm`` or more into segmentation targets.
        mass_diameter_mm: (min, max) nominal mass diameter; a mass that does not fit its lung is
            drawn smaller (down to ``min``), and one that still does not fit is left out (counted in
            ``synth_summary.json``). The pleura clips what pokes through, as for juxta-pleural nodules.
        noise_hu: (min, max) standard deviation of the CT noise, drawn per scan.
        candidates_csv_names: file names the candidates table is written under in the root
            (the same bytes under each), e.g. ``[candidates.csv, candidates_V2.csv]`` so that the
            real-LUNA16 preset's ``patches.candidates_csv: candidates_V2.csv`` finds its file.

    The defaults reproduce the previous generator byte for byte (same random draws).

    LUNA16-shaped example (tiny: ~0.3 s per scan on a CPU; several positives per nodule spread
    over the whole nodule, a few hundred negatives per scan, 10 subsets with one scan each)::

        synth:
          scans: 10
          subsets: 10
          fov_mm: [120, 120, 60]
          nodules_per_scan: [1, 3]
          positives_per_nodule: [1, 4]
          positive_offset: 1.0
          negatives_per_scan: 200
          candidates_csv_names: [candidates.csv, candidates_V2.csv]
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
    positives_per_nodule: tuple[int, int] = (1, 2)
    positive_offset: float = 0.25
    negatives_per_scan: int = 60
    hard_negative_fraction: float = 0.5
    mass_fraction: float = 0.25
    mass_diameter_mm: tuple[float, float] = (30.0, 70.0)
    noise_hu: tuple[float, float] = (20.0, 40.0)
    candidates_csv_names: tuple[str, ...] = ("candidates.csv",)

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
        pp = self.positives_per_nodule
        if len(pp) != 2 or not 1 <= pp[0] <= pp[1] <= 50:
            bad(f"positives_per_nodule must be [min, max] within 1..50, got {list(self.positives_per_nodule)}")
        if not 0 <= self.positive_offset <= 1:
            bad(f"positive_offset must be within 0..1 (fraction of the nodule radius), got {self.positive_offset}")
        if int(self.negatives_per_scan) < 0:
            bad(f"negatives_per_scan must be >= 0, got {self.negatives_per_scan}")
        if not 0 <= self.hard_negative_fraction <= 1:
            bad(f"hard_negative_fraction must be within 0..1, got {self.hard_negative_fraction}")
        if not 0 <= self.mass_fraction <= 1:
            bad(f"mass_fraction must be within 0..1, got {self.mass_fraction}")
        m0, m1 = self.mass_diameter_mm
        if not 30 <= m0 <= m1 <= 120:
            bad(f"mass_diameter_mm must be [min, max] with 30 <= min <= max <= 120, got {list(self.mass_diameter_mm)}")
        if not 0 <= self.noise_hu[0] <= self.noise_hu[1] <= 200:
            bad(f"noise_hu must be [min, max] within 0..200 HU, got {list(self.noise_hu)}")
        names = self.candidates_csv_names
        if isinstance(names, str) or not names or len(set(names)) != len(names) or not all(
                isinstance(n, str) and re.fullmatch(r"candidates[\w.-]*\.csv", n) for n in names):
            bad(f"candidates_csv_names must be a list of distinct file names candidates*.csv, got {names if isinstance(names, str) else list(names)!r}")
