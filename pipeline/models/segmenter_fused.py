"""An inference-only form of the segmenter for the CPU: the same function in fewer passes.

:func:`fuse_for_inference` turns a trained :class:`~pipeline.models.segmenter.NoduleSegmenter`
(MONAI ``FlexibleUNet`` with a MedicalNet ResNet encoder) into :class:`FusedSegmenter`, whose
logits equal the original's to float round-off (tests compare them). Rewrites, each exact in
real arithmetic:

1. every BatchNorm folded into the convolution before it
   (``torch.nn.utils.fusion.fuse_conv_bn_eval``; eval-mode statistics);
2. each decoder block's nearest 2x upsample followed by a 3x3x3 convolution (padding 1) becomes one
   stride-2 transposed convolution of the low-resolution input with a 4x4x4 kernel, per axis
   ``(w2, w1 + w2, w0 + w1, w0)`` (:func:`upsample_conv_weight`), plus the skip branch's own
   3x3x3 convolution at the high resolution: 27/8 fewer multiply-adds on the upsampled channels
   and no upsampled copy or concatenation;
3. the 16 -> 1 segmentation head as a 2D convolution over z-slices to the 3 kz taps and a
   shifted sum (oneDNN's 3D convolution with one output channel is several times slower than its
   multiply-adds);
4. the one-channel input given channels-last strides, so the stem convolution writes channels-last
   output and max-pooling takes the fast path (on NCDHW it is ~10x slower).

Measured on this project's 2-core CPU: ``benchmarks/bench_detect.py`` (about 1.7x per window).
Inputs and outputs as :meth:`NoduleSegmenter.forward`: ``(B, 1, D, H, W)`` HU (z, y, x) ->
logits of the same spatial size. Eval only (no gradients through the phase assembly).
"""
from __future__ import annotations

import copy
import itertools
import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)
CL = torch.channels_last_3d


class NotFusable(ValueError):
    """The model's structure is not the one these rewrites know (the caller keeps the original)."""


def upsample_conv_weight(w: torch.Tensor) -> torch.Tensor:
    """3x3x3 conv weights ``(Cout, Cin, 3, 3, 3)`` (padding 1) applied after a nearest 2x upsample ->
    the ``(Cin, Cout, 4, 4, 4)`` weights of the equal ``conv_transpose3d(x, ., stride=2, padding=1)``
    on the low-resolution input: along each axis, output voxel ``j = 2i + r`` (r = -1..2) takes
    ``x[i]`` times ``(w2, w1 + w2, w0 + w1, w0)[r + 1]``."""
    k = w
    for dim in (2, 3, 4):
        a, b, c = (k.narrow(dim, i, 1) for i in range(3))
        k = torch.cat([c, b + c, a + b, a], dim)
    return k.transpose(0, 1).contiguous()


