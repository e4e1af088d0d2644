"""Multi-process training and inference under ``torchrun`` (one process per GPU, or per CPU with gloo).

What every rank does (:class:`pipeline.train.loop.Trainer` and :func:`pipeline.train.predict.predict`
call these; in a single process every helper is a no-op that returns its input):

- :func:`session` / :func:`setup`: set the rank's CUDA device (``LOCAL_RANK``) *before*
  ``init_process_group`` (``nccl`` on CUDA, ``gloo`` on CPU), and ``destroy_process_group`` when
  the work ends, also on error (the context manager's ``finally``).
- :class:`ShardSampler`: rank ``r`` of ``w`` reads the contiguous rows ``[n*r//w, n*(r+1)//w)``
  (lengths differ by at most one; no padding, so no row is counted twice).
- :func:`gather_cat`: every rank's per-row results (tensors, arrays or lists, first axis = rows)
  concatenated in rank order, i.e. the single-process order of the rows, on every rank
  (``all_gather_object``: the shards may differ in length). Metrics computed from it equal the
  single-process metrics; :func:`broadcast_object` then makes every rank use rank 0's answer.
- :func:`sync_module`: rank 0's parameters and buffers to every rank (after training each rank's
  BatchNorm statistics were last updated on its own batch; evaluation and the saved model use
  rank 0's).
- :func:`rng_state` / :func:`set_rng_state` / :func:`gather_rng_states` / :func:`restore_rng`:
  each rank's own torch (CPU and its CUDA device), numpy and Python RNG state, saved as a list
  indexed by rank in ``last.pt`` (``rng``, with ``world_size``). Resuming with another world
  size cannot replay the streams: each rank is then re-seeded from (seed, epoch, rank) with a
  warning (training continues from the saved weights and optimizer, not bit-identical to an
  uninterrupted run).
"""
from __future__ import annotations

import contextlib
import logging
import random
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from pipeline.runtime import dist_info

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# process group
# --------------------------------------------------------------------------------------------

def active() -> bool:
    """True when a process group is initialised (this process is one rank of several)."""
    return dist.is_available() and dist.is_initialized()


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the process group; from the torchrun environment when none is up yet."""
    if active():
        return dist.get_rank(), dist.get_world_size()
    rank, world, _ = dist_info()
    return rank, world


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes outputs."""
    return rank_world()[0] == 0


def setup(device: str = "auto") -> bool:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 and none is up yet.

    ``device`` is the config's device name (``auto`` / ``cpu`` / ``cuda``): with CUDA the rank
    first binds its GPU ``cuda:LOCAL_RANK`` (so NCCL and every ``.cuda()`` use it), then joins
    with ``nccl``; on CPU with ``gloo``. Returns True when this call created the group (the
    caller then owns :func:`teardown`)."""
    _, world, local = dist_info()
    if world <= 1 or active():
        return False
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local))  # bound: no device guessing
    else:
        dist.init_process_group("gloo")
    log.info("rank %d of %d joined (%s)", dist.get_rank(), world, f"cuda:{local}, nccl" if cuda else "cpu, gloo")
    return True


def teardown() -> None:
    """``destroy_process_group`` if one is up (no-op otherwise)."""
    if active():
        dist.destroy_process_group()


@contextlib.contextmanager
def session(device: str = "auto") -> Iterator[bool]:
    """``with session(cfg.device):`` joins the group (:func:`setup`) and, if it created it,
    destroys it on leaving, also when the body raises. Yields whether it created the group."""
    created = setup(device)
    try:
        yield created
    finally:
        if created:
            teardown()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if active():
        dist.barrier()


# --------------------------------------------------------------------------------------------
# sharding and gathering
# --------------------------------------------------------------------------------------------

def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of ``n`` for ``rank`` of ``world``: contiguous, in order, sizes differ by <= 1."""
    return n * rank // world, n * (rank + 1) // world


