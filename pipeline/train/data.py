"""Datasets over :class:`~pipeline.patches.dataset.PatchStore` rows, augmentation, splits, sampling.

Samples are dicts ``{"x": float32 HU tensor, "y": float32 label, "row": int}`` where ``x`` is
``(3, P, P)`` (2D planes) or ``(1, S, S, S)`` (3D cubes, z, y, x); the segmenter adds
``"mask"`` and ``"ignore"``, ``(1, C, C, C)`` float32: every annotated nodule that intersects the
cube, drawn from its world centre and diameter (``nodules.csv`` of the patch store, see
:mod:`pipeline.patches.nodules`), and the excluded findings to leave out of the loss.
Augmentation (train only) is seeded per (seed, epoch, sample), so it does not depend on the
number of workers and ``--resume`` replays it exactly. Training uses this per-sample path only with
``loader: dataset``; the default (``loader: batched``) holds the split in one tensor and augments
whole batches on the device with the same transforms (:mod:`pipeline.train.memstore`,
:mod:`pipeline.train.batchaug`). Validation and ``predict`` read unaugmented samples from here.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from pipeline.errors import DataError

PRELOAD_BYTES = 1 << 30  # read every sample into memory when the split is smaller than this


def split_rows(index: pd.DataFrame, split: str, test_subsets=None, val_subsets=None,
               include_shifted: bool | None = None) -> np.ndarray:
    """Sample numbers of ``split`` (train|val|test).

    The ``split`` column is used unless ``test_subsets`` or ``val_subsets`` are given; then a
    row is test if its subset is in ``test_subsets``, val if in ``val_subsets`` (when only one
    is given the other keeps the index split), else train. Shifted positives are kept in
    train only (``include_shifted`` overrides).
    """
    sub = index["subset"].astype(int)
    splits = index["split"].astype(str).copy()
    if test_subsets is not None or val_subsets is not None:
        splits[:] = "train"
        if test_subsets is None:
            splits[index["split"] == "test"] = "test"
        else:
            splits[sub.isin(test_subsets)] = "test"
        if val_subsets is None:
            splits[(index["split"] == "val") & (splits != "test")] = "val"
        else:
            splits[sub.isin(val_subsets)] = "val"
    keep = splits == split
    if not (include_shifted if include_shifted is not None else split == "train"):
        keep &= ~index["shifted"].astype(bool)
    return index.loc[keep, "sample"].to_numpy(np.int64)


def build_augment(kind: str, keys: Sequence[str] = ("x",), *, with_mask: bool = False):
    """MONAI dictionary transforms for one sample (channel-first, HU float32).

    Flips on every spatial axis, 90-degree rotations in the axial (y, x) plane, a small affine
    (±10 degrees, ±10 % scale), Gaussian noise (std 10 HU) and an intensity shift (±20 HU).
    Masks (``mask`` and ``ignore`` keys) use nearest-neighbour interpolation.
    """
    from monai.transforms import (
        Compose,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandRotate90d,
        RandShiftIntensityd,
    )

    keys = list(keys) + (["mask", "ignore"] if with_mask else [])
    nd = 2 if kind == "2d" else 3
    rot = (0.17,) if nd == 2 else (0.0, 0.0, 0.17)  # 3D: rotate about z (in the axial plane)
    mode = ["bilinear"] + (["nearest", "nearest"] if with_mask else [])
    inplane = (0, 1) if nd == 2 else (1, 2)
    return Compose([
        *[RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(nd)],
        RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=inplane),
        RandAffined(keys, prob=0.3, rotate_range=rot, scale_range=(0.1,) * nd, mode=mode,
                    padding_mode="border"),
        RandGaussianNoised("x", prob=0.3, std=10.0),
        RandShiftIntensityd("x", prob=0.3, offsets=20.0),
    ])


class PatchDataset(Dataset):
    """Rows of a PatchStore as model inputs.

    Args:
        store: the PatchStore. rows: sample numbers. kind: '2d' (planes) or '3d' (cubes).
        augment: MONAI transform (or None). seed: augmentation seed.
        crop: 3D only: centred crop edge in voxels (None = full cube).
        masks: add ``mask`` / ``ignore`` from the store's annotations (segmenter).
    """

    def __init__(self, store, rows: np.ndarray, kind: str, *, augment=None, seed: int = 0,
                 crop: int | None = None, masks: bool = False):
        from pipeline.patches.nodules import as_target_array

        self.store, self.rows, self.kind = store, np.asarray(rows, np.int64), kind
        self.augment, self.seed, self.epoch, self.crop, self.masks = augment, int(seed), 0, crop, masks
        # one RandomState shared by every transform, re-seeded per sample: cheaper than
        # Compose.set_random_state(seed=...), which builds a new RandomState per transform
        self._rs = np.random.RandomState(0)
        if augment is not None:
            _share_state(augment, self._rs)
        idx = store.index.iloc[self.rows]
        self.labels = idx["label"].to_numpy(np.float32)
        if masks:
            nod = store.nodules
            self._targets = {u: as_target_array(g) for u, g in nod.groupby("seriesuid")}
            self._uids = idx["seriesuid"].astype(str).to_numpy()
            self._vox = idx[["vox_z", "vox_y", "vox_x"]].to_numpy(np.int64)
        read = store.planes if kind == "2d" else store.cubes
        first = read(self.rows[:1]) if len(self.rows) else None
        self.full = None if first is None else first.shape[-1]
        nbytes = 0 if first is None else first.nbytes * len(self.rows)
        self._cache = read(self.rows) if len(self.rows) and nbytes <= PRELOAD_BYTES else None
        self._read = read
        if masks and kind != "3d":
            raise DataError(store.root, "segmentation masks need 3D cubes")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def targets(self, i: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(mask, ignore) uint8 ``(size,)*3`` of the centred ``size`` crop of sample ``i``'s cube."""
        from pipeline.patches.nodules import draw_targets

        start = self._vox[i] - self.full // 2 + (self.full - size) // 2
        rows = self._targets.get(self._uids[i], np.zeros((0, 7)))
        return draw_targets(rows, start, (size,) * 3)

    def _array(self, i: int) -> np.ndarray:
        a = self._cache[i] if self._cache is not None else self._read(self.rows[i:i + 1])[0]
        if self.kind == "3d" and self.crop and self.crop < a.shape[-1]:
            lo = (a.shape[-1] - self.crop) // 2
            a = a[lo:lo + self.crop, lo:lo + self.crop, lo:lo + self.crop]
        return np.asarray(a, dtype=np.float32)

    def __getitem__(self, i: int) -> dict:
        x = self._array(i)
        x = x[None] if self.kind == "3d" else x
        item = {"x": x}
        if self.masks:
            mask, ignore = self.targets(i, x.shape[-1])
            item["mask"], item["ignore"] = mask[None].astype(np.float32), ignore[None].astype(np.float32)
        if self.augment is not None:
            self._rs.seed(_mix(self.seed, self.epoch, int(self.rows[i])) % (1 << 32))
            item = _untracked(self.augment, item)
        out = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32).contiguous() for k, v in item.items()}
        out["y"] = torch.tensor(self.labels[i], dtype=torch.float32)
        out["row"] = int(self.rows[i])
        return out


