"""Checkpoint files: atomic ``torch.save``, ``weights_only`` loading, model rebuild from config.json.

A model folder holds ``model.pt`` (best state_dict), ``last.pt`` (state_dict + optimizer, step,
early-stopping and RNG state for ``--resume``), ``config.json`` (``task``, ``model`` = the
ModelConfig / SegmenterConfig fields, ``train`` = the resolved train config, ``input``, and the
``patches`` / ``preprocess`` params), ``provenance.json`` and ``metrics.json``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import DataError
from pipeline.utils import atomic_path, read_json


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
        raise DataError(p, f"cannot load checkpoint ({type(exc).__name__}: {exc})") from None


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
    import logging

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
