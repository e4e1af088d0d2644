"""Splits, sampling, augmentation determinism and segmentation masks."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.train.data import (
    EpochSampler,
    PatchDataset,
    build_augment,
    limit_rows,
    split_rows,
)


@pytest.fixture(scope="module")
def store(easy_patches):
    from pipeline.patches.dataset import PatchStore

    return PatchStore(easy_patches)


def test_split_rows_index_and_overrides(store):
    idx = store.index
    assert set(idx.loc[split_rows(idx, "test"), "subset"]) == {0}
    assert set(idx.loc[split_rows(idx, "val"), "subset"]) == {1}
    assert set(idx.loc[split_rows(idx, "train", test_subsets=(2,), val_subsets=(3,)), "subset"]) == {0, 1}
    assert set(idx.loc[split_rows(idx, "val", val_subsets=(2,)), "subset"]) == {1, 2} - {1} | {2}
    assert set(idx.loc[split_rows(idx, "test", val_subsets=(2,)), "subset"]) == {0}


def test_balanced_sampler_is_seeded_and_balanced():
    labels = np.r_[np.ones(20), np.zeros(380)]
    s = EpochSampler(labels, balanced=True, seed=1)
    a = list(s)
    assert a == list(EpochSampler(labels, balanced=True, seed=1))
    s.set_epoch(1)
    assert list(s) != a
    assert 0.4 < labels[a].mean() < 0.6
    halves = [list(EpochSampler(labels, balanced=False, seed=0, rank=r, world=2)) for r in (0, 1)]
    assert len(halves[0]) == len(halves[1]) == 200 and set(halves[0]) | set(halves[1]) == set(range(400))


def test_augmentation_deterministic_per_epoch(store):
    rows = split_rows(store.index, "train")[:4]
    ds = PatchDataset(store, rows, "2d", augment=build_augment("2d"), seed=5)
    a = [ds[i]["x"] for i in range(4)]
    b = [ds[i]["x"] for i in range(4)]
    assert all((x == y).all() for x, y in zip(a, b))
    ds.set_epoch(1)
    c = [ds[i]["x"] for i in range(4)]
    assert any(not (x == y).all() for x, y in zip(a, c))
    assert a[0].shape == (3, 32, 32) and str(a[0].dtype) == "torch.float32"


def test_segmentation_masks_and_crop(store):
    pos = store.index.query("label == 1")["sample"].to_numpy()[:2]
    ds = PatchDataset(store, pos, "3d", crop=16, masks=True, augment=build_augment("3d", with_mask=True))
    item = ds[0]
    assert item["x"].shape == (1, 16, 16, 16) and item["mask"].shape == (1, 16, 16, 16)
    assert item["ignore"].shape == (1, 16, 16, 16) and item["ignore"].sum() == 0
    d = store.index.loc[pos[0], "diameter_mm"]
    assert set(np.unique(item["mask"].numpy())) <= {0.0, 1.0}
    assert abs(item["mask"].sum().item() - 4 / 3 * np.pi * (d / 2) ** 3) < 0.5 * 4 / 3 * np.pi * (d / 2) ** 3
    plain = PatchDataset(store, pos, "3d", crop=16, masks=True)[0]
    blob = plain["x"][0].numpy() > -300  # the bright blob in the cube is where the mask is
    m = plain["mask"][0].numpy() > 0
    assert (blob & m).sum() / m.sum() > 0.9
    neg = store.index.query("label == 0")["sample"].to_numpy()[:3]
    assert all(PatchDataset(store, neg, "3d", masks=True)[i]["mask"].sum() == 0 for i in range(3))
    rows, labels = np.arange(100), np.r_[np.ones(10), np.zeros(90)]
    kept = limit_rows(rows, labels, 20, 0)
    assert len(kept) == 20 and labels[kept].sum() == 2


def test_neg_ratio_sampler_draws_fresh_negatives_per_epoch():
    labels = np.r_[np.ones(10), np.zeros(990)]
    s = EpochSampler(labels, balanced=False, seed=3, neg_ratio=5)
    assert len(s) == 60
    e0 = list(s)
    assert labels[e0].sum() == 10 and len(set(e0)) == 60  # every positive + 50 negatives
    s.set_epoch(1)
    e1 = list(s)
    assert set(e1) != set(e0) and labels[e1].sum() == 10
    assert e0 == list(EpochSampler(labels, balanced=False, seed=3, neg_ratio=5))  # seeded
    b = EpochSampler(labels, balanced=True, seed=3, neg_ratio=5)
    assert len(b) == 60 and 0.3 < labels[list(b)].mean() < 0.7
    assert len(EpochSampler(labels, balanced=False, neg_ratio=1000)) == 1000  # capped at all negatives
