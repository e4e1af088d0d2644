"""The ``train`` stage for the nodule classifier: PatchStore -> ``models/classifier``.

Writes ``model.pt`` (best state_dict by val AUC), ``last.pt`` (for ``--resume``), ``config.json``
(resolved train config, model config, input description, patches + preprocess params),
``provenance.json`` (encoder weights source + sha256) and ``metrics.json``; per-epoch metrics
go to DVCLive (``live_dir``, default ``dvclive/classifier``).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import to_dict
from pipeline.errors import DataError
from pipeline.runlog import write_run_log
from pipeline.train.config import TrainConfig
from pipeline.utils import read_json, write_json

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    out_dir: Path
    metrics: dict[str, Any]
    strategy: str
    reason: str
    history: list[dict] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def input_context(patches_dir, preprocessed_dir=None) -> dict[str, Any]:
    """What detection needs to cut the same inputs: patches summary/params and preprocess params."""
    p = Path(patches_dir)
    summ = read_json(p / "summary.json") if (p / "summary.json").is_file() else {}
    ctx = {"patches": summ.get("params", {}), "spacing_xyz_mm": summ.get("spacing_xyz_mm"),
           "cube_shape_zyx": summ.get("cube_shape_zyx"), "plane_shape": summ.get("plane_shape"),
           "data": summ.get("data"), "preprocess": {}}
    if preprocessed_dir is not None and (Path(preprocessed_dir) / "summary.json").is_file():
        pre = read_json(Path(preprocessed_dir) / "summary.json")
        ctx["preprocess"] = {"params": pre.get("params", {}), "params_hash": pre.get("params_hash")}
    return ctx


def classifier_task(imbalance: str):
    """Loss (BCE or sigmoid focal) and evaluation (val loss, AUC, accuracy at 0.5)."""
    from pipeline.evaluate.classify import roc_auc
    from pipeline.train.distributed import gather_cat
    from pipeline.train.loop import Task, predict_logits

    def loss(logits, batch):
        y = batch["y"]
        if imbalance == "focal":
            from torchvision.ops import sigmoid_focal_loss

            return sigmoid_focal_loss(logits, y, alpha=0.25, gamma=2.0, reduction="mean")
        return F.binary_cross_entropy_with_logits(logits, y)

    def evaluate(model, loader, device, amp):
        logits, y, _ = gather_cat(*predict_logits(model, loader, device, amp))  # all ranks' shards, in row order
        if not len(y):
            return {"val_loss": float("nan"), "val_auc": float("nan"), "val_accuracy": float("nan")}
        p = torch.sigmoid(logits).numpy().astype(np.float64)
        yy = y.numpy().astype(int)
        return {"val_loss": float(loss(logits, {"y": y})), "val_auc": roc_auc(yy, p),
                "val_accuracy": float(np.mean((p >= 0.5) == (yy == 1)))}

    return Task(loss=loss, evaluate=evaluate, monitor="val_auc")


def make_datasets(store, cfg, kind: str, *, crop=None, masks=False, row_filters=None):
    """(train, val) PatchDatasets by the config's splits (augmentation on train only)."""
    from pipeline.train.data import PatchDataset, build_augment, limit_rows, split_rows

    idx = store.index
    tr = split_rows(idx, "train", cfg.test_subsets, cfg.val_subsets)
    va = split_rows(idx, "val", cfg.test_subsets, cfg.val_subsets)
    if row_filters is not None:  # (train_fn, val_fn): rows -> kept rows
        tr, va = row_filters[0](tr), row_filters[1](va)
    tr = limit_rows(tr, idx["label"].to_numpy()[tr], cfg.max_train_samples, cfg.seed)
    if len(tr) == 0 or len(set(idx["label"].to_numpy()[tr])) < 2:
        raise DataError(store.root / "index.csv", f"train split needs both classes, got {len(tr)} samples "
                        f"with labels {sorted(set(idx['label'].to_numpy()[tr].tolist()))}")
    if len(va) == 0:
        log.warning("no validation samples: best model = last epoch, val metrics NaN")
    aug = build_augment(kind, with_mask=masks) if cfg.augment else None
    kw = {"crop": crop, "masks": masks}
    return (PatchDataset(store, tr, kind, augment=aug, seed=cfg.seed, **kw),
            PatchDataset(store, va, kind, **kw))


