"""Output folders the pipeline may write into: never one that holds a user's own files.

A stage writes only into a folder that does not exist yet, is empty (hidden files such as
``.DS_Store`` or ``.gitkeep`` aside), or carries the stage's own marker file :data:`MARKER` (written
when the folder is claimed), or, for folders written before markers existed, the stage's own
signature file (e.g. ``synth_summary.json``). Anything else (``synth --out`` pointed at a user's
real LUNA16 folder, say) is refused with a one-line message naming a file found there; ``--force``
overrides. DVC removes a stage's outputs before it reruns the stage, so ``dvc repro`` always finds
an empty folder (or, for ``persist`` outputs, its own marker).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.errors import DataError

MARKER = ".pipeline-output"  # a small JSON file; hidden, and no .json suffix a stage might glob for


def _foreign(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def owner(folder: str | os.PathLike) -> str | None:
    """The stage named by ``folder``'s marker, or None (no marker, or unreadable)."""
    try:
        return str(json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))["stage"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_owner(folder: str | os.PathLike, stage: str, *, force: bool = False,
                signatures: tuple[str, ...] = (), flag: str = "--out") -> Path:
    """One-line DataError unless ``stage`` may write into ``folder`` (see the module docstring);
    nothing is created. ``force`` skips the check."""
    out = Path(folder)
    if out.is_dir() and not force:
        mark = owner(out)
        entries = _foreign(out)
        ours = mark == stage or (mark is None and any((out / s).exists() for s in signatures))
        if entries and not ours:
            whose = f"written by '{mark}', not '{stage}'" if mark else "files this stage did not write"
            raise DataError(out, f"{flag} holds {whose} (e.g. '{entries[0]}', {len(entries)} entries); "
                                 f"{stage} never overwrites a folder it does not own: choose an empty or new "
                                 f"folder, or pass --force")
    return out


def claim_output_dir(folder: str | os.PathLike, stage: str, *, force: bool = False,
                     signatures: tuple[str, ...] = (), flag: str = "--out") -> Path:
    """:func:`check_owner`, then create ``folder`` and write the marker naming ``stage``."""
    out = check_owner(folder, stage, force=force, signatures=signatures, flag=flag)
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{MARKER}.tmp"
        tmp.write_text(json.dumps({"stage": stage, "written_by": "pipeline"}) + "\n", encoding="utf-8")
        os.replace(tmp, out / MARKER)
    except OSError as exc:
        raise DataError(out, f"cannot create the output folder ({exc.strerror or type(exc).__name__})") from None
    return out