class ShardSampler(Sampler[int]):
    """In-order indices of this rank's contiguous shard of ``n`` rows (all of them in one process).

    Concatenating the ranks' outputs in rank order gives the single-process order."""

    def __init__(self, n: int, rank: int | None = None, world: int | None = None):
        r, w = rank_world()
        self.lo, self.hi = shard_range(int(n), r if rank is None else int(rank), w if world is None else int(world))

    def __len__(self) -> int:
        return self.hi - self.lo

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.lo, self.hi))


def _cat(parts: list) -> Any:
    first = parts[0]
    if torch.is_tensor(first):
        return torch.cat([p.reshape(-1, *first.shape[1:]) if p.numel() == 0 else p for p in parts])
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    if isinstance(first, (list, tuple)):
        return type(first)(x for p in parts for x in p)
    raise TypeError(f"gather_cat: cannot concatenate {type(first).__name__}")


def gather_cat(*items: Any) -> Any:
    """Concatenate each item (tensor / ndarray / list, first axis = rows) over the ranks, in rank
    order, on every rank. Tensors travel via CPU. One item -> that item; several -> a tuple.

    In a single process the items are returned unchanged."""
    if active():
        local = tuple(x.detach().cpu() if torch.is_tensor(x) else x for x in items)
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, local)
        items = tuple(_cat([p[i] for p in parts]) for i in range(len(items)))
    return items[0] if len(items) == 1 else tuple(items)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` has it, on every rank (picklable objects; no-op in one process)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_mean(total: float, count: int) -> float:
    """``sum(total) / sum(count)`` over the ranks (e.g. a loss summed over each rank's samples)."""
    if active():
        t = torch.tensor([float(total), float(count)], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        total, count = float(t[0]), float(t[1])
    return total / max(count, 1)


@torch.no_grad()
def sync_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module`` (in place)."""
    if not active():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=src)


# --------------------------------------------------------------------------------------------
# per-rank RNG state
# --------------------------------------------------------------------------------------------

def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """This process's RNG state: torch CPU (and ``device``'s when CUDA), numpy, Python ``random``.

    Only tensors, ints, floats, tuples and lists: loadable by ``torch.load(weights_only=True)``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": random.getstate()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore :func:`rng_state` (the CUDA part only when ``device`` is CUDA and it was saved)."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    if device is not None and device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def gather_rng_states(device: torch.device | None = None) -> list[dict[str, Any]]:
    """Every rank's :func:`rng_state`, indexed by rank (collective: call on every rank)."""
    own = rng_state(device)
    if not active():
        return [own]
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, own)
    return parts


def seed_rank(seed: int, epoch: int, rank: int, device: torch.device | None = None) -> None:
    """Seed torch (and CUDA), numpy and Python from (seed, epoch, rank)."""
    s = int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(rank), 29]).generate_state(1)[0])
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)
    if device is not None and device.type == "cuda":
        torch.cuda.manual_seed(s)


def restore_rng(ck: dict[str, Any], device: torch.device, *, seed: int, rank: int, world: int, where="last.pt") -> bool:
    """Restore this rank's RNG from a ``last.pt`` dict; returns True when the streams were replayed.

    ``ck["rng"]`` (list by rank, ``ck["world_size"]`` ranks) is restored when the world size is
    the same; otherwise each rank is re-seeded from (seed, saved epoch, rank) with a warning.
    Checkpoints from before per-rank states (``rng_cpu`` / ``rng_cuda``) restore the torch streams
    in a single process."""
    saved_world = int(ck.get("world_size", 1))
    if "rng" in ck and saved_world == world:
        set_rng_state(ck["rng"][rank], device)
        return True
    if "rng" not in ck and "rng_cpu" in ck and world == 1:
        torch.set_rng_state(ck["rng_cpu"].cpu())
        if device.type == "cuda" and "rng_cuda" in ck:
            torch.cuda.set_rng_state(ck["rng_cuda"].cpu(), device)
        return True
    seed_rank(seed, int(ck.get("epoch", -1)) + 1, rank, device)
    if rank == 0:
        warnings.warn(f"{where}: saved by {saved_world} rank(s), resumed with {world}: random streams re-seeded "
                      "per rank (weights and optimizer restored; the run is not bit-identical to an "
                      "uninterrupted one)", stacklevel=2)
    return False