def _share_state(transform, state: np.random.RandomState) -> None:
    """Point every random transform of a (nested) MONAI Compose at one RandomState.

    ``Compose.set_random_state`` re-seeds its children from draws of its own state, so it cannot
    share one; each child's ``set_random_state(state=...)`` also reaches its inner array transform.
    """
    from monai.transforms import Compose, Randomizable

    for t in transform.transforms if isinstance(transform, Compose) else [transform]:
        if isinstance(t, Compose):
            _share_state(t, state)
        elif isinstance(t, Randomizable):
            t.set_random_state(state=state)


def _untracked(transform, item: dict) -> dict:
    """Apply a MONAI transform on plain tensors (no MetaTensor bookkeeping: ~3x faster here)."""
    from monai.data import get_track_meta, set_track_meta

    before = get_track_meta()
    set_track_meta(False)
    try:
        return transform(item)
    finally:
        set_track_meta(before)


def _mix(*values: int) -> int:
    return int(np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in values]).generate_state(1)[0])


class EpochSampler(Sampler[int]):
    """Per-epoch seeded index order: ``balanced`` draws with replacement so both classes are
    equally likely (WeightedRandomSampler weights 1/class count), else a permutation. Under
    DDP every rank draws the same list and takes ``[rank::world]`` (equal lengths).

    ``neg_ratio`` (training-time negative subsampling, e.g. 20 on real LUNA16): each epoch
    draws from every positive plus a fresh seeded subset of ``floor(neg_ratio * positives)``
    negatives (all negatives when fewer), so over the epochs all negatives are seen while
    an epoch stays ``positives * (1 + neg_ratio)`` long. None = every sample, every epoch.
    """

    def __init__(self, labels: np.ndarray, *, balanced: bool, seed: int = 0, rank: int = 0, world: int = 1,
                 neg_ratio: float | None = None):
        self.labels, self.balanced = np.asarray(labels), balanced
        self.seed, self.rank, self.world, self.epoch = int(seed), int(rank), int(world), 0
        self.neg_ratio = None if neg_ratio is None else float(neg_ratio)
        pos = self.labels > 0
        self._pos, self._neg = np.flatnonzero(pos), np.flatnonzero(~pos)
        n_neg = len(self._neg)
        if self.neg_ratio is not None:
            n_neg = min(n_neg, math.floor(self.neg_ratio * max(len(self._pos), 1)))
        self.n_neg_per_epoch = n_neg
        pool = len(self.labels) if self.neg_ratio is None else len(self._pos) + n_neg
        self.n = math.ceil(pool / self.world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(_mix(self.seed, self.epoch, 7))
        total = self.n * self.world
        if self.neg_ratio is None:
            pool = np.arange(len(self.labels))
        else:
            pick = torch.randperm(len(self._neg), generator=g)[: self.n_neg_per_epoch].numpy()
            pool = np.sort(np.concatenate([self._pos, self._neg[pick]]))
        lab = (self.labels[pool] > 0).astype(int)
        if self.balanced:
            counts = np.bincount(lab, minlength=2).astype(float)
            w = 1.0 / np.maximum(counts, 1)[lab]
            order = torch.multinomial(torch.as_tensor(w, dtype=torch.float64), total, replacement=True, generator=g)
        else:
            order = torch.randperm(len(pool), generator=g)
            order = torch.cat([order, order[: total - len(order)]])
        return iter(pool[order[self.rank::self.world].numpy()].tolist())


def limit_rows(rows: np.ndarray, labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """At most ``n`` rows, stratified by label (random, seeded); all rows when ``n`` is None."""
    if n is None or len(rows) <= n:
        return rows
    rng = np.random.default_rng(seed)
    keep = []
    for lab in np.unique(labels):
        r = rows[labels == lab]
        k = max(1, round(n * len(r) / len(rows)))
        keep.append(rng.choice(r, size=min(k, len(r)), replace=False))
    return np.sort(np.concatenate(keep))
