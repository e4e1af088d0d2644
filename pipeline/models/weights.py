"""One home for encoder weight loading: reading checkpoint files, fitting state dicts into a model
(refusing mismatches), provenance records, and the :class:`Encoder` record builders return.

:mod:`pipeline.models.encoders`, :mod:`pipeline.models.medicalnet` and
:mod:`pipeline.models.ct_i3resnet` import from here (and never from each other's internals).
Every checkpoint is read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import ConfigError
from pipeline.models.inputs import IMAGENET_MEAN_STD


@dataclass
class Encoder:
    """A backbone plus what the rest of the pipeline needs to know about it.

    ``module``: input ``(B, 3, H, W)`` (2d) or ``(B, C, D, H, W)`` (3d) as produced by the
    :class:`~pipeline.models.inputs.InputAdapter` of ``family`` -> features ``(B, out_features)``.
    ``stages``: shallow -> deep sub-modules covering every encoder parameter.
    ``mean_std``: 2D per-channel normalisation. ``window_hu``: HU window the weights were trained
    with (None = the config's ``window_hu``). ``spacing_zyx_mm``: voxel spacing the 3D weights
    expect (None = use the patches as they are).
    """

    module: nn.Module
    kind: str  # '2d' | '3d'
    family: str  # 'imagenet' | 'medicalnet' | 'ct'
    out_features: int
    stages: list[nn.Module]
    provenance: dict
    mean_std: tuple = IMAGENET_MEAN_STD
    window_hu: tuple | None = None
    spacing_zyx_mm: tuple | None = None


def read_state(path: str | os.PathLike, *, what: str = "weights") -> dict:
    """State dict of checkpoint ``path``: a bare state dict or ``{"state_dict": {...}, ...}``.
    Unreadable / not a state dict -> ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a config problem
        raise ConfigError(f"{path}: cannot read {what} ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise ConfigError(f"{path}: not a state_dict (expected {{'state_dict': {{...}}}} or a bare state dict)")
    return state


def load_checked(model: nn.Module, state: dict, source: str,
                 optional_prefixes: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """Load ``state`` into ``model``; refuse (ConfigError naming ``source``) shape mismatches,
    missing keys other than ``optional_prefixes`` and extra keys inside the model's modules
    (extra top-level heads such as MedicalNet's ``conv_seg`` are reported, not refused).
    Tensors are cast to the model's dtype (e.g. bf16 checkpoints into fp32 models).
    Returns (missing, unexpected)."""
    own = model.state_dict()
    bad = [f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items()
           if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise ConfigError(f"{source}: weights do not fit {type(model).__name__}: shape mismatch {bad[:3]}")
    missing = sorted(k for k in own if k not in state)
    required = [k for k in missing if not k.startswith(optional_prefixes)
                and not k.endswith("num_batches_tracked")]
    if required:
        raise ConfigError(f"{source}: weights miss {len(required)} encoder tensor(s), e.g. {required[:3]}")
    unexpected = sorted(k for k in state if k not in own)
    tops = {k.split(".")[0] for k in own}  # extra tensors INSIDE the model's modules: other arch
    if inside := [k for k in unexpected if k.split(".")[0] in tops]:
        raise ConfigError(f"{source}: weights are for another architecture: extra {inside[:3]}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items() if k in own}, strict=False)
    return missing, unexpected


def load_exact(model: nn.Module, state: dict, source: str) -> None:
    """Load ``state`` only if its keys and shapes equal the model's exactly; otherwise a
    ConfigError listing the offending keys (missing, unexpected, shape mismatches)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in sorted(set(own) & set(state))
              if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{n} {len(v)}: {v[:5]}" for n, v in (("missing", missing), ("unexpected", unexpected),
                                                      ("shape mismatch", shapes)) if v]
        raise ConfigError(f"{source}: weights do not fit {type(model).__name__} exactly; " + "; ".join(parts))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def provenance(name: str, source: str, path: str | os.PathLike | None, missing=(), unexpected=(),
               sha256: str | None = None) -> dict:
    """The record written to ``provenance.json``: encoder, weights source and file, its sha256
    (computed unless given), missing / unexpected keys."""
    from pipeline.utils import sha256_file

    if sha256 is None and path and Path(path).is_file():
        sha256 = sha256_file(path)
    return {"encoder": name, "weights_source": source, "weights_path": str(path) if path else None,
            "sha256": sha256, "missing_keys": list(missing), "unexpected_keys": list(unexpected)}
