"""Typed configs of the ``train`` (classifier) and ``train_seg`` (segmenter) params sections."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DEVICES = ("auto", "cpu", "cuda")
IMBALANCE = ("sampler", "focal", "none")
LOADERS = ("batched", "dataset")
SEG_LOSSES = ("dice_ce", "dice_focal")


def _choice(name: str, value: str, valid: tuple) -> None:
    if value not in valid:
        raise ConfigError(f"{name} must be one of {', '.join(valid)}; got {value!r}")


def _subsets(value) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (int(value),)
    return tuple(int(v) for v in value)


@dataclass(frozen=True)
class _Common:
    """Fields shared by the classifier and the segmenter trainer (see :class:`TrainConfig`)."""

    weights: str = "pretrained"
    weights_path: str | None = None
    allow_download: bool = False
    strategy: str = "auto"
    unfreeze_stages: int = 2
    lr: float = 1e-3
    encoder_lr_mult: float = 0.1
    layer_decay: float = 0.5
    progressive_epochs_per_stage: int = 1
    epochs: int = 15
    batch_size: int = 32
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    patience: int = 5
    precision: str = "auto"
    device: str = "auto"
    imbalance: str = "sampler"
    augment: bool = True
    num_workers: int = 0
    seed: int = 0
    test_subsets: tuple[int, ...] | None = None
    val_subsets: tuple[int, ...] | None = None
    max_train_samples: int | None = None
    window_hu: tuple[float, float] = (-1000.0, 400.0)
    neg_ratio: float | None = None
    loader: str = "batched"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        from pipeline.models.transfer import STRATEGIES

        _choice("train.precision", self.precision, PRECISIONS)
        _choice("train.device", self.device, DEVICES)
        _choice("train.imbalance", self.imbalance, IMBALANCE)
        _choice("train.loader", self.loader, LOADERS)
        _choice("train.strategy", self.strategy, STRATEGIES)
        _choice("train.weights", self.weights, ("pretrained", "none"))
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if int(self.patience) < 0 or int(self.num_workers) < 0 or self.warmup_epochs < 0:
            raise ConfigError("train.patience, num_workers and warmup_epochs must be >= 0")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.neg_ratio is not None and float(self.neg_ratio) <= 0:
            raise ConfigError(f"train.neg_ratio must be null or > 0, got {self.neg_ratio}")
        if self.max_train_samples is not None and int(self.max_train_samples) < 2:
            raise ConfigError(f"train.max_train_samples must be null or >= 2, got {self.max_train_samples}")
        t, v = _subsets(self.test_subsets), _subsets(self.val_subsets)
        if t is not None and v is not None and set(t) & set(v):
            raise ConfigError(f"train.test_subsets and val_subsets overlap: {sorted(set(t) & set(v))}")
        object.__setattr__(self, "test_subsets", t)
        object.__setattr__(self, "val_subsets", v)
        object.__setattr__(self, "window_hu", tuple(float(x) for x in self.window_hu))

    def transfer(self):
        from pipeline.models.transfer import TransferConfig

        return TransferConfig(strategy=self.strategy, unfreeze_stages=int(self.unfreeze_stages), lr=float(self.lr),
                              encoder_lr_mult=float(self.encoder_lr_mult), layer_decay=float(self.layer_decay),
                              progressive_epochs_per_stage=int(self.progressive_epochs_per_stage))


@dataclass(frozen=True)
class TrainConfig(_Common):
    """``train:`` section: the nodule classifier (false-positive reduction).

    Model: ``encoder`` (2D ImageNet encoders train on ``planes`` (B, 3, P, P), MedicalNet 3D
    encoders on ``cubes`` (B, 1, S, S, S)), ``weights`` pretrained|none, ``head_hidden``, ``dropout``.
    Transfer: ``strategy`` (auto|linear_probe|partial|full|progressive|scratch), ``unfreeze_stages``,
    ``lr`` (head), ``encoder_lr_mult``, ``layer_decay``, ``progressive_epochs_per_stage``.
    Loop: ``epochs``, ``batch_size``, ``weight_decay`` (AdamW), ``warmup_epochs`` (linear warm-up,
    then cosine, per step), ``patience`` (early stop on val AUC; 0 = off), ``precision``
    auto|bf16|fp16|fp32 (fp16 needs CUDA: ConfigError on CPU), ``device`` auto|cpu|cuda,
    ``imbalance`` sampler (balanced WeightedRandomSampler) | focal (sigmoid focal loss) | none,
    ``augment`` (MONAI flips / in-plane rot90 / small affine / HU noise+shift, train only),
    ``num_workers``, ``seed``. ``loader``: batched (the train split held in one tensor, batches
    gathered and augmented as tensor ops on the device, :mod:`pipeline.train.memstore`) | dataset
    (the per-sample MONAI path through a DataLoader). ``channels_last`` / ``compile``: model in
    channels-last memory format / wrapped in ``torch.compile`` (off: on an H100 channels-last was
    slower). Splits: the index ``split`` column unless ``test_subsets`` /
    ``val_subsets`` (LUNA16 subset numbers) are given. ``max_train_samples``: random subset of train.
    ``neg_ratio``: negatives per positive drawn afresh each epoch from the train side of the fold
    (null = all; the scored subsets are never subsampled, see :class:`~pipeline.train.data.EpochSampler`).
    """

    encoder: str = "efficientnet_lite0"
    head_hidden: int = 256
    dropout: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"train.dropout must be in [0, 1), got {self.dropout}")

    def model(self, weights: str | None = None):
        from pipeline.models.classifier import ModelConfig

        return ModelConfig(encoder=self.encoder, weights=weights or self.weights, weights_path=self.weights_path,
                           allow_download=self.allow_download, head_hidden=int(self.head_hidden),
                           dropout=float(self.dropout), window_hu=self.window_hu)


@dataclass(frozen=True)
class SegTrainConfig(_Common):
    """``train_seg:`` section: the 3D nodule segmenter (FlexibleUNet, MedicalNet encoder).

    Same loop fields as :class:`TrainConfig`; ``features`` = decoder channels (deep -> shallow),
    ``loss`` dice_ce|dice_focal (MONAI, sigmoid), ``crop`` = cube edge in voxels fed to the net
    (a multiple of 16, centred crop; null = largest multiple of 16 <= S), ``neg_per_pos`` =
    negatives kept per positive in train (null = all). Masks: every annotated nodule intersecting
    the cube, from ``annotations.csv`` (world centre + diameter, via the geometry module); excluded
    findings are an ignore region (see :mod:`pipeline.patches.nodules`).
    """

    encoder: str = "medicalnet_resnet10"
    weights: str = "none"
    strategy: str = "scratch"
    features: tuple[int, ...] = (128, 64, 32, 16, 16)
    loss: str = "dice_ce"
    crop: int | None = None
    neg_per_pos: float | None = 1.0
    epochs: int = 8
    batch_size: int = 4
    lr: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice("train_seg.loss", self.loss, SEG_LOSSES)
        if self.crop is not None and (int(self.crop) < 16 or int(self.crop) % 16):
            raise ConfigError(f"train_seg.crop must be null or a positive multiple of 16, got {self.crop}")
        object.__setattr__(self, "features", tuple(int(f) for f in self.features))

    def model(self, weights: str | None = None):
        from pipeline.models.segmenter import SegmenterConfig

        return SegmenterConfig(encoder=self.encoder, weights=weights or self.weights, weights_path=self.weights_path,
                               allow_download=self.allow_download, features=self.features, window_hu=self.window_hu)
