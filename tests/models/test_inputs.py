"""InputAdapter: HU window -> [0, 1] -> mean/std (2D); MedicalNet z-score (3D)."""
from __future__ import annotations

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.models import InputAdapter
from pipeline.models.encoders import IMAGENET_MEAN_STD


def test_2d_known_values_and_channel_repeat():
    ad = InputAdapter("imagenet", window_hu=(-1000, 400))
    hu = torch.tensor([-2000.0, -1000.0, -300.0, 400.0, 3000.0]).view(1, 1, 1, 5)
    out = ad(hu)
    assert out.shape == (1, 3, 1, 5)
    unit = torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0])
    for c, (m, s) in enumerate(zip(*IMAGENET_MEAN_STD)):
        torch.testing.assert_close(out[0, c, 0], (unit - m) / s)
    three = ad(hu.expand(1, 3, 1, 5).to(torch.int16))
    torch.testing.assert_close(three, out)


def test_2d_custom_mean_std():
    ad = InputAdapter("imagenet", (-1000, 400), mean_std=((0.5,) * 3, (0.5,) * 3))
    out = ad(torch.tensor([-1000.0, 400.0]).view(1, 1, 1, 2))
    torch.testing.assert_close(out[0, :, 0], torch.tensor([[-1.0, 1.0]] * 3))


def test_3d_zscore_over_non_air():
    ad = InputAdapter("medicalnet", window_hu=(-1000, 400))
    vol = torch.full((1, 1, 2, 2, 2), -1000.0)
    vol[0, 0, 0, 0, :] = torch.tensor([0.0, 200.0])  # two tissue voxels: mean 100, std 100
    vol[0, 0, 1, 1, 1] = 5000.0  # clipped to 400 first
    out = ad(vol)
    tissue = torch.tensor([0.0, 200.0, 400.0])
    mean, std = tissue.mean(), tissue.std(unbiased=False)
    torch.testing.assert_close(out[0, 0, 0, 0], (torch.tensor([0.0, 200.0]) - mean) / std)
    torch.testing.assert_close(out[0, 0, 1, 0, 0], (-1000 - mean) / std)
    # statistics are per volume: batching with another volume changes nothing
    both = ad(torch.cat([vol, torch.full_like(vol, 300.0) + torch.arange(8.0).view(1, 1, 2, 2, 2)]))
    torch.testing.assert_close(both[:1], out)
    assert ad(torch.full((1, 1, 2, 2, 2), -300.0)).abs().max() == 0


def test_bad_inputs():
    with pytest.raises(ConfigError, match="imagenet, medicalnet, ct"):
        InputAdapter("xray")
    with pytest.raises(ValueError):
        InputAdapter("imagenet")(torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError):
        InputAdapter("medicalnet")(torch.zeros(1, 1, 4, 4))
