"""Transfer-learning strategies: which encoder stages train, at which learning rate.

Works on any model with ``.stages`` (encoder sub-modules, shallow -> deep, covering every
encoder parameter) and ``.provenance``; every other parameter is the "head" (classifier head,
or the segmenter's decoder).

Strategies
----------
``linear_probe``  encoder frozen (weights AND BatchNorm statistics), head trains.
``partial``       the deepest ``unfreeze_stages`` stages + head train.
``full``          everything trains.
``progressive``   head only for ``progressive_epochs_per_stage`` epochs, then one more stage
                  (deepest first) every ``progressive_epochs_per_stage`` epochs.
``scratch``       everything trains from random init (build the model with ``weights: none``).
``auto``          :func:`resolve_strategy` picks one from the dataset-size x domain-similarity
                  matrix.
Learning rates (discriminative): head ``lr``; trainable stage k counted from the top
(deepest = 0): ``lr * encoder_lr_mult * layer_decay**k`` (``scratch``: ``lr`` everywhere).

Trainer protocol, each epoch::

    if needs_new_optimizer(strategy, epoch, cfg, len(model.stages)):
        groups = apply_strategy(model, strategy, cfg, epoch); opt = SGD/AdamW(groups, ...)
    set_train_mode(model)          # instead of model.train(): frozen stages stay in eval
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)
STRATEGIES = ("auto", "linear_probe", "partial", "full", "progressive", "scratch")
SMALL_PER_CLASS = 1000  # fewer samples than this in the minority class = "small" dataset
SIMILAR_FAMILIES = ("medicalnet", "ct")  # pretrained on CT/MR; ImageNet photos are dissimilar


@dataclass(frozen=True)
class TransferConfig:
    """``transfer:`` section of params.yaml."""

    strategy: str = "auto"
    unfreeze_stages: int = 2
    lr: float = 1e-3
    encoder_lr_mult: float = 0.1
    layer_decay: float = 0.5
    progressive_epochs_per_stage: int = 1


def _check(strategy: str, allow_auto: bool = True) -> None:
    valid = STRATEGIES if allow_auto else STRATEGIES[1:]
    if strategy not in valid:
        hint = " (call resolve_strategy first)" if strategy == "auto" else ""
        raise ConfigError(f"unknown transfer strategy '{strategy}'{hint}; valid: {', '.join(valid)}")


def resolve_strategy(strategy: str, n_min_class: int, family: str, *,
                     pretrained: bool = True) -> tuple[str, str]:
    """Return (strategy, reason). ``auto`` uses the size-similarity matrix:
    small (< 1000 per class) + similar -> linear_probe; small + dissimilar -> partial;
    large + similar -> full; large + dissimilar -> full. A randomly initialised encoder
    (``pretrained=False``, i.e. ``weights: none``) resolves to ``scratch``."""
    _check(strategy)
    if strategy != "auto":
        return strategy, f"strategy '{strategy}' set explicitly"
    if not pretrained:
        return "scratch", "encoder randomly initialised (weights: none): nothing to transfer -> scratch"
    small = n_min_class < SMALL_PER_CLASS
    similar = family in SIMILAR_FAMILIES
    size = f"{'small' if small else 'large'} data ({n_min_class} samples in the minority class, " \
           f"threshold {SMALL_PER_CLASS})"
    dom = f"{'similar' if similar else 'dissimilar'} domain ({family} weights vs CT)"
    if small and similar:
        return "linear_probe", f"{size} + {dom}: features transfer, too little data to fine-tune -> linear_probe"
    if small:
        return "partial", f"{size} + {dom}: keep generic low-level stages, fine-tune the upper stages -> partial"
    if similar:
        return "full", f"{size} + {dom}: enough data to fine-tune everything with small encoder LRs -> full"
    return "full", f"{size} + {dom}: enough data to re-learn the features, start from pretrained -> full"


def n_trainable_stages(strategy: str, cfg: TransferConfig, epoch: int, n_stages: int) -> int:
    """How many stages, counted from the deepest, train in ``epoch`` (0-based)."""
    _check(strategy, allow_auto=False)
    if strategy == "linear_probe":
        return 0
    if strategy == "partial":
        if not 0 <= cfg.unfreeze_stages <= n_stages:
            raise ConfigError(f"transfer.unfreeze_stages must be in 0..{n_stages}, got {cfg.unfreeze_stages}")
        return cfg.unfreeze_stages
    if strategy == "progressive":
        per = cfg.progressive_epochs_per_stage
        if per < 1:
            raise ConfigError(f"transfer.progressive_epochs_per_stage must be >= 1, got {per}")
        return min(n_stages, epoch // per)
    return n_stages  # full, scratch


def needs_new_optimizer(strategy: str, epoch: int, cfg: TransferConfig, n_stages: int = 5) -> bool:
    """True when the param groups for ``epoch`` differ from the previous epoch's."""
    if epoch == 0:
        return True
    return (n_trainable_stages(strategy, cfg, epoch, n_stages)
            != n_trainable_stages(strategy, cfg, epoch - 1, n_stages))


