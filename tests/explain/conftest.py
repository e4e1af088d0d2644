"""A tiny classifier fine-tuned (full) on the hand-made blob/line PatchStore of tests/train."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location("train_store_helpers", Path(__file__).parents[1] / "train" / "conftest.py")
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
make_patch_store = _mod.make_patch_store


@pytest.fixture(autouse=True)
def _threads(two_torch_threads):  # tests/conftest.py
    yield


@pytest.fixture(scope="session")
def blob_patches(tmp_path_factory) -> Path:
    """Blobs (label 1, radius 2-4 voxels = 4-8 px in the 32 px planes) vs lines, subsets 0 test, 1 val."""
    return make_patch_store(tmp_path_factory.mktemp("explain_patches"))


@pytest.fixture(scope="session")
def blob_model(blob_patches, tmp_path_factory) -> Path:
    from pipeline.train.config import TrainConfig
    from pipeline.train.stage import train_classifier

    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("explain_clf") / "model"
    cfg = TrainConfig(encoder="efficientnet_lite0", weights="pretrained", batch_size=16, head_hidden=64, seed=3,
                      epochs=5, strategy="full", lr=3e-3, encoder_lr_mult=0.3, dropout=0.0)
    res = train_classifier(blob_patches, out, cfg, live_dir=None, progress=False)
    assert res.metrics["best_val_auc"] > 0.8, res.history
    return out
