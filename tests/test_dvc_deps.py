"""dvc.yaml lists what each stage's command really runs, so `dvc repro` reruns a stage whenever code
it executes changes (and `dvc status` shows it).

For each stage (``foreach`` stages expanded), the command ``python -m pipeline <sub> ...`` is parsed
with the real CLI parser; the function it dispatches to names the module that owns ``<sub>``. From
``pipeline/__main__.py``, ``pipeline/cli.py`` and that module, the project-module import closure is
derived statically with ``ast``: every ``import`` / ``from ... import`` anywhere in a module (lazy
imports inside functions included), relative imports resolved, ``from pkg import name`` followed
into ``pkg/name.py`` when that is a submodule, package ``__init__.py`` files included. cli.py's
``importlib`` registration of the *other* subcommand modules is not an import statement and is not
followed (they only add argparse options). Every file of the closure must be covered by a ``deps``
entry (a folder covers the files under it), and every ``params.yaml`` section the subcommand reads
through ``params_section(args, <section>)`` must be in the stage's ``params``.
"""
from __future__ import annotations

import ast
import re
import shlex
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PKG = "pipeline"


# --------------------------------------------------------------------------------------------
# static import closure
# --------------------------------------------------------------------------------------------

def _module_file(name: str) -> Path | None:
    """``pipeline.a.b`` -> ``pipeline/a/b.py`` or ``pipeline/a/b/__init__.py`` (None if neither)."""
    if name != PKG and not name.startswith(PKG + "."):
        return None
    base = ROOT.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _with_parents(name: str) -> set[str]:
    """Importing ``a.b.c`` runs ``a/__init__``, ``a/b/__init__`` and ``a/b/c``."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


@cache
def _imports_of(path: Path) -> frozenset[str]:
    """Project modules imported anywhere in ``path`` (parents included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    this = _module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found |= _with_parents(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found |= _with_parents(mod)
            for alias in node.names:  # ``from pkg import sub`` where sub is a module
                if alias.name != "*" and _module_file(f"{mod}.{alias.name}"):
                    found.add(f"{mod}.{alias.name}")
    return frozenset(m for m in found if _module_file(m))


def import_closure(start: list[str]) -> set[str]:
    """Repo-relative files of the project modules ``start`` runs, directly or transitively."""
    todo = [m for s in start for m in _with_parents(s)]
    seen: set[str] = set()
    while todo:
        mod = todo.pop()
        if mod in seen or not _module_file(mod):
            continue
        seen.add(mod)
        todo.extend(_imports_of(_module_file(mod)))
    return {_module_file(m).relative_to(ROOT).as_posix() for m in seen}


# --------------------------------------------------------------------------------------------
# dvc.yaml stages, their commands parsed by the real CLI
# --------------------------------------------------------------------------------------------

def _lookup(ctx: dict, dotted: str):
    cur = ctx
    for part in dotted.split("."):
        cur = cur[int(part)] if isinstance(cur, list) else cur[part]
    return cur


def _interpolate(value, ctx: dict):
    """Resolve ``${a.b}`` from ctx in strings (lists / dicts recursively); unknown names stay."""
    if isinstance(value, str):
        whole = re.fullmatch(r"\$\{([^}]+)\}", value)
        if whole:  # the whole string is one reference: keep the value's type (foreach lists)
            try:
                return _lookup(ctx, whole.group(1).strip())
            except (KeyError, IndexError, ValueError, TypeError):
                return value

        def sub(m: re.Match) -> str:
            try:
                return str(_lookup(ctx, m.group(1).strip()))
            except (KeyError, IndexError, ValueError, TypeError):
                return m.group(0)

        return re.sub(r"\$\{([^}]+)\}", sub, value)
    if isinstance(value, list):
        return [_interpolate(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, ctx) for k, v in value.items()}
    return value


def _names(entries) -> list[str]:
    """deps / params entries are strings or one-key mappings (``path: {options}``)."""
    out = []
    for e in entries or []:
        if isinstance(e, dict):
            out.extend(str(k) for k in e)
        else:
            out.append(str(e))
    return out


@cache
def dvc_stages() -> dict[str, dict]:
    """{stage name (``cv_train@0`` for foreach items): {"cmd", "deps", "params"}} from dvc.yaml."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    stages = {}
    for name, st in dvc["stages"].items():
        if "foreach" in st:
            items = _interpolate(st["foreach"], params)
            assert not isinstance(items, str), f"{name}: cannot resolve foreach {items}"
            keyed = items.items() if isinstance(items, dict) else enumerate(items)
            for key, item in keyed:
                ctx = {**params, "item": item, "key": key}
                stages[f"{name}@{key}"] = _interpolate(st["do"], ctx)
        else:
            stages[name] = _interpolate(st, params)
    return {n: {"cmd": " ".join(str(s["cmd"]).split()), "deps": _names(s.get("deps")),
                "params": _names(s.get("params"))} for n, s in stages.items()}


@cache
def _parser():
    """The real CLI parser, with path-existence checks off (data folders need not exist here)."""
    from pipeline.cli import build_parser
    from pipeline.cliutil import existing_path

    parser = build_parser()
    for sub in parser._subparsers._group_actions[0].choices.values():
        for action in sub._actions:
            if action.type is existing_path:
                action.type = None
    return parser


def stage_command(name: str):
    """(parsed args, module owning the subcommand, entry function name) of a stage's cmd."""
    words = shlex.split(dvc_stages()[name]["cmd"])
    if words[:2] == ["python", "-m"] and words[2].startswith(f"{PKG}.") and _module_file(words[2]):
        return None, words[2], "main"  # a module with its own small CLI (``python -m pipeline.dvcplots``)
    assert words[:3] == ["python", "-m", PKG], f"{name}: cmd is not `python -m {PKG} ...`"
    args = _parser().parse_args(words[3:])
    return args, args.func.__module__, args.func.__name__


def stage_closure(name: str) -> set[str]:
    args, module, _ = stage_command(name)
    if args is None:
        return import_closure([module])
    return import_closure([f"{PKG}.__main__", f"{PKG}.cli", module])


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d.rstrip("/") or path.startswith(d.rstrip("/") + "/") for d in deps)


# --------------------------------------------------------------------------------------------
# params sections a subcommand reads: params_section(args, <section>) reachable from its function
# --------------------------------------------------------------------------------------------

class Unresolved(Exception):
    pass


def _possible(expr: ast.expr, env: dict[str, list[ast.expr]], args, depth: int = 0) -> list:
    """Values ``expr`` may take, given the parsed ``args`` and the function's local assignments."""
    if depth > 20:
        raise Unresolved(ast.unparse(expr))
    rec = lambda e: _possible(e, env, args, depth + 1)
    if isinstance(expr, ast.Constant):
        return [expr.value]
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id == "args":
        return [getattr(args, expr.attr, None)]
    if isinstance(expr, ast.Name) and expr.id in env:
        return [v for e in env[expr.id] for v in rec(e)]
    if isinstance(expr, ast.IfExp):
        tests = {bool(t) for t in rec(expr.test)}
        return (rec(expr.body) if True in tests else []) + (rec(expr.orelse) if False in tests else [])
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.Not):
        return [not v for v in rec(expr.operand)]
    if isinstance(expr, ast.Compare) and len(expr.ops) == 1:
        ops = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b,
               ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
        op = ops.get(type(expr.ops[0]))
        if op:
            return [op(a, b) for a in rec(expr.left) for b in rec(expr.comparators[0])]
    if isinstance(expr, (ast.Tuple, ast.List)):
        vals = [rec(e) for e in expr.elts]
        if all(len(v) == 1 for v in vals):
            return [tuple(v[0] for v in vals)]
    raise Unresolved(ast.unparse(expr))


