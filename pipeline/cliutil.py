"""Helpers shared by the per-stage CLI modules (argument checks, params sections)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError


def add_params_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")


def params_section(args: argparse.Namespace, section: str, required: bool = False) -> dict[str, Any]:
    """The ``section`` mapping of the params file named by ``--params`` ({} if absent)."""
    from pipeline.config import load_params

    path = Path(getattr(args, "params", "params.yaml"))
    if not path.is_file():
        if required:
            raise ConfigError(f"{path}: params file not found")
        return {}
    data = load_params(path)
    sec = data.get(section, {}) or {}
    if not isinstance(sec, dict):
        raise ConfigError(f"{path}: section '{section}' must be a mapping")
    return sec


def existing_path(value: str) -> Path:
    """argparse ``type=`` that validates a path exists up front."""
    p = Path(value)
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{p}: no such file or folder")
    return p
