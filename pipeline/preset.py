"""python -m pipeline preset OVERLAY: apply a params overlay (e.g. configs/luna16.yaml) to
params.yaml in place.

The overlay holds only the keys that differ from the default; they are deep-merged into the params
file (mappings merge key by key, lists and scalars are replaced), keeping the params file's comments,
key order and layout (ruamel.yaml round trip), and the file is rewritten atomically. A key of the
overlay (or of ``--set``) that the params file does not have is refused, so a preset cannot drift
away from the parameters the stages know. ``git checkout params.yaml`` goes back to the default.

Only CLI code reads or writes the params file; stage cores get typed configs.
"""
from __future__ import annotations

import argparse
import io
import os
import stat
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

Change = tuple[str, Any, Any]  # (dotted key, old value, new value)


def _yaml():
    from ruamel.yaml import YAML

    y = YAML()  # round trip: comments, key order, flow/block styles and quotes survive
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    # params.yaml spells nulls `null`; ruamel's round trip would write an empty value
    y.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return y


def _load(path: Path, what: str) -> Any:
    from ruamel.yaml.error import YAMLError

    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        data = _yaml().load(path.read_text(encoding="utf-8"))
    except YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of params sections")
    return data


def _plain(value: Any) -> Any:
    """ruamel containers -> plain dict / list (for comparisons and messages)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _assign(target: Any, key: str, value: Any, dotted: str, changes: list[Change], source: str) -> None:
    """Merge ``value`` into ``target[key]``; the key must exist already."""
    if key not in target:
        from pipeline import config

        moved = getattr(config, "MOVED_KEYS", {}).get(dotted)
        hint = f" (it has moved to {moved})" if moved else ""
        raise ConfigError(f"{source}: key '{dotted}' does not exist in the params file{hint}; "
                          "a preset may only change existing keys")
    old = target[key]
    if isinstance(old, Mapping) != isinstance(value, Mapping):
        kind = "a mapping" if isinstance(old, Mapping) else "not a mapping"
        raise ConfigError(f"{source}: key '{dotted}' is {kind} in the params file")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _assign(old, str(k), v, f"{dotted}.{k}", changes, source)
        return
    if _plain(old) == _plain(value) and type(old) is type(value):
        return
    changes.append((dotted, _plain(old), _plain(value)))
    if isinstance(old, list) and isinstance(value, list):
        old[:] = value  # replace the items, keep the list's own style and comments
    else:
        target[key] = value


def parse_set(item: str) -> tuple[str, Any]:
    """``section.key=value`` -> (dotted key, value parsed as YAML, e.g. ``[9]``, ``null``, ``20``)."""
    from ruamel.yaml.error import YAMLError

    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: expected section.key=value")
    try:
        value = _yaml().load(raw) if raw.strip() else None
    except YAMLError:
        raise ConfigError(f"--set {item!r}: value is not valid YAML") from None
    return key, value


def _nested(dotted: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def apply_preset(params: str | os.PathLike = "params.yaml", overlay: str | os.PathLike | None = None, *,
                 luna_root: str | None = None, sets: Iterable[str] = ()) -> list[Change]:
    """Merge ``overlay``, then ``luna_root``, then each ``section.key=value`` of ``sets`` into the
    ``params`` file in place; return the changed keys as (dotted key, old, new)."""
    params = Path(params)
    data = _load(params, "params file")
    changes: list[Change] = []
    if overlay is not None:
        overlay = Path(overlay)
        for key, value in _load(overlay, "preset").items():
            _assign(data, str(key), value, str(key), changes, str(overlay))
    extra = [("luna_root", str(Path(luna_root).expanduser()), "--luna-root")] if luna_root is not None else []
    extra += [(*parse_set(s), f"--set {s}") for s in sets]
    for dotted, value, source in extra:
        top, _, rest = dotted.partition(".")
        _assign(data, top, _nested(rest, value) if rest else value, top, changes, source)
    net: dict[str, Change] = {}  # one line per key: first old value, last new value
    for key, old, new in changes:
        net[key] = (key, net[key][1] if key in net else old, new)
    buf = io.StringIO()
    _yaml().dump(data, buf)
    from pipeline.utils import atomic_path

    mode = stat.S_IMODE(params.stat().st_mode)
    with atomic_path(params) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
        os.chmod(tmp, mode)  # mkstemp makes 0600 files; keep the params file's mode
    return [c for c in net.values() if c[1] != c[2]]


def _run(args: argparse.Namespace) -> int:
    changes = apply_preset(args.params, args.overlay, luna_root=args.luna_root, sets=args.set or ())
    for key, old, new in changes:
        print(f"{key}: {old!r} -> {new!r}")
    print(f"{args.params}: {len(changes)} key(s) changed (undo: git checkout {args.params})")
    if args.luna_root is not None and not Path(args.luna_root).expanduser().is_dir():
        print(f"warning: --luna-root {args.luna_root} is not a folder (yet)", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preset", help="apply a params overlay (e.g. configs/luna16.yaml) to params.yaml",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overlay", help="overlay YAML holding only the keys to change, e.g. configs/luna16.yaml")
    p.add_argument("--luna-root", dest="luna_root", default=None, metavar="PATH",
                   help="set luna_root (the LUNA16 root: subset0..9/, annotations.csv, ...)")
    p.add_argument("--params", default="params.yaml", help="params file changed in place (default: params.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="also set one key (value parsed as YAML: 8, null, [9], {test: 9, val: 8}); repeatable")
    p.set_defaults(func=_run)
