"""The ``evaluate`` stage: FROC/CPM per track, classifier metrics, outputs for ``dvc metrics``/``dvc plots``.

A *track* directory holds ``predictions.csv`` (LUNA16 submission: seriesuid, coordX, coordY, coordZ,
probability), ``seriesuids.csv`` (scored scans, no header), optionally ``scored.csv`` (seriesuid,
candidate, label, probability: per-candidate classifier scores) and ``seg_metrics.json``. Several folders
for one track (cross-validation folds) are pooled: predictions, seriesuids and scores are concatenated.

Outputs: ``out/<track>/{metrics.json, froc.csv, froc.png, missed.csv}`` and a flat ``out/metrics.json``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import ConfigError, DataError
from pipeline.utils import read_json, write_csv, write_json

log = logging.getLogger(__name__)
MAX_CSV_ROWS = 1000


@dataclass(frozen=True)
class EvaluateConfig:
    """``evaluate:`` params. bootstrap: scan resamples for the CIs (0 = off); max_marks: official
    per-scan mark limit; threshold: classifier decision threshold on the probability."""

    bootstrap: int = 1000
    seed: int = 0
    max_marks: int = 100
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if int(self.bootstrap) < 0:
            raise ValueError(f"bootstrap must be >= 0, got {self.bootstrap}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")


@dataclass
class EvaluateResult:
    out_dir: Path
    metrics: dict[str, Any]
    tracks: dict[str, Any] = field(default_factory=dict)  # track -> FrocResult


def write_froc_outputs(result, out_dir: str | os.PathLike, title: str = "FROC",
                       extra: dict[str, Any] | None = None, track: str | None = None) -> dict[str, Path]:
    """Write ``metrics.json``, ``froc.csv`` (<= 1000 rows), ``froc_luna16.csv`` (the plot table of
    :func:`luna16_plot_table`, labelled ``track``), ``froc.png`` and ``missed.csv`` to ``out_dir``."""
    from pipeline.evaluate.plots import plot_froc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = result.to_metrics()
    metrics.update(extra or {})
    idx = curve_rows(result.fps_per_scan, MAX_CSV_ROWS)
    curve = pd.DataFrame({"fps_per_scan": result.fps_per_scan[idx], "sensitivity": result.sensitivity[idx],
                          "threshold": result.thresholds[idx]})
    paths = {
        "metrics": write_json(out / "metrics.json", metrics),
        "froc_csv": write_csv(out / "froc.csv", curve),
        "froc_luna16_csv": write_csv(out / "froc_luna16.csv", luna16_plot_table(result, track or out.name)),
        "missed": write_csv(out / "missed.csv", result.missed),
        "froc_png": plot_froc(result, out / "froc.png", title=title),
    }
    return paths


LUNA16_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def luna16_plot_table(result, track: str, max_rows: int = MAX_CSV_ROWS) -> pd.DataFrame:
    """``froc_luna16.csv``: the FROC curve between 1/8 and 8 FPs per scan (the range the CPM averages
    over; its ends interpolated as the CPM does) and the seven LUNA16 operating points
    (``operating_point`` = 1), each row labelled ``curve`` = "<track>: CPM <cpm>" (the legend of the
    LUNA16 FROC plot template, ``.dvc/plots/froc_luna16.json``)."""
    fps, sens = np.asarray(result.fps_per_scan, float), np.asarray(result.sensitivity, float)
    idx = curve_rows(fps, max_rows)
    fps_k, sens_k = fps[idx], sens[idx]
    lo, hi = LUNA16_RATES[0], LUNA16_RATES[-1]
    inside = (fps_k > lo) & (fps_k < hi)
    ends = np.array([lo, hi])
    ops = np.asarray(LUNA16_RATES)
    at = lambda x: np.interp(x, fps, sens) if len(fps) else np.full(len(x), np.nan)
    table = pd.DataFrame({
        "fps_per_scan": np.r_[ends, fps_k[inside], ops],
        "sensitivity": np.r_[at(ends), sens_k[inside], at(ops)],
        "operating_point": np.r_[np.zeros(2 + int(inside.sum()), int), np.ones(len(ops), int)],
    })
    table["curve"] = f"{track}: CPM {result.cpm:.3f}"
    return table.sort_values(["fps_per_scan", "operating_point"], kind="stable").reset_index(drop=True)


def curve_rows(fps_per_scan: np.ndarray, max_rows: int = MAX_CSV_ROWS) -> np.ndarray:
    """Row indices (<= ``max_rows``, ascending, first and last included) of a FROC curve to keep: 70% spaced
    evenly in log2(FPs/scan) (so the 1/8..8 range keeps its detail however many FPs follow), 30% evenly
    in row order."""
    n = len(fps_per_scan)
    if n <= max_rows:
        return np.arange(n)
    fps = np.asarray(fps_per_scan)
    pos = fps[fps > 0]
    n_log = int(0.7 * max_rows) - 2
    idx = [np.array([0, n - 1])]
    if len(pos):
        grid = np.geomspace(max(pos.min(), 2.0 ** -6), max(fps[-1], 2.0 ** -6), n_log)
        idx.append(np.minimum(np.searchsorted(fps, grid, side="left"), n - 1))
    idx.append(np.linspace(0, n - 1, max_rows - 2 - n_log).round().astype(int))
    out = np.unique(np.concatenate(idx))
    return out


def expand_track_dirs(dirs: list[Path]) -> list[Path]:
    """Each folder as is when it holds ``predictions.csv``; otherwise its sub-folders that do
    (sorted), so ``--track cv=data/predict/cv`` pools ``cv/fold_0``, ``cv/fold_1``, ... ."""
    out: list[Path] = []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise DataError(d, "track folder does not exist")
        if (d / "predictions.csv").is_file():
            out.append(d)
            continue
        subs = sorted(s for s in d.iterdir() if s.is_dir() and (s / "predictions.csv").is_file())
        if not subs:
            raise DataError(d / "predictions.csv", "no such file (a track folder needs predictions.csv and "
                            "seriesuids.csv, or sub-folders that hold them)")
        out += subs
    return out


def read_scored_uids(paths: list[Path]) -> list[str]:
    """The scored scans of one or more ``seriesuids.csv`` files (pooled folds, in order).

    A scan listed twice, in one file or in two pooled folds, is an error naming the file(s): the
    official LUNA16 script would count that scan's nodules and false positives twice (and the scan
    twice in the FPs/scan divisor), and in pooled cross-validation folds it means the folds overlap
    (a leak), so neither the official number nor a silently de-duplicated one is what was meant.
    """
    from pipeline.io.luna16 import read_seriesuids

    seen: dict[str, Path] = {}
    uids: list[str] = []
    for path in paths:
        try:
            listed = read_seriesuids(path)
        except UnicodeDecodeError:
            raise DataError(path, "not a text file (expected one series UID per line)") from None
        for u in listed:
            if u in seen:
                where = "twice in this file" if seen[u] == path else f"also in {seen[u]} (pooled folds must be disjoint)"
                raise DataError(path, f"seriesuid {u} is listed {where}; each scan may be scored only once")
            seen[u] = path
        uids += listed
    return uids


def _read_seg(path: Path) -> dict[str, Any]:
    try:
        seg = read_json(path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(path, f"not valid JSON ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(seg, dict):
        raise DataError(path, "expected a JSON object of segmentation metrics")
    return seg


def load_track(dirs: list[Path]) -> dict[str, Any]:
    """Pool one track's folders (see :func:`expand_track_dirs`): dirs (the folders pooled), predictions
    (DataFrame), seriesuids (list), scored (DataFrame|None), seg (dict|None)."""
    from pipeline.io.luna16 import read_predictions, read_table

    preds, scored, segs = [], [], []
    dirs = expand_track_dirs(dirs)
    for d in dirs:
        for name in ("predictions.csv", "seriesuids.csv"):
            if not (d / name).is_file():
                raise DataError(d / name, "no such file (a track folder needs predictions.csv and seriesuids.csv)")
        preds.append(read_predictions(d / "predictions.csv"))
        if (d / "scored.csv").is_file():
            scored.append(read_table(d / "scored.csv", ["seriesuid", "candidate", "label", "probability"],
                                     ["label", "probability"]))
        if (d / "seg_metrics.json").is_file():
            segs.append(_read_seg(d / "seg_metrics.json"))
    uids = read_scored_uids([d / "seriesuids.csv" for d in dirs])
    pred = pd.concat(preds, ignore_index=True)
    pred.attrs["path"] = str(dirs[0] / "predictions.csv") if len(dirs) == 1 else \
        "+".join(str(Path(d) / "predictions.csv") for d in dirs)
    seg = None
    if segs:
        keys = [k for k, v in segs[0].items() if isinstance(v, (int, float)) and all(k in s for s in segs)]
        seg = segs[0] if len(segs) == 1 else {k: float(np.mean([s[k] for s in segs])) for k in keys}
    return {"dirs": dirs, "predictions": pred, "seriesuids": uids,
            "scored": pd.concat(scored, ignore_index=True) if scored else None, "seg": seg}


def _classifier(scored: pd.DataFrame, cfg: EvaluateConfig) -> dict[str, Any]:
    from pipeline.evaluate.classify import classifier_metrics

    src = scored.attrs.get("path", "scored.csv")
    y = pd.to_numeric(scored["label"], errors="coerce")
    p = pd.to_numeric(scored["probability"], errors="coerce")
    bad = ~y.isin([0, 1]) | ~np.isfinite(p.to_numpy(dtype=float))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(src, f"row {i + 2}: label must be 0/1 and probability finite")
    m = classifier_metrics(y.to_numpy().astype(int), p.to_numpy(dtype=float), threshold=cfg.threshold)
    m["youden_threshold"] = classifier_metrics(y.to_numpy().astype(int), p.to_numpy(dtype=float),
                                               youden=True)["threshold"]
    return m


def run(luna_dir: str | os.PathLike, tracks: dict[str, list[Path]], out_dir: str | os.PathLike,
        cfg: EvaluateConfig = EvaluateConfig(), *, progress: bool = True) -> EvaluateResult:
    """Evaluate every track against ``luna_dir/annotations.csv`` (+ ``annotations_excluded.csv``)."""
    from pipeline.evaluate.froc import froc
    from pipeline.evaluate.masses import mass_recall, read_findings
    from pipeline.io.luna16 import read_annotations

    if not tracks:
        raise ConfigError("no track given; use --track fpr=DIR[,DIR2] and/or --track detection=DIR")
    # every input is read and checked before anything is computed or written
    loaded = {name: load_track([Path(d) for d in dirs]) for name, dirs in tracks.items()}
    luna = Path(luna_dir)
    ann = read_annotations(luna / "annotations.csv")
    exc_path = luna / "annotations_excluded.csv"
    if exc_path.is_file():
        exc = read_annotations(exc_path)
    else:
        log.warning("%s: not found, no excluded findings (every non-nodule mark is an FP)", exc_path)
        exc = ann.iloc[:0]
    out = Path(out_dir)
    flat: dict[str, Any] = {}
    results: dict[str, Any] = {}
    for name, data in loaded.items():
        res = froc(ann, exc, data["seriesuids"], data["predictions"], max_marks=cfg.max_marks,
                   bootstrap=cfg.bootstrap, seed=cfg.seed)
        extra: dict[str, Any] = {"folds": [str(d) for d in data["dirs"]]}
        # headline only (the sensitivity at each rate is in <track>/metrics.json)
        entry: dict[str, Any] = {"cpm": res.to_metrics()["cpm"], "cpm_ci": res.to_metrics()["ci"]["cpm"]}
        if data["scored"] is not None:
            extra["classifier"] = _classifier(data["scored"], cfg)
            keys = ("auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity")
            summary = {k: extra["classifier"][k] for k in keys}
            if name == "fpr":
                flat["classifier"] = summary
            else:
                entry["classifier"] = summary
        if data["seg"] is not None:
            extra["segmentation"] = data["seg"]
            entry["segmentation"] = data["seg"]
        found = read_findings(data["dirs"])
        masses = mass_recall(exc, found, data["seriesuids"]) if found is not None else None
        if masses is not None:  # lesions over 30 mm: not scored by the FROC, reported as masses?
            extra["masses"] = masses
            entry["masses_found"] = masses["fraction_found"]
        write_froc_outputs(res, out / name, title=f"{name} FROC", extra=extra, track=name)
        flat[name] = entry
        results[name] = res
        if progress:
            log.info("%s: CPM %.4f (95%% CI %s), %s", name, res.cpm, entry["cpm_ci"], res.counts)
    # CPMs first (fpr, detection, cv), then the classifier: `dvc exp show` keeps this order
    order = [t for t in ("fpr", "detection", "cv") if t in flat] + sorted(set(flat) - {"fpr", "detection", "cv"})
    flat = _nan_to_none({k: flat[k] for k in order})
    write_json(out / "metrics.json", flat, sort_keys=False)
    return EvaluateResult(out_dir=out, metrics=flat, tracks=results)


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