def _head_params(model: nn.Module) -> list[nn.Parameter]:
    enc = {id(p) for s in model.stages for p in s.parameters()}
    return [p for p in model.parameters() if id(p) not in enc]


def apply_strategy(model: nn.Module, strategy: str, cfg: TransferConfig, epoch: int) -> list[dict]:
    """Set ``requires_grad`` for ``epoch`` and return optimizer param groups
    ``[{"params", "lr", "name"}, ...]`` (head first, then trainable stages deep -> shallow)."""
    _check(strategy, allow_auto=False)
    if strategy == "scratch" and model.provenance.get("weights_source") != "random":
        raise ConfigError("transfer strategy 'scratch' needs a randomly initialised encoder; "
                          f"set weights: none (encoder has {model.provenance.get('weights_source')} weights)")
    if strategy in ("linear_probe", "partial", "progressive") and \
            model.provenance.get("weights_source") == "random":
        log.warning("transfer strategy '%s' freezes a RANDOMLY initialised encoder (weights: none)", strategy)
    stages = model.stages
    n = n_trainable_stages(strategy, cfg, epoch, len(stages))
    first = len(stages) - n
    head = _head_params(model)
    for p in head:
        p.requires_grad_(True)
    groups = [{"params": head, "lr": cfg.lr, "name": "head"}]
    for i in reversed(range(len(stages))):
        trainable = i >= first
        for p in stages[i].parameters():
            p.requires_grad_(trainable)
        if trainable:
            k = len(stages) - 1 - i
            lr = cfg.lr if strategy == "scratch" else cfg.lr * cfg.encoder_lr_mult * cfg.layer_decay ** k
            groups.append({"params": list(stages[i].parameters()), "lr": lr, "name": f"stage{i}"})
    model.transfer_state = {"strategy": strategy, "epoch": epoch, "frozen_stages": list(range(first))}
    set_train_mode(model, model.training)
    return [g for g in groups if g["params"]]


def set_train_mode(model: nn.Module, train: bool = True) -> nn.Module:
    """``model.train(train)``, then frozen stages back to eval so their BatchNorm running
    statistics (and dropout) stay as pretrained. Call instead of ``model.train()``."""
    model.train(train)
    for i in getattr(model, "transfer_state", {}).get("frozen_stages", []):
        model.stages[i].eval()
    return model


def trainable_summary(model: nn.Module) -> dict:
    """Counts for logging: total/trainable parameters, per stage and head."""
    def count(ps, trainable_only=False):
        return sum(p.numel() for p in ps if p.requires_grad or not trainable_only)

    head = _head_params(model)
    return {
        "strategy": getattr(model, "transfer_state", {}).get("strategy"),
        "total_params": count(model.parameters()),
        "trainable_params": count(model.parameters(), True),
        "head_params": count(head),
        "stages": [{"stage": i, "params": count(s.parameters()),
                    "trainable": any(p.requires_grad for p in s.parameters())}
                   for i, s in enumerate(model.stages)],
    }
