"""Typed configs: one dataclass per ``params.yaml`` section, unknown keys are errors.

Only :mod:`pipeline.cli` reads ``params.yaml``; stage cores receive these objects.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, TypeVar

from pipeline.errors import ConfigError

T = TypeVar("T")
# keys that moved between sections: "old.section.key" -> where it lives now (and why)
MOVED_KEYS = {
    "patches.neg_ratio": "train.neg_ratio (negatives are subsampled per epoch by the training sampler; "
                         "the patch store keeps every candidate so every subset can be scored)",
}


def _number(value: Any, default: Any, key: str) -> Any:
    """A numeric param as a finite number. YAML 1.1 (PyYAML) reads ``1e-3`` (no dot) as a string:
    where the default is a number such a string is converted; NaN and infinities are refused (a
    NaN compares False with everything, so a check against it silently never fires)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return value
    if isinstance(default, (int, float)) and isinstance(value, str):
        try:
            num = float(value.strip())
        except ValueError:
            raise ConfigError(f"params key {key.strip('.')}: {value!r} is not a number") from None
        value = int(num) if isinstance(default, int) and num.is_integer() else num
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"params key {key.strip('.')}: {value} is not a finite number")
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, section: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys.

    Lists become tuples where the field's default is a tuple. Nested dataclass fields are
    built recursively.
    """
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    moved = [f"{section}.{k}" for k in unknown if f"{section}.{k}" in MOVED_KEYS]
    if moved:
        raise ConfigError(f"params key {moved[0]} has moved to {MOVED_KEYS[moved[0]]}")
    if unknown:
        raise ConfigError(
            f"params section '{section or cls.__name__}': unknown key(s) {unknown}; valid keys: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = from_dict(type(default), value, f"{section}.{name}")
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(_number(v, d, f"{section}.{name}") for v, d in
                          zip(value, (*default, *[default[-1] if default else None] * len(value))))
        else:
            value = _number(value, default, f"{section}.{name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"params section '{section or cls.__name__}': {exc}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> plain JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def load_params(path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    """Read ``params.yaml`` (used by the CLI only)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: params file not found")
    with open(p, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of sections")
    return data