def sections_read(module: str, func: str, args) -> set[str]:
    """params.yaml sections ``module.func`` reads via ``params_section`` (same-module calls followed)."""
    tree = ast.parse(_module_file(module).read_text(encoding="utf-8"))
    funcs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    sections: set[str] = set()
    todo, seen = [func], set()
    while todo:
        fname = todo.pop()
        if fname in seen or fname not in funcs:
            continue
        seen.add(fname)
        fn = funcs[fname]
        env: dict[str, list[ast.expr]] = {}
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                env.setdefault(node.targets[0].id, []).append(node.value)
        for node in ast.walk(fn):
            if not isinstance(node, ast.Call):
                continue
            callee = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if callee == "params_section":
                arg = node.args[1] if len(node.args) > 1 else next(
                    (k.value for k in node.keywords if k.arg == "section"), None)
                assert arg is not None, f"{module}.{fname}: params_section without a section"
                try:
                    values = _possible(arg, env, args)
                except Unresolved as exc:
                    pytest.fail(f"{module}.{fname}: cannot tell statically which params section "
                                f"`{exc}` names; pass a string literal (or a simple if/else of literals)")
                sections |= {str(v) for v in values}
            elif isinstance(node.func, ast.Name) and callee in funcs:
                todo.append(callee)
    return sections


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------

