"""MedicalNet checkpoint loader: round trip, refusals, unexpected keys, local folder."""
from __future__ import annotations

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.models import build_encoder, load_medicalnet_checkpoint, medicalnet_path
from pipeline.models.medicalnet import medicalnet_resnet

torch.set_num_threads(2)


def _save_medicalnet(state: dict, path, extra: dict | None = None):
    sd = {"module." + k: v for k, v in state.items()}
    sd.update(extra or {})
    torch.save({"state_dict": sd}, path)
    return path


def test_round_trip_and_unexpected(tmp_path):
    torch.manual_seed(0)
    src = medicalnet_resnet(10)
    seg_head = {"module.conv_seg.0.weight": torch.zeros(32, 512, 2, 2, 2)}
    path = _save_medicalnet(src.state_dict(), tmp_path / "resnet_10_23dataset.pth", seg_head)
    torch.manual_seed(1)
    dst = medicalnet_resnet(10)
    missing, unexpected = load_medicalnet_checkpoint(dst, path)
    assert missing == [] and unexpected == ["conv_seg.0.weight"]
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k


def test_refuses_wrong_shape_and_missing_conv1(tmp_path):
    state = medicalnet_resnet(10).state_dict()
    bad = dict(state, **{"layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1, 1)})
    p = _save_medicalnet(bad, tmp_path / "bad_shape.pth")
    with pytest.raises(ConfigError, match="bad_shape.pth"):
        load_medicalnet_checkpoint(medicalnet_resnet(10), p)
    no_conv1 = {k: v for k, v in state.items() if not k.startswith("conv1.")}
    p = _save_medicalnet(no_conv1, tmp_path / "no_conv1.pth")
    with pytest.raises(ConfigError, match="no_conv1.pth.*conv1.weight"):
        load_medicalnet_checkpoint(medicalnet_resnet(10), p)
    # shortcut 'B' weights (downsample convs) for a shortcut 'A' resnet18: another architecture
    r18 = dict(medicalnet_resnet(18).state_dict(), **{"layer2.0.downsample.0.weight": torch.zeros(128, 64, 1, 1, 1)})
    p = _save_medicalnet(r18, tmp_path / "r18_shortcut_b.pth")
    with pytest.raises(ConfigError, match="r18_shortcut_b.pth.*downsample"):
        load_medicalnet_checkpoint(medicalnet_resnet(18), p)
    # a resnet18 checkpoint (shortcut A, 2 blocks/layer) does not fit resnet10
    p = _save_medicalnet(medicalnet_resnet(18).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ConfigError, match="r18.pth"):
        load_medicalnet_checkpoint(medicalnet_resnet(10), p)


def test_local_folder_and_pretrained_refusal(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDICALNET_DIR", str(tmp_path))
    assert medicalnet_path(10) == tmp_path / "resnet_10_23dataset.pth"
    with pytest.raises(ConfigError) as err:
        build_encoder("medicalnet_resnet10")
    assert str(tmp_path / "resnet_10_23dataset.pth") in str(err.value)
    torch.manual_seed(0)
    src = medicalnet_resnet(10)
    _save_medicalnet(src.state_dict(), tmp_path / "resnet_10.pth")
    assert medicalnet_path(10) == tmp_path / "resnet_10.pth"
    enc = build_encoder("medicalnet_resnet10")
    assert enc.provenance["weights_source"] == "file" and len(enc.provenance["sha256"]) == 64
    assert torch.equal(enc.module.layer4[0].conv2.weight, src.layer4[0].conv2.weight)
    assert (enc.kind, enc.family, enc.out_features) == ("3d", "medicalnet", 512)
