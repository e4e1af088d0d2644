"""The ``train_seg`` stage: 3D nodule segmenter (FlexibleUNet + MedicalNet encoder) on patch cubes.

Targets: every annotated nodule (``annotations.csv``) that intersects the cube, drawn from its world
centre and diameter through the geometry module (the patch store's ``nodules.csv``), for positive
and negative cubes alike, so off-centre candidates, several candidates of one nodule and a second
nodule inside a negative cube are labelled correctly. Excluded findings
(``annotations_excluded.csv``) are an ignore region: their voxels are forced to background logits
with no gradient, so they add neither Dice nor (beyond a constant) cross-entropy; the exception are
masses (excluded findings of ``patches.mass_min_mm`` or more), which are targets, and whose cubes
are always kept like positives. Inputs: the
centred ``crop``^3 of each cube (multiple of 16). Loss: MONAI DiceCELoss / DiceFocalLoss (sigmoid).
Validation: mean Dice over cubes whose mask is not empty (threshold 0.5), val loss, and AUC of the
max voxel probability as a nodule score (label = candidate class), on every validation positive
and up to max(2, neg_per_pos) negatives per positive.
Outputs as the classifier (``models/segmenter``; DVCLive ``dvclive/segmenter``).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import to_dict
from pipeline.errors import ConfigError, DataError
from pipeline.train.config import SegTrainConfig
from pipeline.train.stage import (
    TrainResult,
    finish_outputs,
    input_context,
    make_datasets,
    seed_everything,
)
from pipeline.utils import write_json

log = logging.getLogger(__name__)


def segmenter_task(cfg: SegTrainConfig):
    from monai.losses import DiceCELoss, DiceFocalLoss

    from pipeline.evaluate.classify import dice, roc_auc
    from pipeline.runtime import autocast
    from pipeline.train.distributed import gather_cat
    from pipeline.train.loop import Task

    crit = (DiceCELoss if cfg.loss == "dice_ce" else DiceFocalLoss)(sigmoid=True)

    def loss(logits, batch):
        return crit(masked_logits(logits, batch.get("ignore")), batch["mask"])

    @torch.no_grad()
    def evaluate(model, loader, device, amp):
        model.eval()
        losses, dices, scores, labels = [], [], [], []
        for batch in loader:
            with autocast(device, amp):
                logits = model(batch["x"].to(device)).float()
            m = batch["mask"].to(device)
            ign = batch["ignore"].to(device) if "ignore" in batch else None
            logits = masked_logits(logits, ign)
            losses.append(float(crit(logits, m)) * len(m))
            prob = torch.sigmoid(logits).cpu().numpy()
            for p, t, y in zip(prob, batch["mask"].numpy(), batch["y"].numpy()):
                scores.append(float(p.max()))
                labels.append(int(y))
                if t.any():
                    dices.append(dice(p > 0.5, t > 0.5))
        losses, dices, scores, labels = gather_cat(losses, dices, scores, labels)  # all ranks' shards, in order
        n = len(labels)
        if not n:
            return {"val_loss": float("nan"), "val_dice": float("nan"), "val_auc": float("nan")}
        return {"val_loss": sum(losses) / n, "val_dice": float(np.mean(dices)) if dices else float("nan"),
                "val_auc": roc_auc(np.array(labels), np.array(scores))}

    return Task(loss=loss, evaluate=evaluate, monitor="val_dice")


IGNORE_LOGIT = -30.0  # sigmoid(-30) ~ 1e-13: an ignored voxel counts as a confident background


def masked_logits(logits: torch.Tensor, ignore: torch.Tensor | None) -> torch.Tensor:
    """``logits`` (B, 1, Z, Y, X) with ignored voxels (``ignore`` > 0.5) replaced by a constant
    background logit: they get no gradient and (target 0) no Dice contribution."""
    if ignore is None:
        return logits
    return logits.masked_fill(ignore.to(logits.device) > 0.5, IGNORE_LOGIT)


def _row_filter(index, neg_per_pos, seed, nodules=None):
    """Row filters (train, val) balancing positives and negatives; a row inside a mass (class 0 for
    the LUNA16 classifier, a lesion for the segmenter) counts as a positive: always kept."""
    from pipeline.patches.nodules import in_masses

    lab = index["label"].to_numpy() + in_masses(index, nodules)

    def balanced(rows: np.ndarray, ratio: float | None, seed_: int) -> np.ndarray:
        if ratio is None:
            return rows
        pos, neg = rows[lab[rows] > 0], rows[lab[rows] == 0]
        k = min(len(neg), round(ratio * max(len(pos), 1)))
        neg = np.random.default_rng(seed_).choice(neg, size=k, replace=False) if k < len(neg) else neg
        return np.sort(np.concatenate([pos, neg]))

    def keep_train(rows: np.ndarray) -> np.ndarray:
        return balanced(rows, neg_per_pos, seed)

    def keep_val(rows: np.ndarray) -> np.ndarray:
        # every positive and up to 2 negatives per positive (at least neg_per_pos): Dice is measured on
        # positives only; the negatives keep the max-probability AUC meaningful at a fraction of the cost
        ratio = None if neg_per_pos is None else max(2.0, float(neg_per_pos))
        return balanced(rows, ratio, seed + 1)

    return keep_train, keep_val


def train_segmenter(patches_dir: str | os.PathLike, out_dir: str | os.PathLike,
                    cfg: SegTrainConfig | None = None, *, preprocessed_dir=None,
                    live_dir="dvclive/segmenter", resume: bool = False, stop_after: int | None = None,
                    progress: bool = True, run_log=None) -> TrainResult:
    """Train the segmenter on the cubes of ``patches_dir``; writes ``out_dir`` like the classifier."""
    from pipeline.models.segmenter import build_segmenter
    from pipeline.models.transfer import resolve_strategy
    from pipeline.patches.dataset import PatchStore
    from pipeline.runtime import resolve_device, resolve_precision
    from pipeline.train.distributed import is_main, session
    from pipeline.train.loop import Trainer

    cfg = cfg or SegTrainConfig()
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    store = PatchStore(patches_dir)
    ctx = input_context(patches_dir, preprocessed_dir)
    full = int(store.cubes(store.index["sample"].to_numpy()[:1]).shape[-1])
    crop = int(cfg.crop) if cfg.crop else (full // 16) * 16
    if crop < 16 or crop > full:
        raise ConfigError(f"train_seg.crop {crop} must be a multiple of 16 in 16..{full} (cube edge {full})")
    if store.nodules is None:
        raise DataError(store.root / "nodules.csv", "missing: the segmenter's targets come from it (rerun patches)")
    model = build_segmenter(cfg.model())
    keep_train, keep_val = _row_filter(store.index, cfg.neg_per_pos, cfg.seed, store.nodules)
    train_ds, val_ds = make_datasets(store, cfg, "3d", crop=crop, masks=True, row_filters=(keep_train, keep_val))
    n_min = int(min(np.bincount((train_ds.labels > 0).astype(int), minlength=2)))
    strategy, reason = resolve_strategy(cfg.strategy, n_min, model.family,
                                        pretrained=model.provenance.get("weights_source") != "random")
    log.info("segmenter transfer strategy %s (%s)", strategy, reason)
    device = resolve_device(cfg.device)
    amp = resolve_precision(cfg.precision, device)
    config = {"task": "segmenter", "kind": "3d", "model": to_dict(cfg.model()), "train": to_dict(cfg),
              "strategy": strategy, "strategy_reason": reason,
              "input": {"kind": "3d", "source": "cubes", "crop": crop, "cube": full}, **ctx,
              "runtime": {"device": str(device), "precision": str(amp).replace("torch.", "") if amp else "fp32"}}
    if is_main():
        write_json(out / "config.json", config)
    with session(cfg.device):  # torchrun: join the process group; destroyed at the end, also on error
        trainer = Trainer(model, strategy, cfg, train_ds, val_ds, segmenter_task(cfg), out, live_dir=live_dir,
                          params={**to_dict(cfg), "strategy_resolved": strategy})
        fit = trainer.fit(resume=resume, stop_after=stop_after)
        metrics = finish_outputs(out, model, cfg, config, strategy, reason, fit, t0, len(train_ds), len(val_ds),
                                 "val_dice", run_log=run_log)
    return TrainResult(out, metrics, strategy, reason, fit.history)
