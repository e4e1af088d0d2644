"""Linear-probe feature cache (pipeline/train/features.py): computed once, read on the second run,
recomputed when the weights or the patch store change; a probe run trains on it."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from pipeline.models.classifier import ModelConfig, build_classifier
from pipeline.patches.dataset import PatchStore
from pipeline.train.features import feature_key, store_features


@pytest.fixture(autouse=True)
def _threads(two_torch_threads):  # tests/conftest.py
    yield


def _model(seed: int):
    torch.manual_seed(seed)
    return build_classifier(ModelConfig(encoder="medicalnet_resnet10", weights="none", head_hidden=16)).eval()


def test_cache_is_reused_and_invalidated(easy_patches, tmp_path):
    cache = tmp_path / "cache"
    store, model = PatchStore(easy_patches), _model(0)
    a, meta = store_features(model, store, cache=cache)
    assert not meta["cached"] and a.shape == (len(store), 512) and np.isfinite(a).all()
    assert meta["seconds_per_patch"] > 0
    mtime = (cache / meta["path"].split("/")[-1]).stat().st_mtime_ns
    b, meta2 = store_features(model, store, cache=cache)  # second run: read, not recomputed
    assert meta2["cached"] and meta2["key"] == meta["key"] and np.array_equal(a, b)
    assert (cache / meta["path"].split("/")[-1]).stat().st_mtime_ns == mtime
    # other weights (another random init): another key, new features
    c, meta3 = store_features(_model(1), store, cache=cache)
    assert not meta3["cached"] and meta3["key"] != meta["key"] and not np.allclose(a, c)
    # another store (same shards, one label changed in index.csv): another key
    other = tmp_path / "store2"
    shutil.copytree(easy_patches, other)
    idx = (other / "index.csv").read_text(encoding="utf-8").splitlines()
    (other / "index.csv").write_text("\n".join([idx[0], idx[1].replace(",0,", ",1,", 1), *idx[2:]]) + "\n")
    d, meta4 = store_features(model, PatchStore(other), cache=cache)
    assert not meta4["cached"] and meta4["key"] not in (meta["key"], meta3["key"])
    assert np.allclose(a, d, atol=1e-5)  # same pixels, same features, but not trusted blindly
    assert len(list(cache.glob("*.npy"))) == 3


def test_key_names_the_weights_file_sha_when_pretrained(easy_patches):
    model = build_classifier(ModelConfig(encoder="efficientnet_lite0", head_hidden=16))
    key = feature_key(model, "2d", easy_patches)
    assert key["weights"] == model.provenance["sha256"] and len(key["key"]) == 64
    assert key["adapter"]["window_hu"] == [-1000.0, 400.0]


def test_linear_probe_run_trains_on_cached_features(easy_patches, tmp_path, monkeypatch):
    from pipeline.runtime import load_model
    from pipeline.train.config import TrainConfig
    from pipeline.train.stage import train_classifier
    from pipeline.utils import read_json

    monkeypatch.setenv("PIPELINE_FEATURE_CACHE", str(tmp_path / "cache"))
    cfg = TrainConfig(encoder="medicalnet_resnet10", weights="none", strategy="linear_probe", epochs=3,
                      batch_size=16, head_hidden=16, seed=0, lr=3e-3)
    res = train_classifier(easy_patches, tmp_path / "m", cfg, live_dir=None, progress=False)
    conf = read_json(tmp_path / "m" / "config.json")
    assert conf["features"]["out_features"] == 512 and len(list((tmp_path / "cache").glob("*.npy"))) == 1
    assert res.metrics["epochs_run"] == 3 and res.metrics["strategy"] == "linear_probe"
    model, _ = load_model(tmp_path / "m")  # an ordinary full classifier checkpoint
    assert model(torch.zeros(2, 1, 16, 16, 16) - 800).shape == (2,)
