"""Helpers shared by the per-stage CLI modules (argument checks, params sections).

The ``check_*`` functions validate paths up front, in the subcommand's function (not as argparse
``type=``, whose error prints the usage block): each raises a one-line
:class:`~pipeline.errors.DataError` ``"<path>: <reason>"`` that :func:`pipeline.cli.main` prints as
``error: ...`` with exit code 1, before any work starts or any output is written.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, DataError

DEFAULT_PARAMS = "params.yaml"


def add_params_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default=None,
                   help=f"params file (default: {DEFAULT_PARAMS} when present, else built-in defaults; "
                        "a file named here must exist)")


def params_section(args: argparse.Namespace, section: str, required: bool = False) -> dict[str, Any]:
    """The ``section`` mapping of the params file named by ``--params`` ({} if absent).

    Without ``--params``, ``params.yaml`` of the working directory is read when it exists (else {}:
    the built-in defaults). A file named by ``--params`` must exist (a typo must not silently run
    with the defaults); a folder, an unreadable file or invalid YAML is a one-line :class:`ConfigError`.
    """
    from pipeline.config import load_params

    named = getattr(args, "params", None)
    path = Path(named if named is not None else DEFAULT_PARAMS)
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path}: --params must be a YAML file, this is a folder")
    if not path.is_file():
        if required or named is not None:
            raise ConfigError(f"{path}: params file not found (--params)")
        return {}
    import yaml

    try:
        data = load_params(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: params file not readable ({_reason(exc)})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_reason(exc)})") from None
    sec = data.get(section, {}) or {}
    if not isinstance(sec, dict):
        raise ConfigError(f"{path}: section '{section}' must be a mapping")
    return sec


def existing_path(value: str) -> Path:
    """argparse ``type=`` that validates a path exists up front (prefer the ``check_*`` helpers)."""
    p = Path(value)
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{p}: no such file or folder")
    return p


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:200]


def check_input_file(path: str | os.PathLike, flag: str, what: str = "file") -> Path:
    """``path`` must be an existing, readable file (``flag``/``what`` name it in the message)."""
    p = Path(path)
    if not p.exists():
        raise DataError(p, f"{flag}: no such {what}")
    if p.is_dir():
        raise DataError(p, f"{flag}: expected {what}, found a folder")
    if not os.access(p, os.R_OK):
        raise DataError(p, f"{flag}: {what} is not readable (permission denied)")
    return p


def check_input_dir(path: str | os.PathLike, flag: str, what: str = "folder") -> Path:
    """``path`` must be an existing folder."""
    p = Path(path)
    if not p.exists():
        raise DataError(p, f"{flag}: no such {what}")
    if not p.is_dir():
        raise DataError(p, f"{flag}: expected {what}, found a file")
    return p


def add_force_arg(p) -> None:
    p.add_argument("--force", action="store_true",
                   help="write into --out even when it holds files this stage did not write")


def check_output_dir(path: str | os.PathLike, flag: str = "--out", *, stage: str | None = None,
                     force: bool = False, signatures: tuple[str, ...] = ()) -> Path:
    """``path`` must be a folder or creatable as one: not an existing file, not under a file, and
    its nearest existing ancestor writable; with ``stage``, also one the stage owns or an empty one
    (:func:`pipeline.outdir.check_owner`). Nothing is created here."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise DataError(p, f"{flag} must be a folder, but an existing file has this name")
    anc = Path(os.path.abspath(p))
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise DataError(p, f"{flag} cannot be created: {anc} is a file, not a folder")
    target = p if p.exists() else anc
    if not os.access(target, os.W_OK | os.X_OK):
        raise DataError(p, f"{flag}: no permission to write in {target}")
    if stage is not None:
        from pipeline.outdir import check_owner

        check_owner(p, stage, force=force, signatures=signatures, flag=flag)
    return p


def check_not_inside(out: str | os.PathLike, inp: str | os.PathLike, out_flag: str, in_flag: str) -> None:
    """``out`` must not be ``inp`` itself (a run would overwrite or index its own input)."""
    o, i = Path(os.path.abspath(out)), Path(os.path.abspath(inp))
    if o == i:
        raise DataError(out, f"{out_flag} is the same folder as {in_flag}; choose another output folder")