class ChannelsLast(nn.Module):
    """Wrap a module so its output is channels-last 3D (a copy only when it is not already)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).contiguous(memory_format=CL)


class UpsampleConvUpCat(nn.Module):
    """MONAI ``UpCat`` (nearest 2x upsample of ``x``, concatenated after the skip, TwoConv) with its
    first convolution split into a transposed convolution of ``x`` and a convolution of the skip
    (module docstring, rewrite 2). BatchNorms already folded."""

    def __init__(self, block: nn.Module):
        super().__init__()
        up, convs = block.upsample, block.convs
        interp = getattr(up, "upsample_non_trainable", None)
        if not isinstance(interp, nn.Upsample) or interp.mode != "nearest" or \
                tuple(float(s) for s in interp.scale_factor) != (2.0, 2.0, 2.0):
            raise NotFusable("decoder upsampling is not nearest x2")
        if set(dict(up.named_children())) - {"preconv", "upsample_non_trainable"}:
            raise NotFusable("decoder upsampling has extra layers")
        self.pre = getattr(up, "preconv", None)
        conv0 = convs.conv_0
        c = conv0.conv
        if tuple(c.kernel_size) != (3, 3, 3) or tuple(c.padding) != (1, 1, 1) or tuple(c.stride) != (1, 1, 1) \
                or c.groups != 1:
            raise NotFusable("decoder conv is not 3x3x3 / padding 1 / stride 1")
        n_up = self.pre.out_channels if self.pre is not None else c.in_channels
        n_skip = c.in_channels - n_up
        w = c.weight.detach()
        bias = c.bias.detach() if c.bias is not None else torch.zeros(c.out_channels)
        self.n_skip = n_skip
        self.register_buffer("w_up", upsample_conv_weight(w[:, n_skip:]).contiguous(memory_format=CL))
        self.register_buffer("w_skip", w[:, :n_skip].contiguous(memory_format=CL) if n_skip else None)
        self.register_buffer("bias", bias)
        self.post = conv0.adn  # folded norm (Identity), dropout (eval: identity), activation
        self.conv_1 = convs.conv_1

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        if self.pre is not None:
            x = self.pre(x)
        if not self.n_skip:
            y = F.conv_transpose3d(x, self.w_up, self.bias, stride=2, padding=1)
        else:
            if skip is None or tuple(skip.shape[2:]) != tuple(2 * n for n in x.shape[2:]):
                raise ValueError(f"skip {None if skip is None else tuple(skip.shape)} is not 2x {tuple(x.shape)}")
            y = F.conv3d(skip, self.w_skip, self.bias, padding=1)
            y += F.conv_transpose3d(x, self.w_up, stride=2, padding=1)
        return self.conv_1(self.post(y))


class SliceHead(nn.Module):
    """A ``Cin -> 1`` 3x3x3 convolution (padding 1) as a 2D convolution of every z-slice to the three
    kz taps, summed with a one-slice shift (module docstring, rewrite 3)."""

    def __init__(self, conv: nn.Conv3d):
        super().__init__()
        if conv.out_channels != 1 or tuple(conv.kernel_size) != (3, 3, 3) or tuple(conv.padding) != (1, 1, 1) \
                or tuple(conv.stride) != (1, 1, 1) or conv.groups != 1:
            raise NotFusable("segmentation head is not a 3x3x3 conv to one channel")
        w = conv.weight.detach()[0]  # (Cin, kz, ky, kx)
        self.register_buffer("w2d", w.permute(1, 0, 2, 3).contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", conv.bias.detach() if conv.bias is not None else torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, d, h, w = x.shape
        s = x.permute(0, 2, 1, 3, 4).reshape(b * d, c, h, w)  # a view when x is channels-last
        o = F.conv2d(s, self.w2d, padding=1).view(b, d, 3, h, w)  # o[:, z, k] = tap kz=k on slice z
        out = o[:, :, 1] + self.bias
        out[:, 1:] += o[:, :-1, 0]
        out[:, :-1] += o[:, 1:, 2]
        return out[:, None]


class FusedSegmenter(nn.Module):
    """:class:`NoduleSegmenter`'s function with the rewrites of the module docstring (eval only)."""

    def __init__(self, segmenter: nn.Module):
        super().__init__()
        net = copy.deepcopy(segmenter.net).eval()
        _fold_batchnorms(net)
        enc = net.encoder
        enc.conv1 = ChannelsLast(enc.conv1)
        for m in net.modules():
            if isinstance(m, nn.Conv3d):
                m.weight.data = m.weight.data.contiguous(memory_format=CL)
        self.adapter = copy.deepcopy(segmenter.adapter).float()
        self.encoder = enc
        self.blocks = nn.ModuleList(UpsampleConvUpCat(b) for b in net.decoder.blocks)
        head = net.segmentation_head
        layers = list(head.children())
        if len(layers) != 3 or not all(isinstance(h, nn.Identity) for h in layers[1:]):
            raise NotFusable("segmentation head has upsampling or activation layers")
        self.head = SliceHead(layers[0])
        self.skip_connect = int(getattr(net, "skip_connect", 4))
        self.window_hu = tuple(segmenter.adapter.window_hu)
        self.eval()

    def forward(self, x_hu: torch.Tensor) -> torch.Tensor:
        from pipeline.models.segmenter import pad_to_stride

        size = x_hu.shape[2:]
        x = self.adapter(pad_to_stride(x_hu, self.window_hu[0])).contiguous()
        if x.shape[1] == 1:  # one channel: give it channels-last strides (same memory) so the stem
            d, h, w = x.shape[2:]  # conv writes channels-last output (x.contiguous(memory_format=...) keeps the old strides)
            x = x.as_strided(x.shape, (d * h * w, 1, h * w, w, 1))
        feats = self.encoder(x)
        skips = feats[:-1][::-1]
        y = feats[-1]
        for i, block in enumerate(self.blocks):
            y = block(y, skips[i] if i < self.skip_connect else None)
        return self.head(y)[..., : size[0], : size[1], : size[2]]


def _fold_batchnorms(net: nn.Module) -> None:
    """Fold every eval-mode BatchNorm3d into the Conv3d that feeds it, in place: a BatchNorm child
    directly after a Conv3d child (ResNet stem / blocks / downsample), and MONAI ``Convolution``'s
    ``adn.N``. Raises :class:`NotFusable` when a BatchNorm is left over."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for mod in list(net.modules()):
        adn = getattr(mod, "adn", None)
        if isinstance(getattr(mod, "conv", None), nn.Conv3d) and isinstance(getattr(adn, "N", None), nn.BatchNorm3d):
            mod.conv = fuse_conv_bn_eval(mod.conv, adn.N)
            adn.N = nn.Identity()
            continue
        names = list(mod._modules)
        for prev, name in itertools.pairwise(names):
            conv, bn = mod._modules[prev], mod._modules[name]
            if isinstance(conv, nn.Conv3d) and isinstance(bn, nn.BatchNorm3d):
                mod._modules[prev] = fuse_conv_bn_eval(conv, bn)
                mod._modules[name] = nn.Identity()
    left = [n for n, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise NotFusable(f"BatchNorm layers not after a conv: {left[:3]}")


def fuse_for_inference(segmenter: nn.Module) -> FusedSegmenter | None:
    """:class:`FusedSegmenter` of ``segmenter``, or None (logged) when its structure is not the
    FlexibleUNet + ResNet one these rewrites know; the caller then runs the original."""
    try:
        if not hasattr(segmenter, "net") or not hasattr(segmenter.net, "decoder"):
            raise NotFusable("not a FlexibleUNet segmenter")
        return FusedSegmenter(segmenter)
    except (NotFusable, AttributeError, TypeError) as e:
        log.info("segmenter kept unfused for CPU inference: %s", e)
        return None
