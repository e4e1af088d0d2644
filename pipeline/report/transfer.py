"""The transfer report: one figure and one Markdown table from the DVC experiments of a repo.

Reads ``dvc exp show --json`` (params and ``eval/metrics.json`` of the baseline commit and each of
its experiments) and, per experiment, its DVCLive files from git (``git show <rev>:<path>``: the
classifier's ``val_auc.tsv`` / ``seconds.tsv`` curves and ``params.yaml`` with the resolved
strategy; DVCLive plots are ``cache: false``, so every experiment commit holds them). Writes
``transfer_val_auc.png`` (validation AUC per epoch, one line per experiment), ``transfer.md`` (the
strategies / encoders table) and ``transfer.csv`` (the same numbers).
Feature-extraction seconds per patch (linear probe) come from the feature cache's meta files
(:mod:`pipeline.train.features`) when present, matched by encoder, weights and the repo's
``data/patches`` store.
"""
from __future__ import annotations

import io
import json
import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import DataError

log = logging.getLogger(__name__)
LIVE = "dvclive/classifier"
PATCHES = "data/patches"  # the store the experiments share (feature timings must be of this store)
COLUMNS = [  # (column, source key in the flattened record, format)
    ("test AUC", "m:classifier.auc", "{:.3f}"), ("balanced acc.", "m:classifier.balanced_accuracy", "{:.3f}"),
    ("FPR CPM", "m:fpr.cpm", "{:.3f}"), ("CV AUC", "m:cv.classifier.auc", "{:.3f}"), ("CV CPM", "m:cv.cpm", "{:.3f}"),
    ("detection CPM", "m:detection.cpm", "{:.3f}"), ("s/epoch", "seconds_per_epoch", "{:.1f}"),
    ("feature s/patch", "feature_s_per_patch", "{:.3f}"),
]


def _run(cmd: list[str], repo: Path) -> str:
    try:
        res = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, encoding="utf-8", errors="replace", check=False)
    except FileNotFoundError:
        raise DataError(repo, f"'{cmd[0]}' not found on PATH (needed for the transfer report)") from None
    if res.returncode != 0:
        err = " ".join((res.stderr or res.stdout).split())[:300]
        raise DataError(repo, f"'{' '.join(cmd[:3])}' failed: {err}")
    return res.stdout


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif not isinstance(v, list):
            out[f"{prefix}{k}"] = v
    return out


def _records(node, baseline: str | None = None):
    """Yield (entry, baseline name) for every commit / experiment entry of ``dvc exp show --json``."""
    if isinstance(node, list):
        for n in node:
            yield from _records(n, baseline)
    elif isinstance(node, dict):
        if "rev" in node and "data" in node:
            yield node, baseline
            baseline = node.get("name") or baseline
        for exp in node.get("experiments") or []:
            for r in exp.get("revs") or []:
                yield from _records(r, node.get("name") or node.get("rev", "")[:7])


def list_experiments(repo: str | os.PathLike, include_workspace: bool = False,
                     all_commits: bool = False) -> list[dict]:
    """One record per baseline commit / experiment: ``name``, ``rev``, ``baseline``,
    ``params`` (``train`` section of params.yaml), ``metrics`` (flattened ``eval/metrics.json``).
    ``all_commits``: experiments of every commit (``dvc exp show -A``), not only HEAD's."""
    repo = Path(repo)
    data = json.loads(_run(["dvc", "exp", "show", "--json", *(["-A"] if all_commits else [])], repo) or "[]")
    out = []
    for entry, base in _records(data):
        rev = entry["rev"]
        if rev == "workspace" and not include_workspace:
            continue
        d = entry.get("data") or {}
        params = ((d.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        metrics = ((d.get("metrics") or {}).get("eval/metrics.json") or {}).get("data") or {}
        out.append({"name": entry.get("name") or (d.get("rev") or rev)[:7], "rev": d.get("rev") or rev,
                    "baseline": base, "params": params.get("train", {}), "metrics": _flat(metrics)})
    return out


def git_file(repo: Path, rev: str, path: str) -> str | None:
    """Text of ``path`` at ``rev`` (``workspace``: the file on disk); None when absent."""
    if rev == "workspace":
        p = repo / path
        return p.read_text(encoding="utf-8") if p.is_file() else None
    res = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True, text=True, encoding="utf-8", errors="replace", check=False)
    return res.stdout if res.returncode == 0 else None


def curve(repo: Path, rev: str, metric: str = "val/val_auc") -> pd.DataFrame:
    """DVCLive curve ``metric`` of the classifier at ``rev``: columns ``step``, value (empty if absent)."""
    text = git_file(repo, rev, f"{LIVE}/plots/metrics/{metric}.tsv")
    return pd.read_csv(io.StringIO(text), sep="\t") if text else pd.DataFrame(columns=["step"])


def seconds_per_epoch(repo: Path, rev: str) -> float:
    """Mean training seconds per epoch at ``rev``: DVCLive's ``timings.json`` (older commits: the
    ``perf/seconds`` curve, when timings were still logged as metrics); NaN when neither exists."""
    text = git_file(repo, rev, f"{LIVE}/timings.json")
    if text:
        secs = json.loads(text).get("seconds_per_epoch") or []
        return float(np.mean(secs)) if secs else np.nan
    sec = curve(repo, rev, "perf/seconds")
    return float(sec.iloc[:, -1].mean()) if len(sec) else np.nan


def feature_timings(cache: Path | None = None) -> list[dict]:
    """Meta records of the linear-probe feature cache (encoder, weights id, seconds per patch)."""
    from pipeline.train.features import cache_dir

    d = cache or cache_dir()
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(d).glob("*.json"))] if Path(d).is_dir() else []


