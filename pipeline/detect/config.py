"""Typed config of whole-scan detection (the ``infer:`` section of params.yaml; ``detect`` CLI flags)."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ConfigError

COMBINE = ("classifier", "geomean", "product", "mean", "segmenter")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
ROI_MODES = ("auto", "lung", "whole")


@dataclass(frozen=True)
class DetectConfig:
    """Detection parameters.

    Attributes:
        seg_threshold: segmenter probability above which voxels form candidate components.
        nms_mm: candidates whose centres are closer than this (mm) are merged (the higher
            seg score is kept).
        max_candidates: top candidates (by segmenter max probability) sent to the classifier.
        max_findings: findings kept per scan (sorted by ``probability``).
        min_size_mm: components with an equivalent-sphere diameter below this are dropped.
        max_size_mm: components with an equivalent-sphere diameter above this are beyond what the
            classifier was trained on (LUNA16 nodules are 3-30 mm): with ``measure`` they are kept
            and scored by the segmenter alone (a mass is reported, never dropped); without it they
            are dropped as before.
        roi_size: sliding-window size (z, y, x) voxels on the preprocessed grid.
        overlap: sliding-window overlap fraction (MONAI).
        lung_margin_mm: the segmenter runs only on the lung mask's bounding box grown by this
            margin (mm; context for the network); None = the whole volume. Candidates come from
            inside the lung mask only, so this changes speed, not results near the lungs.
        roi_mode: where the segmenter runs: ``lung`` (the box above), ``whole`` (the whole volume),
            ``auto`` (whole on CUDA, lung box on CPU: the faster one measured on each). Either way
            windows holding no lung-mask voxel are skipped (same probabilities inside the mask).
        sw_batch_size: windows per segmenter forward pass.
        combine: final probability from the segmenter max prob ``s`` and classifier prob ``c``:
            ``classifier`` = c; ``geomean`` = sqrt(s*c) (default: both models must agree,
            and it stays a [0, 1] probability-like score); ``product`` = s*c;
            ``mean`` = (s+c)/2; ``segmenter`` = s (no classifier run).
        device: auto | cpu | cuda.
        precision: autocast dtype: auto (bf16/fp16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32 (bf16 on
            CPU: a full-bf16 copy, no faster than the fused fp32 model, findings may shift).
        batch_size: classifier patches per forward pass.
        subsets: LUNA16 subsets the ``infer`` stage runs on; None = the classifier's test subsets.
        measure: segment and measure every finding (:mod:`pipeline.measure`): mask, centre, volume,
            axes, type, Lung-RADS category, image number, side; the classifier scores the mask's
            centre. False: the coordinate list of the segmenter's components only.
        dicom_out: for every DICOM input series also a DICOM SEG + SR (``dicom/<id>_{seg,sr}.dcm``,
            :mod:`pipeline.detect.dicom_export`); opt-in because they carry the source's patient and
            study identity, as objects filed back into a PACS must.
        max_failures: ``infer`` only: exit 0 (not 3) while at most this many scans failed (they are
            listed in errors.csv and still count as scans in seriesuids.csv, i.e. as misses).
    """

    seg_threshold: float = 0.5
    nms_mm: float = 10.0
    max_candidates: int = 64
    max_findings: int = 20
    min_size_mm: float = 2.0
    max_size_mm: float = 60.0
    roi_size: tuple[int, int, int] = (64, 64, 64)
    overlap: float = 0.25
    lung_margin_mm: float | None = 16.0
    roi_mode: str = "auto"
    sw_batch_size: int = 4
    combine: str = "geomean"
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 32
    subsets: tuple[int, ...] | None = None
    max_failures: int = 0
    measure: bool = True
    dicom_out: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < float(self.seg_threshold) < 1.0:
            raise ConfigError(f"infer.seg_threshold must be in (0, 1), got {self.seg_threshold}")
        if float(self.nms_mm) < 0 or not 0 <= float(self.min_size_mm) < float(self.max_size_mm):
            raise ConfigError("infer.nms_mm must be >= 0 and 0 <= infer.min_size_mm < infer.max_size_mm")
        if int(self.max_failures) < 0:
            raise ConfigError(f"infer.max_failures must be >= 0, got {self.max_failures}")
        for name in ("max_candidates", "max_findings", "sw_batch_size", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"infer.{name} must be >= 1, got {getattr(self, name)}")
        roi = tuple(int(v) for v in (self.roi_size if not isinstance(self.roi_size, int) else [self.roi_size] * 3))
        if len(roi) != 3 or min(roi) < 16:
            raise ConfigError(f"infer.roi_size must be 3 sizes >= 16 voxels (z, y, x), got {list(roi)}")
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ConfigError(f"infer.overlap must be in [0, 1), got {self.overlap}")
        if self.lung_margin_mm is not None and float(self.lung_margin_mm) < 0:
            raise ConfigError(f"infer.lung_margin_mm must be null or >= 0, got {self.lung_margin_mm}")
        if self.roi_mode not in ROI_MODES:
            raise ConfigError(f"infer.roi_mode must be one of {', '.join(ROI_MODES)}; got {self.roi_mode!r}")
        if self.combine not in COMBINE:
            raise ConfigError(f"infer.combine must be one of {', '.join(COMBINE)}; got {self.combine!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"infer.device must be one of {', '.join(DEVICES)}; got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"infer.precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        subs = self.subsets
        if subs is not None:
            subs = (int(subs),) if isinstance(subs, int) else tuple(int(s) for s in subs)
        object.__setattr__(self, "roi_size", roi)
        object.__setattr__(self, "subsets", subs)
