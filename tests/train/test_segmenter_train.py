"""The 3D segmenter trains one epoch on tiny cubes and writes loadable outputs."""
from __future__ import annotations

import json

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.train.config import SegTrainConfig


def test_segmenter_one_epoch(easy_patches, tmp_path):
    from pipeline.train.checkpoint import load_model
    from pipeline.train.segment import train_segmenter

    torch.set_num_threads(2)
    cfg = SegTrainConfig(epochs=1, batch_size=4, max_train_samples=16, features=(32, 16, 16, 8, 8))
    res = train_segmenter(easy_patches, tmp_path / "seg", cfg, live_dir=tmp_path / "live", progress=False)
    out = tmp_path / "seg"
    assert {"model.pt", "last.pt", "config.json", "provenance.json", "metrics.json"} <= {p.name for p in out.iterdir()}
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert m["epochs_run"] == 1 and m["strategy"] == "scratch" and 0.0 <= m["val_dice"] <= 1.0
    assert json.loads((out / "config.json").read_text(encoding="utf-8"))["input"]["crop"] == 16
    assert "val_dice" in json.loads((tmp_path / "live" / "metrics.json").read_text(encoding="utf-8"))["val"]
    model, config = load_model(out)
    assert config["task"] == "segmenter"
    with torch.no_grad():
        assert model(torch.full((1, 1, 16, 16, 16), -800.0)).shape == (1, 1, 16, 16, 16)
    assert res.metrics["n_train"] <= 16


def test_segmenter_crop_validation():
    with pytest.raises(ConfigError, match="multiple of 16"):
        SegTrainConfig(crop=40)
    with pytest.raises(ConfigError, match="dice_ce, dice_focal"):
        SegTrainConfig(loss="bce")
