"""3D nodule segmenter: MONAI FlexibleUNet whose encoder is a MedicalNet 3D ResNet.

Input ``(B, 1, D, H, W)`` HU (zyx) -> InputAdapter (MedicalNet z-score) -> U-Net ->
logits ``(B, 1, D, H, W)``. The encoder downsamples by 32 (conv1 /2, max-pool /2, layer2-4
/2 each), so the network needs sizes that are multiples of 32: other sizes are padded at the
far end with the window's low HU (air, ignored by the z-score) and the logits cropped back.
Training with batch size 1 needs inputs of at least 64 per axis (BatchNorm needs > 1 value
per channel at the 1/32 level); use batches >= 2 otherwise.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ConfigError
from pipeline.models.inputs import InputAdapter
from pipeline.models.medicalnet import MEDICALNET_ARCH, load_medicalnet_weights, resnet_stages

log = logging.getLogger(__name__)
SEGMENTER_ENCODERS = tuple(f"medicalnet_resnet{d}" for d in MEDICALNET_ARCH)


@dataclass(frozen=True)
class SegmenterConfig:
    """``segmenter_model:`` section (the model part of the segmenter's params)."""

    encoder: str = "medicalnet_resnet10"
    weights: str = "none"  # pretrained | none
    weights_path: str | None = None
    allow_download: bool = False
    features: tuple = (128, 64, 32, 16, 16)  # decoder channels, deep -> shallow
    window_hu: tuple = (-1000.0, 400.0)


class NoduleSegmenter(nn.Module):
    """``adapter`` + MONAI ``net`` (FlexibleUNet); ``encoder_module`` = ``net.encoder``;
    ``stages`` = encoder stem, layer1..4 (plain list); decoder + seg head are the 'head'."""

    def __init__(self, net: nn.Module, adapter: InputAdapter, provenance: dict):
        super().__init__()
        self.adapter = adapter
        self.net = net
        self.stages = resnet_stages(net.encoder)
        self.kind, self.family, self.provenance = "3d", "medicalnet", provenance

    @property
    def encoder_module(self) -> nn.Module:
        return self.net.encoder

    def forward(self, x_hu: torch.Tensor) -> torch.Tensor:
        size = x_hu.shape[2:]
        y = self.net(self.adapter(pad_to_stride(x_hu, self.adapter.window_hu[0])))
        return y[..., : size[0], : size[1], : size[2]]


def pad_to_stride(x_hu: torch.Tensor, fill_hu: float, stride: int = 32) -> torch.Tensor:
    """``(B, C, D, H, W)`` HU -> float32, padded at the far end of each spatial axis to a multiple of
    ``stride`` (the encoder's total downsampling) with ``fill_hu``; unpadded inputs are returned as
    they are. Callers crop the logits back to ``x_hu.shape[2:]``."""
    pads = []
    for n in reversed(x_hu.shape[2:]):
        pads += [0, (-n) % stride]
    return F.pad(x_hu.float(), pads, value=float(fill_hu)) if any(pads) else x_hu


def build_segmenter(cfg: SegmenterConfig) -> NoduleSegmenter:
    from monai.networks.nets import FlexibleUNet

    from pipeline.models.weights import provenance

    if cfg.encoder not in SEGMENTER_ENCODERS:
        raise ConfigError(f"segmenter encoder '{cfg.encoder}' not supported; valid: {', '.join(SEGMENTER_ENCODERS)}")
    if cfg.weights not in ("pretrained", "none"):
        raise ConfigError(f"segmenter weights '{cfg.weights}'; valid: pretrained, none")
    if len(cfg.features) != 5:
        raise ConfigError(f"segmenter features must list 5 decoder channel counts, got {cfg.features}")
    depth = int(cfg.encoder.removeprefix("medicalnet_resnet"))
    net = FlexibleUNet(in_channels=1, out_channels=1, backbone=f"resnet{depth}", pretrained=False,
                       spatial_dims=3, decoder_channels=tuple(cfg.features))
    if cfg.weights == "none":
        log.warning("segmenter encoder %s: random initialisation (weights: none)", cfg.encoder)
        prov = provenance(cfg.encoder, "random", None)
    else:
        prov = load_medicalnet_weights(net.encoder, depth, weights_path=cfg.weights_path,
                                       allow_download=cfg.allow_download, name=cfg.encoder)
    return NoduleSegmenter(net, InputAdapter("medicalnet", tuple(cfg.window_hu)), prov)
