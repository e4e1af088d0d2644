"""The batched training input (pipeline.train.memstore + batchaug): same augmentation semantics as
the per-sample MONAI path, deterministic per (seed, epoch, batch), the sampler's order and balancing."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pipeline.patches.dataset import PatchStore
from pipeline.train import batchaug
from pipeline.train.batchaug import BatchAugment, batch_seed
from pipeline.train.data import EpochSampler, PatchDataset, split_rows
from pipeline.train.memstore import BatchLoader, PatchTensors

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def store(easy_patches):
    return PatchStore(easy_patches)


def _sphere(n: int, centre=(5.0, 6.0, 10.0), r=3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.arange(n, dtype=torch.float32)
    z, y, x = torch.meshgrid(g, g, g, indexing="ij")
    m = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= r * r).float()
    return -800 + 800 * m, m


def test_planted_nodule_stays_inside_its_mask():
    img, m = _sphere(16)
    x = img.expand(128, 1, 16, 16, 16).clone()
    extra = torch.stack([m, torch.zeros_like(m)]).expand(128, 2, 16, 16, 16).clone()
    extra[:, 1, 0, 0, 0] = 1  # an ignore voxel in a corner: moves like the image, stays binary
    aug = BatchAugment("3d")
    params = aug.draw(128, torch.Generator().manual_seed(batch_seed(0, 0, 0)))
    out, ex = aug(x, extra, params=params)
    assert set(ex.unique().tolist()) <= {0.0, 1.0} and bool((ex[:, 1].flatten(1).sum(1) == 1).all() | params.affine.any())
    moved = 0
    for i in range(128):
        bright, mask = out[i, 0] > -400, ex[i, 0] > 0.5
        if not params.affine[i]:  # flips / rot90 only: exact permutation, image and mask identical
            assert torch.equal(bright, mask)
            assert ex[i, 1].sum() == 1 and out[i, 0][ex[i, 1] > 0.5].item() < -700
        else:  # interpolated: the bright core lies inside the (nearest-warped) mask
            inter = (bright & mask).sum().item()
            assert inter >= 0.9 * bright.sum().item() and inter >= 0.8 * mask.sum().item()
        moved += not torch.equal(mask, m.bool())
    assert moved > 64  # the off-centre sphere really moved in most samples


def test_labelled_nodules_of_the_store_stay_inside_their_masks(store):
    rows = split_rows(store.index, "train")
    ds = PatchDataset(store, rows, "3d", crop=16, masks=True)
    s = EpochSampler(ds.labels, balanced=True, seed=0)
    for batch in itertools.islice(BatchLoader(ds, s, 32, CPU, seed=3), 3):
        for x, m in zip(batch["x"][:, 0], batch["mask"][:, 0]):
            if m.sum() >= 8:
                core = x > -300
                assert (core & (m > 0.5)).sum() >= 0.8 * core.sum()


def _dihedral(img: torch.Tensor, nd: int) -> dict[tuple, torch.Tensor]:
    """Every (flips..., k) outcome of flips then in-plane rot90, keyed by the outcome's bytes."""
    sp = tuple(range(img.dim() - nd, img.dim()))
    out = {}
    for flips in itertools.product((0, 1), repeat=nd):
        for k in range(4):
            t = img
            for a, f in enumerate(flips):
                t = t.flip(sp[a]) if f else t
            out[(flips, k)] = torch.rot90(t, k, sp[-2:])
    return out


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_flip_rot90_and_affine_frequencies_match_the_configured_probabilities(kind):
    nd = 2 if kind == "2d" else 3
    shape = (3, 12, 12) if nd == 2 else (1, 6, 10, 10)
    img = torch.rand(shape, generator=torch.Generator().manual_seed(1)) * 2000 - 1000
    cands = _dihedral(img, nd)
    # expected probability of each distinct outcome (several (flips, k) give the same array)
    pf, pr = batchaug.FLIP_P, batchaug.ROT90_P
    expect: dict[bytes, float] = {}
    keys: dict[bytes, torch.Tensor] = {}
    for (flips, k), t in cands.items():
        p = np.prod([pf if f else 1 - pf for f in flips]) * ((1 - pr) if k == 0 else pr / 3)
        key = t.numpy().tobytes()
        expect[key], keys[key] = expect.get(key, 0.0) + p, t
    stack = torch.stack(list(keys.values())).flatten(1)
    stack = stack - stack.mean(1, keepdim=True)
    aug, n, seen, affine = BatchAugment(kind), 0, np.zeros(len(keys)), 0
    for b in range(25):
        x = img.expand(100, *shape).clone()
        out, _ = aug(x, seed=batch_seed(7, 0, b))
        o = out.flatten(1)
        d = torch.cdist(o - o.mean(1, keepdim=True), stack) / o.shape[1] ** 0.5  # rms, shift removed
        best, arg = d.min(1)
        exact = best < 15  # noise std <= 10 HU; an affine moves values by far more
        affine += int((~exact).sum())
        seen += np.bincount(arg[exact].numpy(), minlength=len(keys))
        n += len(x)
    assert abs(affine / n - batchaug.AFFINE_P) < 0.03
    freq = seen / seen.sum()
    assert np.abs(freq - np.array(list(expect.values()))).max() < 0.03


