"""Generic training loop: AMP, AdamW with transfer param groups, warm-up + cosine, early stopping,
best/last checkpoints, ``--resume``, DDP under ``torchrun``, DVCLive metrics.

The task (classifier or segmenter) supplies ``loss(logits, batch) -> scalar`` and
``evaluate(model, loader, device, amp_dtype) -> dict`` (must contain ``monitor``).
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from pipeline.progress import ProgressLog
from pipeline.runtime import (
    autocast,
    configure_device,
    dist_info,
    grad_scaler,
    load_checkpoint,
    resolve_device,
    resolve_precision,
    save_checkpoint,
)
from pipeline.train import distributed as ddp
from pipeline.train.data import EpochSampler
from pipeline.utils import write_json

log = logging.getLogger(__name__)


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up from 1/warmup to 1 over ``warmup_steps``, then cosine to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))


def channels_last(model: torch.nn.Module) -> torch.memory_format:
    """Put ``model``'s conv weights in channels-last order (2D: 4-D weights, else 3D: 5-D); returns the
    input memory format to match."""
    rank = 4 if getattr(model, "kind", "3d") == "2d" else 5
    fmt = torch.channels_last if rank == 4 else torch.channels_last_3d
    for p in model.parameters():
        if p.dim() == rank:
            p.data = p.data.contiguous(memory_format=fmt)
    return fmt


@dataclass
class Task:
    loss: Callable[[torch.Tensor, dict], torch.Tensor]
    evaluate: Callable[..., dict]
    monitor: str = "val_auc"


@dataclass
class FitResult:
    best: dict[str, Any]
    history: list[dict] = field(default_factory=list)
    epochs_run: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    samples_per_s: float = 0.0


class Trainer:
    """Train ``model`` (with ``.stages``) on ``train_ds``; checkpoints under ``out_dir``.

    ``cfg`` is a TrainConfig / SegTrainConfig (loop fields), ``strategy`` a resolved transfer
    strategy, ``live_dir`` the DVCLive folder (None = no DVCLive), ``params`` logged to DVCLive.
    """

    def __init__(self, model, strategy: str, cfg, train_ds, val_ds, task: Task, out_dir, *,
                 live_dir=None, params: dict | None = None):
        self.model, self.strategy, self.cfg, self.task = model, strategy, cfg, task
        self.train_ds, self.val_ds, self.out = train_ds, val_ds, Path(out_dir)
        self.live_dir, self.params = live_dir, params or {}
        self.rank, self.world, _ = dist_info()
        self.owns_group = ddp.setup(cfg.device)  # rank's GPU first, then nccl / gloo (torchrun)
        self.device = resolve_device(cfg.device)
        self.amp = resolve_precision(cfg.precision, self.device)
        configure_device(self.device, training=True)

    def _loaders(self) -> tuple[DataLoader, DataLoader, EpochSampler]:
        c = self.cfg
        sampler = EpochSampler(self.train_ds.labels, balanced=c.imbalance == "sampler", seed=c.seed,
                               rank=self.rank, world=self.world, neg_ratio=getattr(c, "neg_ratio", None))
        kw = {"num_workers": int(c.num_workers), "pin_memory": self.device.type == "cuda",
                  "persistent_workers": int(c.num_workers) > 0}
        if getattr(c, "loader", "dataset") == "batched":  # one tensor, batched augmentation on the device
            from pipeline.train.memstore import BatchLoader

            train = BatchLoader(self.train_ds, sampler, int(c.batch_size), self.device,
                                augment=self.train_ds.augment is not None, seed=c.seed, rank=self.rank)
        else:
            train = DataLoader(self.train_ds, batch_size=int(c.batch_size), sampler=sampler,
                               drop_last=len(sampler) >= int(c.batch_size), **kw)
        val = DataLoader(self.val_ds, batch_size=int(c.batch_size) * 2, sampler=ddp.ShardSampler(len(self.val_ds)),
                         **kw)  # each rank its in-order shard; the task's evaluate gathers them
        return train, val, sampler

    def _optimizer(self, epoch: int, saved: dict | None):
        from pipeline.models.transfer import apply_strategy, needs_new_optimizer

        tcfg = self.cfg.transfer()
        groups = apply_strategy(self.model, self.strategy, tcfg, epoch)
        for g in groups:
            g["base_lr"] = g["lr"]
        opt = torch.optim.AdamW(groups, weight_decay=float(self.cfg.weight_decay))
        if saved is not None and not needs_new_optimizer(self.strategy, epoch, tcfg, len(self.model.stages)):
            opt.load_state_dict(saved)
        net = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if getattr(self.cfg, "compile", False):
            net = torch.compile(net)
        return opt, net

    def _live(self, resume: bool):
        if self.rank != 0 or self.live_dir is None:
            return None
        from dvclive import Live

        live = Live(dir=str(self.live_dir), resume=resume, save_dvc_exp=False, dvcyaml=None)
        live.log_params(self.params)
        return live

    def fit(self, *, resume: bool = False, stop_after: int | None = None) -> FitResult:
        """Train ``cfg.epochs`` epochs (or resume from ``last.pt``). ``stop_after`` ends the run
        after that many epochs in total (as if interrupted; for tests and time limits)."""
        from pipeline.models.transfer import needs_new_optimizer, set_train_mode

        c, model, dev = self.cfg, self.model.to(self.device), self.device
        fmt = channels_last(model) if getattr(c, "channels_last", False) else None
        train_dl, val_dl, sampler = self._loaders()
        steps = len(train_dl)
        total, warm = steps * int(c.epochs), round(float(c.warmup_epochs) * steps)
        scaler = grad_scaler(self.amp)
        state = {"epoch": -1, "step": 0, "best": {}, "best_score": -math.inf, "bad": 0, "history": []}
        saved_opt = None
        last = self.out / "last.pt"
        if resume and last.is_file():
            ck = load_checkpoint(last, dev)
            model.load_state_dict(ck["model"])
            saved_opt = ck["optimizer"]
            if ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
            ddp.restore_rng(ck, dev, seed=int(c.seed), rank=self.rank, world=self.world, where=str(last))
            state.update({k: ck[k] for k in ("epoch", "step", "best", "best_score", "bad", "history")})
            log.info("resuming from %s after epoch %d", last, state["epoch"] + 1)
        elif resume:
            warnings.warn(f"{last}: no last.pt to resume from; training from the start", stacklevel=2)
            resume = False
        if not resume and self.world > 1:  # each rank its own dropout / noise stream
            ddp.seed_rank(int(c.seed), 0, self.rank, dev)
        live = self._live(resume)
        if live is not None and resume:
            live.step = state["epoch"] + 1  # DVCLive does not advance past a resumed step 0
        opt, net, stopped, t_fit, perf_hist = None, model, False, time.perf_counter(), []
        # one INFO line per epoch (also with --quiet / no progress bars); rank 0 only under torchrun
        plog = ProgressLog(int(c.epochs), f"train {self.out.name} epoch", every_n=1, logger=log, unit="epoch",
                           initial=state["epoch"] + 1) if self.rank == 0 else None
        for epoch in range(state["epoch"] + 1, int(c.epochs)):
            if stop_after is not None and epoch >= stop_after:
                break
            if opt is None or needs_new_optimizer(self.strategy, epoch, c.transfer(), len(model.stages)):
                opt, net = self._optimizer(epoch, saved_opt)
                saved_opt = None
            set_train_mode(model, True)
            sampler.set_epoch(epoch)
            self.train_ds.set_epoch(epoch)
            t0, loss_sum, n = time.perf_counter(), 0.0, 0
            for batch in train_dl:
                f = lr_factor(state["step"], warm, total)
                for g in opt.param_groups:
                    g["lr"] = g["base_lr"] * f
                batch = {k: v.to(dev, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
                if fmt is not None:
                    batch["x"] = batch["x"].contiguous(memory_format=fmt)
                with autocast(dev, self.amp):
                    logits = net(batch["x"])
                loss = self.task.loss(logits.float(), batch)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                state["step"] += 1
                loss_sum += float(loss.detach()) * len(batch["y"])
                n += len(batch["y"])
            secs = time.perf_counter() - t0
            ddp.sync_module(model)  # rank 0's weights and BatchNorm statistics: those evaluated and saved
            model.eval()
            val = ddp.broadcast_object(self.task.evaluate(model, val_dl, dev, self.amp))  # same decisions on all ranks
            # content (history, best, checkpoints) vs timings (perf: log and run log only), so that
            # a rerun with the same inputs writes byte-identical model folders
            m = {"epoch": epoch + 1, "train_loss": ddp.all_mean(loss_sum, n), **val, "lr": opt.param_groups[0]["lr"]}
            perf = {"seconds": secs, "samples_per_s": n * self.world / max(secs, 1e-9)}
            perf_hist.append(perf)
            score = m.get(self.task.monitor, float("nan"))
            improved = (not math.isnan(score) and score > state["best_score"]) or not state["best"]
            if improved:
                state.update(best=dict(m), best_score=-math.inf if math.isnan(score) else score, bad=0)
                if self.rank == 0:
                    save_checkpoint(self.out / "model.pt", model.state_dict())
            else:
                state["bad"] += 1
            state["epoch"] = epoch
            state["history"].append(m)
            rng = ddp.gather_rng_states(dev)  # every rank's own RNG state, indexed by rank
            if self.rank == 0:
                save_checkpoint(last, {
                    "model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                    "rng": rng, "world_size": self.world,
                    **{k: state[k] for k in ("epoch", "step", "best", "best_score", "bad", "history")}})
            if live is not None:  # results only: timings go to the run log and timings.json
                for k, v in m.items():
                    if k != "epoch" and isinstance(v, (int, float)) and not math.isnan(v):
                        live.log_metric(f"{'val' if k.startswith('val') else 'train'}/{k}", v)
                live.next_step()
            if plog is not None:
                mon = self.task.monitor
                best = state["best"].get(mon, float("nan"))
                plog.update(extra=f"train_loss={m['train_loss']:.4g} {mon}={score:.4g} (best {best:.4g} at "
                                  f"epoch {state['best'].get('epoch', '?')}) lr={m['lr']:.3g} "
                                  f"{perf['samples_per_s']:.4g} samples/s")
            if int(c.patience) and state["bad"] >= int(c.patience):
                stopped = True
                log.info("early stop: no %s improvement for %d epochs", self.task.monitor, state["bad"])
                break
        if live is not None:
            live.end()
            # per-epoch timings beside (not in) the DVC metrics: a rerun with the same results leaves
            # metrics.json and the curves byte-identical; this file differs by machine and load
            write_json(Path(live.dir) / "timings.json", {
                "seconds_per_epoch": [round(p["seconds"], 2) for p in perf_hist],
                "samples_per_s": [round(p["samples_per_s"], 1) for p in perf_hist]})
        ddp.barrier()  # model.pt / last.pt written (rank 0) before any rank goes on
        wall = time.perf_counter() - t_fit
        hist = state["history"]
        secs = sum(p["seconds"] for p in perf_hist)
        sps = sum(p["samples_per_s"] * p["seconds"] for p in perf_hist) / max(secs, 1e-9)
        return FitResult(best=state["best"], history=hist, epochs_run=len(hist), stopped_early=stopped,
                         seconds=secs if perf_hist else wall, samples_per_s=sps)


@torch.no_grad()
def predict_logits(model, loader, device: torch.device, amp: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
    """(logits float32 on CPU, labels, rows) over ``loader`` in eval mode."""
    model.eval()
    outs, ys, rows = [], [], []
    for batch in loader:
        with autocast(device, amp):
            outs.append(model(batch["x"].to(device)).float().cpu())
        ys.append(batch["y"])
        rows.append(torch.as_tensor(batch["row"]))
    if not outs:
        return torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.cat(outs), torch.cat(ys), torch.cat(rows)
