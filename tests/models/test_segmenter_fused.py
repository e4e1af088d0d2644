"""The fused CPU inference form of the segmenter equals the original to float round-off."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.models.segmenter import SegmenterConfig, build_segmenter
from pipeline.models.segmenter_fused import FusedSegmenter, fuse_for_inference, upsample_conv_weight


def _segmenter(encoder="medicalnet_resnet10", features=(128, 64, 32, 16, 16), seed=0):
    """A segmenter with random weights AND non-trivial BatchNorm statistics (as after training)."""
    torch.manual_seed(seed)
    m = build_segmenter(SegmenterConfig(encoder=encoder, features=features))
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm3d):
            n = mod.num_features
            mod.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            mod.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.2)
            mod.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return m.eval()


def _hu(shape, seed=0):
    """Lung-like HU windows: air/parenchyma background with soft-tissue blobs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full(shape, -850.0) + torch.randn(shape, generator=g) * 60
    x[..., 10:20, 12:24, 8:18] = 30.0
    return x


@pytest.mark.parametrize("shape", [(2, 1, 64, 64, 64), (1, 1, 50, 40, 70), (3, 1, 32, 32, 32)])
def test_fused_logits_equal_original(shape, two_torch_threads):
    m = _segmenter()
    f = fuse_for_inference(m)
    assert isinstance(f, FusedSegmenter)
    x = _hu(shape)
    with torch.inference_mode():
        ref, out = m(x), f(x)
    assert out.shape == ref.shape == shape
    assert float(ref.std()) > 1e-2  # the maps vary: not a comparison of two constants
    assert float((out - ref).abs().max()) <= 1e-4 * max(float(ref.abs().max()), 1.0)
    # decisions at the detection threshold (logit 0) are the same wherever the logit is not ~0
    clear = ref.abs() > 1e-3
    assert torch.equal((ref > 0)[clear], (out > 0)[clear])


def test_fused_other_depth_and_decoder(two_torch_threads):
    m = _segmenter("medicalnet_resnet18", features=(64, 32, 16, 8, 8), seed=1)
    f = fuse_for_inference(m)
    x = _hu((1, 1, 64, 64, 64), seed=2)
    with torch.inference_mode():
        assert float((f(x) - m(x)).abs().max()) < 1e-4


def test_fused_leaves_the_original_untouched(two_torch_threads):
    m = _segmenter()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    fuse_for_inference(m)
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(mod, torch.nn.BatchNorm3d) for mod in m.modules())


def test_upsample_conv_weight_is_upsample_then_conv():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, 7, 8, generator=g, dtype=torch.float64)
    w = torch.randn(4, 5, 3, 3, 3, generator=g, dtype=torch.float64)
    ref = F.conv3d(F.interpolate(x, scale_factor=2, mode="nearest"), w, padding=1)
    out = F.conv_transpose3d(x, upsample_conv_weight(w), stride=2, padding=1)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-10)


def test_unknown_structure_is_not_fused():
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 1, 3, padding=1))
    assert fuse_for_inference(net) is None