def test_rot90_and_flip_follow_monai_conventions():
    from monai.transforms import Flip, Rotate90

    img = torch.rand(1, 4, 5, 5)
    aug = BatchAugment("3d")
    p = aug.draw(1, torch.Generator().manual_seed(0))
    for k in (1, 2, 3):
        p.flip[:], p.k[:], p.affine[:], p.noise[:], p.shift[:] = False, k, False, False, False
        out, _ = aug(img[None].clone(), params=p)
        ref = torch.as_tensor(Rotate90(k=k, spatial_axes=(1, 2))(img.clone()))
        assert torch.equal(out[0], ref)
    p.flip[:] = torch.tensor([True, False, True])
    p.k[:] = 0
    out, _ = aug(img[None].clone(), params=p)
    assert torch.equal(out[0], torch.as_tensor(Flip(spatial_axis=(0, 2))(img.clone())))


def test_batches_are_deterministic_per_seed_epoch_and_batch(store):
    rows = split_rows(store.index, "train")
    ds = PatchDataset(store, rows, "2d")

    def epoch(e, seed=0):
        s = EpochSampler(ds.labels, balanced=True, seed=seed)
        s.set_epoch(e)
        return list(BatchLoader(ds, s, 16, CPU, seed=seed))

    a, b, c = epoch(0), epoch(0), epoch(1)
    assert all(torch.equal(x["x"], y["x"]) and torch.equal(x["row"], y["row"]) for x, y in zip(a, b))
    assert not torch.equal(a[0]["x"], c[0]["x"])
    # the same rows with another batch number get other draws
    p0 = BatchAugment("2d").draw(16, torch.Generator().manual_seed(batch_seed(0, 0, 0)))
    p1 = BatchAugment("2d").draw(16, torch.Generator().manual_seed(batch_seed(0, 0, 1)))
    assert not torch.equal(p0.angle, p1.angle)


def test_epoch_rows_and_class_counts_are_the_samplers(store):
    rows = split_rows(store.index, "train")
    ds = PatchDataset(store, rows, "2d")
    for neg_ratio, world in ((None, 1), (0.5, 2)):
        for rank in range(world):
            s = EpochSampler(ds.labels, balanced=True, seed=4, rank=rank, world=world, neg_ratio=neg_ratio)
            s.set_epoch(2)
            dl = BatchLoader(ds, s, 8, CPU, seed=4, rank=rank)
            got = torch.cat([b["row"] for b in dl]).numpy()
            want = ds.rows[np.array(list(s))][: len(dl) * 8]
            assert np.array_equal(got, want)
            ys = torch.cat([b["y"] for b in dl]).numpy()
            assert np.array_equal(ys, ds.labels[np.array(list(s))][: len(dl) * 8])


def test_streaming_and_in_memory_give_identical_batches(store):
    rows = split_rows(store.index, "train")
    ds = PatchDataset(store, rows, "3d", crop=16, masks=True)
    mem, stream = PatchTensors(ds, CPU, placement="host"), PatchTensors(ds, CPU, placement="stream")
    pos = np.array([5, 0, 17, 5, 3])
    a, b = mem.batch(pos), stream.batch(pos)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    item = ds[17]  # the per-sample dataset (no augmentation) gives the same sample
    assert torch.equal(a["x"][2], item["x"]) and torch.equal(a["mask"][2], item["mask"])
    assert a["x"].dtype == torch.float32 and mem.x.dtype == torch.int16


def test_loader_option_is_validated():
    from pipeline.errors import ConfigError
    from pipeline.train.config import TrainConfig

    assert TrainConfig().loader == "batched"
    with pytest.raises(ConfigError, match="batched, dataset"):
        TrainConfig(loader="fast")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batches_on_the_gpu(store):
    rows = split_rows(store.index, "train")
    ds = PatchDataset(store, rows, "3d", crop=16, masks=True)
    s = EpochSampler(ds.labels, balanced=True, seed=0)
    dev = torch.device("cuda")
    dl = BatchLoader(ds, s, 16, dev, seed=0)
    assert dl.data.placement == "gpu"
    b1, b2 = next(iter(dl)), next(iter(dl))
    assert b1["x"].device.type == "cuda" and torch.equal(b1["x"], b2["x"])
    assert set(b1["mask"].unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_separable_cube_affine_equals_the_3d_grid_sample(mode):
    import torch.nn.functional as F

    from pipeline.train.batchaug import _theta, resample

    g = torch.Generator().manual_seed(0)
    t = torch.randn(6, 1, 10, 12, 12, generator=g) * 300
    ang, sc = (torch.rand(6, generator=g) * 2 - 1) * 0.17, 1 + (torch.rand(6, 3, generator=g) * 2 - 1) * 0.1
    grid = F.affine_grid(_theta(ang, sc, 3), list(t.shape), align_corners=False)
    ref = F.grid_sample(t, grid, mode=mode, padding_mode="border", align_corners=False)
    assert torch.allclose(resample(t, ang, sc, mode), ref, atol=0.01)


def test_channels_last_converts_the_conv_weights_of_the_model_kind():
    from pipeline.train.loop import channels_last

    net2, net3 = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv3d(1, 4, 3)
    net2.kind = "2d"
    assert channels_last(net2) == torch.channels_last
    assert net2.weight.is_contiguous(memory_format=torch.channels_last)
    assert channels_last(net3) == torch.channels_last_3d
    assert net3.weight.is_contiguous(memory_format=torch.channels_last_3d)
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    assert net2(x).shape == (2, 4, 6, 6)
