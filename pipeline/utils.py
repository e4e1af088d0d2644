"""Small shared helpers: atomic writes, JSON, timing, seeding."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing.Self is Python 3.11+; annotations are not evaluated (PEP 563)
    from typing import Self

_TMP_NAME_BYTES = 64  # of a target's name kept in its temporary file's name


def tmp_prefix(name: str) -> str:
    """``.tmp-<name>.`` for a temporary file beside ``name``, the name cut (by bytes) so that the
    temporary file's name stays far below the file-system limit of 255 bytes even when ``name``
    itself is that long."""
    raw = os.fsencode(name)
    if len(raw) > _TMP_NAME_BYTES:
        raw = raw[:_TMP_NAME_BYTES]
        while raw:  # never cut inside a UTF-8 character
            try:
                raw.decode("utf-8")
                break
            except UnicodeDecodeError:
                raw = raw[:-1]
    return f".tmp-{os.fsdecode(raw)}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    Use for any file a later run may take as "done": an interrupted write leaves only a
    hidden ``.tmp-*`` file, never a half-written target.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(target.name), suffix=(suffix or target.suffix)[-16:],
                               dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.exists(tmp):  # mkstemp makes 0600 files: give the result the usual umask mode
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any, *, sort_keys: bool = True) -> Path:
    """Write JSON atomically (indent 2; keys sorted unless ``sort_keys=False``, which keeps the
    dict's order, e.g. headline metrics first for ``dvc exp show``)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=sort_keys, default=_json_default) + "\n",
                       encoding="utf-8")
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically (whatever the locale: paths in reports may be non-ASCII)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_csv(path: str | os.PathLike, df: Any, **kwargs: Any) -> Path:
    """Write a pandas DataFrame as CSV atomically (no index)."""
    kwargs.setdefault("index", False)
    kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, **kwargs)
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class Timer:
    """``with Timer() as t: ...; t.seconds``"""

    def __enter__(self) -> Self:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


MMAP_THRESHOLD = 256 << 20  # bytes: blocks below this come from the heap, not a fresh mmap
TRIM_THRESHOLD = 1 << 30    # bytes of free heap kept before it is returned to the OS
_KEEP: list[bool] = []


def keep_freed_memory() -> bool:
    """glibc only, once per process: serve blocks under 256 MiB from the heap and keep up to 1 GiB
    of freed heap (``mallopt``), so large temporary arrays (a scan's resampled volume, the
    segmenter's per-window activations of up to 67 MB) reuse memory instead of being mapped and
    zero-filled afresh each time. Numbers are unchanged. On this project's 2-core CPU a
    512x512x300 scan's sliding window made 3.1 M page faults (8 s of system time) with glibc's
    defaults and 0.34 M (1.2 s) with these. Called by CPU inference
    (``pipeline.runtime.configure_device``) and by ``preprocess_scan``. Returns whether the
    settings are applied (False on other C libraries: a no-op)."""
    if not _KEEP:
        import ctypes
        import platform

        ok = False
        if platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL("libc.so.6")
                m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
                ok = bool(libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and \
                    bool(libc.mallopt(m_trim_threshold, TRIM_THRESHOLD))
            except (OSError, AttributeError):
                ok = False
        _KEEP.append(ok)
    return _KEEP[0]
