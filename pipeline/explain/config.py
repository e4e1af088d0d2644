"""``explain:`` section of params.yaml (stage ``explain``)."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ConfigError

METHODS = ("gradcampp", "gradcam", "occlusion")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ExplainConfig:
    """Args:
        split: patch-store split whose positives get saliency maps.
        methods: saliency methods (gradcampp | gradcam | occlusion), the first one primary (its
            maps go on the contact sheet's overlay row first; each method's inside share is reported).
        layer: Grad-CAM layer: an encoder stage index (``-1`` = last conv stage, ``-2`` the one
            before, ...) or a module name of the classifier (``encoder._blocks.10``).
        n_sheet: positives drawn (seeded) for per-sample maps, the contact sheet and the shares.
        occlusion_mm: occluded square / cube edge (mm); occlusion_overlap: MONAI window overlap;
        occlusion_hu: value the occluded region is set to (HU; -800 = lung parenchyma: the nodule replaced by lung).
        feature_split: split embedded in the feature-space figure; probe_fit_split /
            probe_eval_split: the linear probe is fit on one split and scored (AUC) on another.
        max_embed: at most this many patches (stratified, seeded) embedded by t-SNE / PCA.
        probe_c: inverse L2 strength of the logistic-regression probe (standardised features).
        batch_size, device, seed.
    """

    split: str = "test"
    methods: tuple = ("occlusion", "gradcampp")
    layer: str | int = -1
    n_sheet: int = 16
    occlusion_mm: float = 6.0
    occlusion_overlap: float = 0.5
    occlusion_hu: float = -800.0
    feature_split: str = "val"
    probe_fit_split: str = "val"
    probe_eval_split: str = "test"
    max_embed: int = 600
    probe_c: float = 0.1
    batch_size: int = 64
    device: str = "auto"
    seed: int = 0

    def __post_init__(self):
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ConfigError(f"explain.methods must be a non-empty list of {', '.join(METHODS)}; got {list(self.methods)}")
        for key in ("split", "feature_split", "probe_fit_split", "probe_eval_split"):
            if getattr(self, key) not in SPLITS:
                raise ConfigError(f"explain.{key} must be one of {', '.join(SPLITS)}; got {getattr(self, key)!r}")
        if self.probe_fit_split == self.probe_eval_split:
            raise ConfigError("explain.probe_fit_split and probe_eval_split must differ (held-out AUC)")
        if self.n_sheet < 1 or self.max_embed < 10:
            raise ConfigError("explain: n_sheet must be >= 1 and max_embed >= 10")
        if not 0.0 <= self.occlusion_overlap < 1.0 or self.occlusion_mm <= 0 or self.probe_c <= 0:
            raise ConfigError("explain: need 0 <= occlusion_overlap < 1, occlusion_mm > 0, probe_c > 0")
