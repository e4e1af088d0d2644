"""Training batches assembled as batches: a PatchDataset's samples held in one tensor, batches
gathered by index, augmented with :class:`~pipeline.train.batchaug.BatchAugment` on the device.

:class:`PatchTensors` reads the dataset's rows once (3D cubes centre-cropped to ``crop``) into
one int16 tensor ``(N, C, ...)`` (``C`` = 3 planes or 1 cube channel) plus, for the segmenter,
uint8 ``mask`` / ``ignore`` ``(N, 1, c, c, c)``. Placement by size: GPU memory when the training
device is CUDA and the data takes at most ``GPU_SHARE`` of its free memory; else host memory
(pinned on CUDA) when it takes at most ``HOST_SHARE`` of the available RAM; else streaming:
each batch is read from the store's memory-mapped shards (masks drawn per batch).

:class:`BatchLoader` iterates one epoch: the order of the dataset's :class:`EpochSampler`
(class balancing, ``neg_ratio``, per-(seed, epoch) order and ``[rank::world]`` sharding
unchanged), cut into ``batch_size`` chunks (the last partial chunk dropped when the epoch has
at least one full batch, as the DataLoader did). Batch ``b`` of epoch ``e`` is augmented with
the generator of ``batch_seed(seed, e, b, rank)``. Batches are dicts like the DataLoader's:
``x`` float32 HU, ``y`` float32 (B,), ``row`` int64 (B,), and ``mask`` / ``ignore`` float32,
all on the training device.
"""
from __future__ import annotations

import logging
import math
import os

import numpy as np
import torch

from pipeline.train.batchaug import BatchAugment, batch_seed

log = logging.getLogger(__name__)

GPU_SHARE = 0.3  # at most this share of the free GPU memory holds the training samples
HOST_SHARE = 0.5  # at most this share of the available RAM
CHUNK = 2048  # samples read per call when loading


def available_ram() -> int:
    """Available physical memory in bytes (0 when unknown)."""
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


class PatchTensors:
    """The samples of ``ds`` (a :class:`~pipeline.train.data.PatchDataset`) as tensors.

    ``placement`` ('gpu'|'host'|'stream') may be forced (tests); default by size (see module).
    """

    def __init__(self, ds, device: torch.device, *, placement: str | None = None):
        self.ds, self.device, self.n = ds, torch.device(device), len(ds)
        first = ds._array(0) if self.n else np.zeros((1, 1, 1), np.float32)
        self.shape = tuple(first.shape) if ds.kind == "2d" else (1, *first.shape)
        per = int(np.prod(self.shape)) * 2 + (2 * int(np.prod(self.shape[1:])) if ds.masks else 0)
        self.nbytes = per * self.n
        self.placement = placement or self._place()
        self.y = torch.as_tensor(ds.labels, dtype=torch.float32)
        self.rows = torch.tensor(np.asarray(ds.rows), dtype=torch.int64)
        self.x = self.mask = self.ignore = None
        if self.placement != "stream":
            self._load()
        log.info("training samples: %d (%.1f MB) held in %s", self.n, self.nbytes / 1e6, self.placement)

    def _place(self) -> str:
        if self.device.type == "cuda" and torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info(self.device)
            if self.nbytes <= GPU_SHARE * free:
                return "gpu"
        ram = available_ram()
        return "host" if not ram or self.nbytes <= HOST_SHARE * ram else "stream"

    def _read(self, pos: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """int16 x (n, C, ...) and uint8 mask / ignore of dataset positions ``pos`` (from the store)."""
        ds = self.ds
        a = ds._cache[pos] if ds._cache is not None else ds._read(ds.rows[pos])
        if ds.kind == "3d":
            c = self.shape[-1]
            lo = (a.shape[-1] - c) // 2
            a = a[:, None, lo:lo + c, lo:lo + c, lo:lo + c]
        x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.int16))
        if not ds.masks:
            return x, None, None
        mi = [ds.targets(int(i), self.shape[-1]) for i in pos]
        mask = torch.from_numpy(np.stack([m for m, _ in mi])[:, None].astype(np.uint8))
        ign = torch.from_numpy(np.stack([g for _, g in mi])[:, None].astype(np.uint8))
        return x, mask, ign

    def _load(self) -> None:
        parts = [self._read(np.arange(s, min(s + CHUNK, self.n))) for s in range(0, self.n, CHUNK)]
        self.ds._cache = None  # the dataset's own preload copy: the tensor replaces it
        x = torch.cat([p[0] for p in parts])
        mask = torch.cat([p[1] for p in parts]) if self.ds.masks else None
        ign = torch.cat([p[2] for p in parts]) if self.ds.masks else None
        cuda = self.device.type == "cuda" and torch.cuda.is_available()

        def put(t):
            if t is None:
                return None
            return t.to(self.device) if self.placement == "gpu" else t.pin_memory() if cuda else t

        self.x, self.mask, self.ignore = put(x), put(mask), put(ign)
        if self.placement == "gpu":
            self.y, self.rows = self.y.to(self.device), self.rows.to(self.device)

    def batch(self, pos: np.ndarray) -> dict:
        """Unaugmented batch of dataset positions ``pos`` on the device (float32 x / masks)."""
        dev, nb = self.device, self.device.type == "cuda"
        if self.placement == "stream":
            x, mask, ign = self._read(np.asarray(pos))
            y, rows = self.y[pos], self.rows[pos]
        else:
            i = torch.as_tensor(pos, dtype=torch.int64, device=self.x.device)
            x, y, rows = self.x[i], self.y[i], self.rows[i]
            mask = self.mask[i] if self.mask is not None else None
            ign = self.ignore[i] if self.ignore is not None else None
        out = {"x": x.to(dev, non_blocking=nb).float(), "y": y.to(dev, non_blocking=nb),
               "row": rows.to(dev, non_blocking=nb)}
        if mask is not None:
            out["mask"] = mask.to(dev, non_blocking=nb).float()
            out["ignore"] = ign.to(dev, non_blocking=nb).float()
        return out


class BatchLoader:
    """One epoch of augmented training batches in the order of ``sampler`` (see module)."""

    def __init__(self, ds, sampler, batch_size: int, device, *, augment: bool = True, seed: int = 0,
                 rank: int = 0, placement: str | None = None):
        self.data = PatchTensors(ds, device, placement=placement)
        self.sampler, self.bs, self.seed, self.rank = sampler, int(batch_size), int(seed), int(rank)
        self.aug = BatchAugment(ds.kind) if augment else None
        self.drop_last = len(sampler) >= self.bs

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.bs if self.drop_last else math.ceil(n / self.bs)

    def __iter__(self):
        order = np.fromiter(iter(self.sampler), dtype=np.int64)
        epoch = int(getattr(self.sampler, "epoch", 0))
        for b in range(len(self)):
            batch = self.data.batch(order[b * self.bs:(b + 1) * self.bs])
            if self.aug is not None:
                masks = "mask" in batch
                extra = torch.cat([batch["mask"], batch["ignore"]], 1) if masks else None
                batch["x"], extra = self.aug(batch["x"], extra, seed=batch_seed(self.seed, epoch, b, self.rank))
                if masks:
                    batch["mask"], batch["ignore"] = extra[:, :1].contiguous(), extra[:, 1:].contiguous()
            yield batch
