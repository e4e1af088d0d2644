"""Linear probe on cached features: a frozen encoder sees every patch of a store ONCE.

``strategy: linear_probe`` freezes the encoder (weights and BatchNorm statistics), so its features
of un-augmented patches never change: :func:`store_features` computes ``adapter -> encoder`` for
every sample of the PatchStore once, caches ``(n_samples, out_features)`` float32 on disk, and the
head trains on them (:func:`probe_inputs`), which makes a 3D ResNet-152 probe practical on a CPU.
Trade-off: no augmentation in a cached probe (the features are of the stored patches).

Cache: ``$PIPELINE_FEATURE_CACHE`` or ``~/.cache/lung-nodule-pipeline/features``; file
``<encoder>-<key>.npy`` + ``.json`` (meta: key parts, extraction seconds per patch). The key is
the sha256 of: encoder name, the weights' identity (the weight file's sha256 from provenance, or
for random / downloaded weights the sha256 of the encoder's tensors), the input adapter
(window, spacing, normalisation), the patch kind (2d planes / 3d cubes) and the store's identity
(sha256 of its ``index.csv`` and ``summary.json``). Changing any of them computes new features.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from pipeline.utils import atomic_path, sha256_file, write_json

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """``$PIPELINE_FEATURE_CACHE`` or ``~/.cache/lung-nodule-pipeline/features``."""
    return Path(os.environ.get("PIPELINE_FEATURE_CACHE") or Path.home() / ".cache" / "lung-nodule-pipeline" / "features")


def store_identity(root: str | os.PathLike) -> str:
    """sha256 over the store's ``index.csv`` and ``summary.json`` (its samples and how they were cut)."""
    h = hashlib.sha256()
    for name in ("index.csv", "summary.json"):
        p = Path(root) / name
        h.update(name.encode() + (sha256_file(p).encode() if p.is_file() else b"-"))
    return h.hexdigest()


def tensors_sha256(module: nn.Module) -> str:
    """sha256 of a module's state (names, dtypes, shapes, bytes) -- for weights without a file."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        t = v.detach().cpu().reshape(-1).contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def feature_key(model, kind: str, store_root) -> dict:
    """The parts of the cache key (see module docstring) and their sha256 ``key``."""
    prov = dict(model.provenance)
    wid = prov.get("sha256") if prov.get("weights_source") != "random" and prov.get("sha256") else None
    ad = model.adapter
    parts = {
        "encoder": prov.get("encoder"),
        "weights": wid or f"tensors:{tensors_sha256(model.encoder)}",
        "adapter": {"family": ad.family, "window_hu": list(ad.window_hu),
                    "spacing_zyx_mm": list(getattr(ad, "spacing_zyx_mm", None) or []),
                    "mean": ad.mean.flatten().tolist(), "std": ad.std.flatten().tolist()},
        "kind": kind,
        "store": store_identity(store_root),
    }
    parts["key"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return parts


@torch.no_grad()
def extract(model, arrays, device: torch.device, amp=None, batch_size: int = 32) -> np.ndarray:
    """``adapter -> encoder`` features ``(n, out_features)`` float32 of HU ``arrays`` (2d:
    ``(n, 3, P, P)``; 3d: ``(n, S, S, S)``, a channel axis is added), in eval mode."""
    from pipeline.runtime import autocast

    adapter, encoder = model.adapter.to(device).eval(), model.encoder.to(device).eval()
    out = []
    for i in range(0, len(arrays), batch_size):
        x = torch.as_tensor(np.asarray(arrays[i:i + batch_size], dtype=np.float32))
        x = (x[:, None] if model.kind == "3d" else x).to(device)
        with autocast(device, amp):
            out.append(encoder(adapter(x)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def store_features(model, store, device: torch.device | None = None, amp=None,
                   cache: str | os.PathLike | None = None) -> tuple[np.ndarray, dict]:
    """Features of every sample of ``store`` (row = sample number): read from the cache when the
    key matches, else computed once and written (atomically). Returns (features, meta); meta has
    ``key``, ``path``, ``cached`` (read, not computed) and the extraction timings."""
    device = device or torch.device("cpu")
    parts = feature_key(model, model.kind, store.root)
    d = Path(cache) if cache is not None else cache_dir()
    path = d / f"{parts['encoder']}-{parts['key'][:24]}.npy"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("key") == parts["key"]:
            feats = np.load(path)
            if feats.shape[0] == len(store):
                log.info("features: %s (cached, %d x %d)", path, *feats.shape)
                return feats, {**meta, "path": str(path), "cached": True}
    read = store.cubes if model.kind == "3d" else store.planes
    t0, chunks = time.perf_counter(), []
    for a in range(0, len(store), 256):  # bounded memory: 256 cubes at a time
        chunks.append(extract(model, read(np.arange(a, min(a + 256, len(store)))), device, amp))
    feats = np.concatenate(chunks).astype(np.float32)
    secs = time.perf_counter() - t0
    d.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, feats)
    meta = {**parts, "shape": list(feats.shape), "device": str(device), "torch_threads": torch.get_num_threads(),
            "extract_seconds": round(secs, 2), "seconds_per_patch": round(secs / max(len(store), 1), 4)}
    write_json(meta_path, meta)
    log.info("features: %d patches in %.1f s (%.3f s/patch, %s) -> %s", len(store), secs,
             meta["seconds_per_patch"], device, path)
    return feats, {**meta, "path": str(path), "cached": False}


class FeatureDataset(Dataset):
    """Cached features of ``rows`` as training samples ``{"x": (C,), "y", "row"}``
    (the PatchDataset interface the Trainer uses: ``labels``, ``set_epoch``)."""

    def __init__(self, feats: np.ndarray, rows: np.ndarray, labels: np.ndarray):
        self.rows, self.labels = np.asarray(rows, np.int64), np.asarray(labels, np.float32)
        self.x = torch.from_numpy(np.ascontiguousarray(feats[self.rows]))

    def set_epoch(self, epoch: int) -> None:  # no augmentation on cached features
        pass

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": torch.tensor(self.labels[i]), "row": int(self.rows[i])}


class ProbeModel(nn.Module):
    """The classifier's head on features; no encoder stages. ``state_dict`` / ``load_state_dict``
    are the FULL classifier's (head shared), so the Trainer's ``model.pt`` / ``last.pt`` are
    ordinary classifier checkpoints with the frozen encoder bit-identical."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.head = model.head
        object.__setattr__(self, "_full", model)  # not a submodule: only the head's parameters train
        self.stages, self.provenance = [], model.provenance
        self.kind, self.family = model.kind, model.family

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.head(feats).squeeze(-1)

    def state_dict(self, *args, **kwargs):
        return self._full.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self._full.load_state_dict(state_dict, strict=strict, assign=assign)


def probe_inputs(model, store, cfg, train_ds, val_ds, device=None, amp=None):
    """(ProbeModel, cfg, train FeatureDataset, val FeatureDataset, cache info for config.json).
    The returned cfg uses the plain DataLoader (``loader: dataset``): features are a few kB each."""
    import dataclasses

    feats, meta = store_features(model, store, device, amp)
    info = {"cache_key": meta["key"], "file": Path(meta["path"]).name, "out_features": int(feats.shape[1])}
    if getattr(cfg, "loader", "dataset") != "dataset":
        cfg = dataclasses.replace(cfg, loader="dataset")
    return (ProbeModel(model), cfg, FeatureDataset(feats, train_ds.rows, train_ds.labels),
            FeatureDataset(feats, val_ds.rows, val_ds.labels), info)