STAGES = sorted(dvc_stages())


def test_closure_follows_lazy_and_relative_imports():
    closure = stage_closure("train")
    # cli layer and shared top-level modules
    for f in ("pipeline/__init__.py", "pipeline/__main__.py", "pipeline/cli.py", "pipeline/cliutil.py",
              "pipeline/config.py", "pipeline/errors.py", "pipeline/train/__init__.py",
              "pipeline/train/cli.py"):
        assert f in closure, f
    # lazy imports inside _train: pipeline.train.stage / segment, and what they import
    assert "pipeline/train/stage.py" in closure and "pipeline/train/segment.py" in closure
    assert any(f.startswith("pipeline/models/") for f in closure)
    # the other subcommand modules that cli.py registers through importlib are not followed
    assert "pipeline/synth/cli.py" not in closure and "pipeline/figures.py" not in closure
    assert stage_command("cv_predict@0")[1:] == ("pipeline.train.cli", "_predict")
    assert stage_command("train_seg")[1:] == ("pipeline.train.cli", "_train")


@pytest.mark.parametrize("stage", STAGES)
def test_stage_deps_cover_its_import_closure(stage):
    deps = dvc_stages()[stage]["deps"]
    closure = stage_closure(stage)
    missing = sorted(f for f in closure if not _covered(f, deps))
    assert not missing, f"dvc.yaml stage {stage}: deps miss module(s) its command imports: {missing}"
    # and no code dep that the command never runs (it would only cause spurious reruns)
    stale = [d for d in deps if d.startswith(PKG + "/") and not any(_covered(f, [d]) for f in closure)]
    assert not stale, f"dvc.yaml stage {stage}: deps {stale} hold no module its command imports"


@pytest.mark.parametrize("stage", STAGES)
def test_stage_params_list_the_sections_its_cli_reads(stage):
    args, module, func = stage_command(stage)
    read = sections_read(module, func, args)
    listed = set(dvc_stages()[stage]["params"])
    missing = sorted(read - listed)
    assert not missing, f"dvc.yaml stage {stage}: params miss section(s) {missing} that {module} reads"


def test_params_sections_are_resolved_per_task():
    args, module, func = stage_command("train")
    assert sections_read(module, func, args) == {"train"}
    args, module, func = stage_command("train_seg")
    assert sections_read(module, func, args) == {"train_seg"}
    args, module, func = stage_command("infer")
    assert sections_read(module, func, args) == {"infer"}  # through the helper _config
    args, module, func = stage_command("predict")
    assert sections_read(module, func, args) == set()


def test_touching_a_models_file_invalidates_every_stage_that_runs_models():
    """What `dvc status` checks: a changed file under a stage's deps makes the stage changed. So
    editing any pipeline/models file must reach, through deps, every stage whose code imports it."""
    from dvc.repo import Repo

    models = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "pipeline/models").glob("*.py"))
    users = {s for s in STAGES if any(f.startswith("pipeline/models/") for f in stage_closure(s))}
    assert {"train", "train_seg", "predict", "infer"} <= users
    assert {s for s in STAGES if s.startswith(("cv_train@", "cv_predict@"))} <= users
    repo = Repo(str(ROOT))  # DVC's own reading of dvc.yaml (interpolation, foreach) as status uses it
    try:
        dvc_deps = {s.addressing: [d.def_path for d in s.deps] for s in repo.index.stages}
    finally:
        repo.close()
    for stage in sorted(users):
        closure_models = [f for f in models if f in stage_closure(stage)]
        uncovered = [f for f in closure_models if not _covered(f, dvc_deps[stage])]
        assert not uncovered, f"{stage}: editing {uncovered} would not show in `dvc status`"