def finish_outputs(out: Path, model, cfg, config: dict, strategy: str, reason: str, fit, t0: float,
                   n_train: int, n_val: int, monitor: str, run_log=None) -> dict[str, Any]:
    """Write config.json, provenance.json, metrics.json (content only); timings go to the log and
    ``run_log``. Returns the metrics plus the timings. Under torchrun only rank 0 writes."""
    main = os.environ.get("RANK", "0") == "0"
    if main:
        write_json(out / "config.json", config)
        write_json(out / "provenance.json", dict(model.provenance))
    best = fit.best
    metrics = {
        "best_epoch": best.get("epoch"), **{k: v for k, v in best.items() if k.startswith("val_")},
        "best_" + monitor: best.get(monitor), "epochs_run": fit.epochs_run, "stopped_early": fit.stopped_early,
        "strategy": strategy, "strategy_reason": reason, "n_train": n_train, "n_val": n_val,
        "device": str(config["runtime"]["device"]), "precision": config["runtime"]["precision"],
    }
    metrics = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in metrics.items()}
    if main:
        write_json(out / "metrics.json", metrics)  # content only: timings go to the run log below
        from pipeline.modelcard import write_card

        write_card(out, config, metrics, dict(model.provenance))
    timing = {"train_seconds": round(fit.seconds, 2), "seconds_per_epoch": round(fit.seconds / max(fit.epochs_run, 1), 2),
              "samples_per_s": round(fit.samples_per_s, 1), "wall_seconds": round(time.perf_counter() - t0, 2)}
    if main:
        write_run_log(f"train-{out.name}", {"out_dir": str(out), **timing}, run_log)
    return {**metrics, **timing}


def train_classifier(patches_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: TrainConfig | None = None,
                     *, preprocessed_dir=None, live_dir="dvclive/classifier", resume: bool = False,
                     stop_after: int | None = None, progress: bool = True, run_log=None) -> TrainResult:
    """Train the classifier on ``patches_dir`` (PatchStore) and write ``out_dir``.

    2D encoders train on planes ``(B, 3, P, P)`` HU, 3D encoders on cubes ``(B, 1, S, S, S)``.
    ``strategy: auto`` is resolved from the minority-class count of the train split.
    """
    from pipeline.models.classifier import build_classifier
    from pipeline.models.transfer import resolve_strategy
    from pipeline.patches.dataset import PatchStore
    from pipeline.runtime import resolve_device, resolve_precision
    from pipeline.train.distributed import is_main, session
    from pipeline.train.loop import Trainer

    cfg = cfg or TrainConfig()
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    store = PatchStore(patches_dir)
    model = build_classifier(cfg.model())
    train_ds, val_ds = make_datasets(store, cfg, model.kind)
    n_min = int(min(np.bincount((train_ds.labels > 0).astype(int), minlength=2)))
    strategy, reason = resolve_strategy(cfg.strategy, n_min, model.family,
                                        pretrained=model.provenance.get("weights_source") != "random")
    log.info("transfer strategy %s (%s)", strategy, reason)
    device = resolve_device(cfg.device)
    amp = resolve_precision(cfg.precision, device)
    config = {"task": "classifier", "kind": model.kind, "model": to_dict(cfg.model()), "train": to_dict(cfg),
              "strategy": strategy, "strategy_reason": reason,
              "input": {"kind": model.kind, "source": "planes" if model.kind == "2d" else "cubes"},
              **input_context(patches_dir, preprocessed_dir),
              "runtime": {"device": str(device), "precision": str(amp).replace("torch.", "") if amp else "fp32"}}
    fit_model = model
    if strategy == "linear_probe":  # frozen encoder: the head trains on features cached once per patch
        from pipeline.train.features import probe_inputs

        fit_model, cfg, train_ds, val_ds, config["features"] = probe_inputs(model, store, cfg, train_ds, val_ds,
                                                                            device, amp)
    if is_main():
        write_json(out / "config.json", config)  # before training: a best model.pt is loadable at once
    with session(cfg.device):  # torchrun: join the process group; destroyed at the end, also on error
        trainer = Trainer(fit_model, strategy, cfg, train_ds, val_ds, classifier_task(cfg.imbalance), out,
                          live_dir=live_dir, params={**to_dict(cfg), "strategy_resolved": strategy})
        fit = trainer.fit(resume=resume, stop_after=stop_after)
        metrics = finish_outputs(out, model, cfg, config, strategy, reason, fit, t0, len(train_ds), len(val_ds),
                                 "val_auc", run_log=run_log)
    return TrainResult(out, metrics, strategy, reason, fit.history)
