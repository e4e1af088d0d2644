"""Model folders; the checkpoint functions themselves live in :mod:`pipeline.runtime`.

A model folder holds ``model.pt`` (best state_dict), ``last.pt`` (state_dict + optimizer, step,
early-stopping and RNG state for ``--resume``), ``config.json`` (``task``, ``model`` = the
ModelConfig / SegmenterConfig fields, ``train`` = the resolved train config, ``input``, and the
``patches`` / ``preprocess`` params), ``provenance.json`` and ``metrics.json``.

The names below are re-exported from :mod:`pipeline.runtime` for the old import path (tests and
``pipeline.train.load_model``); new code imports them from ``pipeline.runtime``.
"""
from __future__ import annotations

from pipeline.runtime import build_from_config, load_checkpoint, load_model, save_checkpoint

__all__ = ["build_from_config", "load_checkpoint", "load_model", "save_checkpoint"]
