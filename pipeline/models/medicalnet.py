"""MedicalNet 3D ResNets (Chen, Ma, Zheng 2019, arXiv:1904.00625) on MONAI's ``ResNet``.

Checkpoint files (names as the MedicalNet release / Hugging Face ``TencentMedicalNet``):
``resnet_10.pth``, ``resnet_10_23dataset.pth``, ``resnet_18_23dataset.pth``,
``resnet_34_23dataset.pth``, ``resnet_50_23dataset.pth``. They are looked up in
``$MEDICALNET_DIR`` if set, else ``~/.cache/medicalnet/`` (see :func:`medicalnet_path`).
Format: ``{"state_dict": {"module.conv1.weight": ..., "module.layer1.0.conv1.weight": ...,
"module.conv_seg.*": (segmentation head, ignored)}}``.

Architecture as MedicalNet (per depth, verified by MONAI against the released files):
conv1 7x7x7 stride 2, max-pool, shortcut 'B' (1x1x1 conv, no bias) for resnet10/50 and
'A' (parameter-free zero-padded identity) for resnet18/34. MedicalNet's layer3/layer4 use
dilation instead of stride; MONAI's ResNet uses stride 2 (same tensor shapes, so the
weights load unchanged; the receptive field differs - documented, deliberate: it gives the
/32 feature pyramid the U-Net decoder needs).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from torch import nn

from pipeline.errors import ConfigError
from pipeline.models.weights import Encoder, load_checked, provenance, read_state

log = logging.getLogger(__name__)

# depth -> (block, layers, shortcut_type, bias_downsample): monai resnet_params for MedicalNet
MEDICALNET_ARCH = {
    10: ("basic", (1, 1, 1, 1), "B", False),
    18: ("basic", (2, 2, 2, 2), "A", True),
    34: ("basic", (3, 4, 6, 3), "A", True),
    50: ("bottleneck", (3, 4, 6, 3), "B", False),
}
# MedicalNet key -> MONAI key renames (the two code bases use the same names today; kept
# as the one place to adapt if a checkpoint variant differs).
KEY_RENAMES: dict[str, str] = {}


def medicalnet_dir() -> Path:
    """``$MEDICALNET_DIR`` or ``~/.cache/medicalnet``."""
    return Path(os.environ.get("MEDICALNET_DIR") or Path.home() / ".cache" / "medicalnet")


def medicalnet_filenames(depth: int) -> list[str]:
    """Release file names for ``depth``, preferred first (23-dataset weights, then the original)."""
    return [f"resnet_{depth}_23dataset.pth", f"resnet_{depth}.pth"]


def medicalnet_path(depth: int) -> Path:
    """The first existing MedicalNet file for ``depth`` in :func:`medicalnet_dir`, else the
    preferred (non-existing) path, so error messages can say where to put it."""
    if depth not in MEDICALNET_ARCH:
        raise ConfigError(f"MedicalNet depth {depth} not supported; valid: {sorted(MEDICALNET_ARCH)}")
    paths = [medicalnet_dir() / n for n in medicalnet_filenames(depth)]
    return next((p for p in paths if p.is_file()), paths[0])


def medicalnet_resnet(depth: int) -> nn.Module:
    """MONAI 3D ResNet with MedicalNet's layout, 1 input channel, no fc: ``(B,1,D,H,W) -> (B,C)``
    with C = 512 (10/18/34) or 2048 (50)."""
    from monai.networks.nets.resnet import ResNet, get_inplanes

    if depth not in MEDICALNET_ARCH:
        raise ConfigError(f"MedicalNet depth {depth} not supported; valid: {sorted(MEDICALNET_ARCH)}")
    block, layers, shortcut, bias_ds = MEDICALNET_ARCH[depth]
    return ResNet(block=block, layers=list(layers), block_inplanes=get_inplanes(), spatial_dims=3,
                  n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, shortcut_type=shortcut,
                  feed_forward=False, bias_downsample=bias_ds)


def resnet_stages(net: nn.Module) -> list[nn.Module]:
    """Stem (conv1+bn1), layer1..layer4 of a MONAI ResNet / ResNetEncoder, shallow -> deep."""
    return [nn.ModuleList([net.conv1, net.bn1]), net.layer1, net.layer2, net.layer3, net.layer4]


def to_monai_keys(state: dict) -> dict:
    """Strip DataParallel's ``module.`` prefix and apply :data:`KEY_RENAMES`."""
    out = {}
    for k, v in state.items():
        k = k.removeprefix("module.")
        for old, new in KEY_RENAMES.items():
            if k.startswith(old):
                k = new + k[len(old):]
        out[k] = v
    return out