def collect(repo: str | os.PathLike, *, include_workspace: bool = False, all_commits: bool = False,
            feature_cache=None, names: list[str] | None = None) -> list[dict]:
    """Experiments (only ``names``, in that order, when given) with their curves and the table's
    derived columns."""
    import yaml

    repo = Path(repo)
    feats = feature_timings(Path(feature_cache) if feature_cache else None)
    from pipeline.train.features import store_identity

    store = store_identity(repo / PATCHES) if (repo / PATCHES / "index.csv").is_file() else None
    recs = list_experiments(repo, include_workspace, all_commits)
    if names:
        by = {}
        for r in recs:  # by name; a baseline commit also by its 7-character rev (names repeat with -A)
            by.setdefault(r["name"], r)
            by.setdefault(str(r["rev"])[:7], r)
        if missing := [n for n in names if n not in by]:
            raise DataError(repo, f"no DVC experiment named {missing}; have {sorted(by)[:20]}")
        recs = [by[n] for n in names]
    for r in recs:
        p = r["params"]
        live_params = yaml.safe_load(git_file(repo, r["rev"], f"{LIVE}/params.yaml") or "{}") or {}
        # an explicit params strategy is what ran; `auto` resolves to what DVCLive logged
        r["strategy"] = (p.get("strategy") if p.get("strategy") not in (None, "auto")
                         else live_params.get("strategy_resolved") or p.get("strategy"))
        r["encoder"], r["weights"] = p.get("encoder"), p.get("weights", "pretrained")
        r["kind"] = "3D" if str(r["encoder"]).startswith(("ct_", "medicalnet")) else "2D"
        r["val_auc"] = curve(repo, r["rev"], "val/val_auc")
        r["seconds_per_epoch"] = seconds_per_epoch(repo, r["rev"])
        match = [f for f in feats if f.get("encoder") == r["encoder"] and f.get("kind") == r["kind"].lower()
                 and str(f.get("weights", "")).startswith("tensors:") == (r["weights"] == "none")
                 and (store is None or f.get("store") == store)]
        r["feature_s_per_patch"] = float(np.median([f["seconds_per_patch"] for f in match])) \
            if match and r["strategy"] == "linear_probe" else np.nan
    return recs


def table(recs: list[dict]) -> pd.DataFrame:
    rows = []
    for r in recs:
        row = {"experiment": r["name"], "encoder": r["encoder"], "weights": r["weights"], "input": r["kind"],
               "strategy": r["strategy"]}
        for col, key, _ in COLUMNS:
            v = r["metrics"].get(key[2:]) if key.startswith("m:") else r.get(key)
            row[col] = np.nan if v is None else float(v)
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    fmt = {c: f for c, _, f in COLUMNS}
    head = list(df.columns)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if c in ("experiment", "encoder", "weights",
             "input", "strategy") else "---:" for c in head) + "|"]
    for _, row in df.iterrows():
        cells = [("-" if pd.isna(row[c]) else fmt[c].format(row[c])) if c in fmt else str(row[c]) for c in head]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(recs: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.utils import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in recs:
        c = r["val_auc"]
        if len(c):
            ax.plot(c["step"] + 1, c.iloc[:, -1], marker="o", ms=3,
                    label=f"{r['name']}: {r['encoder']} ({r['weights']}, {r['strategy']})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation AUC")
    ax.set_title("Transfer: validation AUC per epoch (DVC experiments)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


BEGIN, END = "<!-- transfer-report:begin -->", "<!-- transfer-report:end -->"


def update_readme(readme: str | os.PathLike, md: str) -> Path:
    """Replace the text between ``<!-- transfer-report:begin -->`` and ``<!-- transfer-report:end -->``
    in ``readme`` with ``md`` (atomically); a file without both markers is a one-line DataError."""
    from pipeline.utils import write_text

    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i:
        raise DataError(readme, f"no '{BEGIN}' ... '{END}' block to replace")
    return write_text(readme, text[: i + len(BEGIN)] + "\n" + md.rstrip("\n") + "\n" + text[j:])


def write_report(repo: str | os.PathLike, out: str | os.PathLike, *, include_workspace: bool = False,
                 all_commits: bool = False, feature_cache=None, names: list[str] | None = None,
                 readme: str | os.PathLike | None = None) -> dict:
    """Write ``transfer_val_auc.png``, ``transfer.md`` and ``transfer.csv`` under ``out`` (and the
    table into ``readme`` between its transfer-report markers, when given); ``names`` keeps only
    those experiments (in that order). Returns the paths and the row count."""
    from pipeline.utils import write_csv, write_text

    recs = collect(repo, include_workspace=include_workspace, all_commits=all_commits,
                   feature_cache=feature_cache, names=names)
    if not recs:
        raise DataError(Path(repo), "no DVC experiments found (run `dvc exp run` first)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = table(recs)
    md = ("<!-- generated by `python -m pipeline transfer-report`; do not edit by hand -->\n" + markdown(df))
    paths = {"figure": figure(recs, out / "transfer_val_auc.png"), "table": write_text(out / "transfer.md", md),
             "csv": write_csv(out / "transfer.csv", df, index=False)}
    if readme is not None:
        paths["readme"] = update_readme(readme, md)
    return {**{k: str(v) for k, v in paths.items()}, "rows": len(df)}
