"""Nodule classifier: HU patch -> InputAdapter -> pretrained encoder -> head -> logit.

``kind == '2d'``: feed planes ``(B, 3, P, P)`` (or ``(B, 1, P, P)``) int16/float HU;
``kind == '3d'``: feed cubes ``(B, 1, S, S, S)`` HU (zyx). Output: logits ``(B,)``
(apply ``sigmoid`` for the nodule probability).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.models.encoders import build_encoder
from pipeline.models.heads import ClassifierHead
from pipeline.models.inputs import InputAdapter


@dataclass(frozen=True)
class ModelConfig:
    """``model:`` section of params.yaml."""

    encoder: str = "efficientnet_lite0"
    weights: str = "pretrained"  # pretrained | none
    weights_path: str | None = None
    allow_download: bool = False
    head_hidden: int = 512
    dropout: float = 0.5
    window_hu: tuple = (-1000.0, 400.0)


class NoduleClassifier(nn.Module):
    """Attributes: ``adapter``, ``encoder`` (module), ``head``, ``stages`` (encoder stages,
    shallow -> deep, plain list so state_dict keys stay unique), ``kind``, ``family``,
    ``provenance``."""

    def __init__(self, adapter: nn.Module, encoder, head: nn.Module):
        super().__init__()
        self.adapter = adapter
        self.encoder = encoder.module
        self.head = head
        self.stages = list(encoder.stages)
        self.kind, self.family = encoder.kind, encoder.family
        self.provenance = dict(encoder.provenance)

    def forward(self, x_hu: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.adapter(x_hu))).squeeze(-1)


def build_classifier(cfg: ModelConfig) -> NoduleClassifier:
    enc = build_encoder(cfg.encoder, weights=cfg.weights, weights_path=cfg.weights_path,
                        allow_download=cfg.allow_download)
    window = enc.window_hu or tuple(cfg.window_hu)  # weights trained on a fixed window keep it
    adapter = InputAdapter(enc.family, window, mean_std=enc.mean_std if enc.kind == "2d" else None,
                           spacing_zyx_mm=enc.spacing_zyx_mm)
    return NoduleClassifier(adapter, enc, ClassifierHead(enc.out_features, cfg.head_hidden, cfg.dropout, 1))