def load_medicalnet_state(model: nn.Module, state: dict, source: str) -> tuple[list[str], list[str]]:
    """Load a MedicalNet-format state dict (``module.``-prefixed) into ``model`` (a MONAI ResNet
    or FlexibleUNet's ResNetEncoder). Refuses (ConfigError naming ``source``) shape mismatches
    and missing encoder tensors. Returns (missing, unexpected) keys; unexpected ones (e.g.
    ``conv_seg.*``) are ignored and reported."""
    missing, unexpected = load_checked(model, to_monai_keys(state), source, optional_prefixes=("fc.",))
    if unexpected:
        log.info("%s: ignored %d unexpected key(s): %s", source, len(unexpected), unexpected[:5])
    return missing, unexpected


def load_medicalnet_checkpoint(model: nn.Module, path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Read MedicalNet checkpoint ``path`` (``{"state_dict": {...}}`` or a bare state dict)
    with ``weights_only=True`` and load it via :func:`load_medicalnet_state`."""
    path = Path(path)
    state = read_state(path, what="MedicalNet checkpoint")
    return load_medicalnet_state(model, state, str(path))


def load_medicalnet_weights(net: nn.Module, depth: int, *, weights_path=None,
                            allow_download: bool = False, name: str = "") -> dict:
    """Fill ``net`` with MedicalNet weights from ``weights_path``, the local folder, or (only
    when allowed) Hugging Face via MONAI. Returns the provenance dict."""
    name = name or f"medicalnet_resnet{depth}"
    if weights_path is not None:
        path, source = Path(weights_path), "file"
    else:
        path, source = medicalnet_path(depth), "file"
    if path.is_file():
        missing, unexpected = load_medicalnet_checkpoint(net, path)
        return provenance(name, source, path, missing, unexpected)
    if weights_path is not None or not allow_download:
        raise ConfigError(f"weights for {name} not found at {path}; put one of "
                          f"{medicalnet_filenames(depth)} in {path.parent} (or set $MEDICALNET_DIR), "
                          "pass weights_path, or set allow_download: true")
    from monai.networks.nets.resnet import get_pretrained_resnet_medicalnet

    state = get_pretrained_resnet_medicalnet(depth, device="cpu", datasets23=True)
    missing, unexpected = load_medicalnet_state(net, state, f"huggingface:TencentMedicalNet/MedicalNet-Resnet{depth}")
    prov = provenance(name, "download", None, missing, unexpected)
    prov["weights_path"] = f"huggingface:TencentMedicalNet/MedicalNet-Resnet{depth}"
    return prov


def build_medicalnet_encoder(depth: int, *, weights: str = "pretrained", weights_path=None,
                             allow_download: bool = False):
    """:class:`~pipeline.models.weights.Encoder` for ``medicalnet_resnet<depth>``."""
    name = f"medicalnet_resnet{depth}"
    net = medicalnet_resnet(depth)
    if weights == "none":
        log.warning("encoder %s: random initialisation (weights: none)", name)
        prov = provenance(name, "random", None)
    else:
        prov = load_medicalnet_weights(net, depth, weights_path=weights_path,
                                       allow_download=allow_download, name=name)
    out = 512 * (4 if MEDICALNET_ARCH[depth][0] == "bottleneck" else 1)
    return Encoder(net, "3d", "medicalnet", out, resnet_stages(net), prov, mean_std=((0.0,), (1.0,)))
