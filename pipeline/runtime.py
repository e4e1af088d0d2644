"""Runtime: device choice, precision (autocast dtype, gradient scaler), GPU settings and model loading.

One home for what training (``pipeline.train``), ``predict`` and ``detect`` share, so the GPU
settings live in one place:

- :func:`resolve_device` (``auto`` / ``cpu`` / ``cuda``; under ``torchrun`` each rank its
  ``LOCAL_RANK`` GPU) and :func:`configure_device` (``cudnn.benchmark`` on CUDA; deterministic
  algorithms for CPU training; :func:`keep_freed_memory` for CPU inference);
- :func:`resolve_precision` (``auto`` / ``bf16`` / ``fp16`` / ``fp32`` -> autocast dtype, None = fp32),
  whose rule is the pure :func:`precision_dtype`; :func:`autocast`; :func:`grad_scaler`;
- checkpoints: :func:`save_checkpoint` (atomic ``torch.save``), :func:`load_checkpoint`
  (``weights_only=True``), :func:`build_from_config` and :func:`load_model` (a model folder's
  ``config.json`` + ``model.pt`` -> model in eval mode; see ``pipeline.train.checkpoint`` for the
  folder layout).
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import ConfigError, DataError
from pipeline.utils import atomic_path, keep_freed_memory, read_json

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


# --------------------------------------------------------------------------------------------
# device
# --------------------------------------------------------------------------------------------

def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the torchrun environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA if available else CPU; ``cuda`` without a GPU is a ConfigError.

    Under ``torchrun`` (WORLD_SIZE > 1) a CUDA device is the rank's ``LOCAL_RANK`` GPU."""
    _, world, local = dist_info()
    if name not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}; got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available; valid here: auto, cpu")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local if world > 1 else torch.cuda.current_device())


def configure_device(device: torch.device, *, training: bool = False) -> None:
    """Process-wide settings for ``device``: ``cudnn.benchmark`` on CUDA (fixed input shapes: the
    fastest convolution algorithm is picked once per shape); for training on CPU, deterministic
    algorithms (warn only); for inference on CPU, :func:`keep_freed_memory` (numbers unchanged)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    elif training:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        keep_freed_memory()


# --------------------------------------------------------------------------------------------
# precision
# --------------------------------------------------------------------------------------------

def bf16_native() -> bool:
    """True when the current CUDA GPU computes bf16 natively (not emulated); False without CUDA.

    Uses ``torch.cuda.is_bf16_supported(including_emulation=False)``; torch versions without that
    keyword answer the plain question (which, there, did not count emulation)."""
    if not torch.cuda.is_available():
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:
        return bool(torch.cuda.is_bf16_supported())


def precision_dtype(precision: str, device_type: str, bf16_native: bool = False) -> torch.dtype | None:
    """The autocast dtype (None = fp32) for ``precision`` on a ``device_type`` ('cpu' / 'cuda').

    Pure rule (no GPU query): ``auto`` is bf16 on a CUDA GPU with native bf16, fp16 (with a
    gradient scaler, see :func:`grad_scaler`) on other CUDA GPUs, fp32 on CPU. ``fp16`` on CPU is a
    ConfigError (CPU autocast fp16 is slow and the gradient scaler is CUDA-only); ``bf16`` is taken
    as asked on any device."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    cuda = device_type == "cuda"
    if precision == "auto":
        if not cuda:
            return None
        return torch.bfloat16 if bf16_native else torch.float16
    if precision == "fp16" and not cuda:
        raise ConfigError("precision 'fp16' needs a CUDA device; on CPU use bf16 or fp32 (or auto)")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype (None = fp32) for ``precision`` on ``device``: :func:`precision_dtype` with
    the GPU's native-bf16 flag (queried only for ``auto`` on CUDA)."""
    native = device.type == "cuda" and precision == "auto" and bf16_native()
    return precision_dtype(precision, device.type, native)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``; disabled (fp32) when ``dtype`` is None."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def grad_scaler(dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Gradient scaler, enabled only for fp16 autocast (a pass-through otherwise)."""
    return torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)


# --------------------------------------------------------------------------------------------
# checkpoints and model loading
# --------------------------------------------------------------------------------------------

def save_checkpoint(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` to a temp file next to ``path``, renamed on success (never half-written)."""
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)``; a missing/corrupt file raises DataError."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "checkpoint missing")
    try:
        return torch.load(p, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a data problem
        raise DataError(p, f"cannot load checkpoint ({type(exc).__name__}: {_load_reason(exc)})") from None


def _load_reason(exc: Exception) -> str:
    """The gist of a ``torch.load`` failure on one short line (torch's weights-only message is a
    paragraph with terminal colour codes and advice to load untrusted files unsafely)."""
    msg = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    if "WeightsUnpickler error:" in msg:
        msg = re.split(r"\.\s|\s+Check the documentation", msg.split("WeightsUnpickler error:", 1)[1], maxsplit=1)[0]
    msg = " ".join(msg.split()) or "empty or truncated file"
    return msg if len(msg) <= 200 else msg[:197] + "..."


def build_from_config(config: dict, weights: str = "none") -> torch.nn.Module:
    """The architecture described by ``config.json`` (``weights='none'``: no weight files read)."""
    from pipeline.config import from_dict

    mc = dict(config["model"], weights=weights)
    if weights == "none":
        mc["weights_path"] = None
    if config.get("task") == "segmenter":
        from pipeline.models.segmenter import SegmenterConfig, build_segmenter

        return build_segmenter(from_dict(SegmenterConfig, mc, "model"))
    from pipeline.models.classifier import ModelConfig, build_classifier

    return build_classifier(from_dict(ModelConfig, mc, "model"))


def load_model(model_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model from ``model_dir/config.json`` and load ``model.pt`` (best weights).

    Needs no pretrained weight file. Returns ``(model in eval mode on device, config dict)``;
    ``model.provenance`` is taken from ``provenance.json`` (the encoder weights it started from).
    """
    d = Path(model_dir)
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise DataError(cfg_path, "model config missing (run the train stage)")
    config = read_json(cfg_path)
    level = logging.getLogger("pipeline.models").level
    logging.getLogger("pipeline.models").setLevel(logging.ERROR)  # 'random init' warnings are moot here
    try:
        model = build_from_config(config)
    finally:
        logging.getLogger("pipeline.models").setLevel(level)
    state = load_checkpoint(d / "model.pt")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DataError(d / "model.pt", f"does not match config.json: {str(exc).splitlines()[0]}") from None
    if (d / "provenance.json").is_file():
        model.provenance = read_json(d / "provenance.json")
    return model.to(device).eval(), config
