"""LUNA16 FROC / CPM, reproducing the official ``noduleCADEvaluationLUNA16.py`` (vectorised).

Matching rules: :mod:`pipeline.evaluate.matching`; curve and bootstrap: :mod:`pipeline.evaluate.bootstrap`.
Sensitivity at each FP rate is ``np.interp(rate, fps_per_scan, sensitivity)`` on the full FROC curve;
CPM is the mean over the seven rates 1/8 ... 8 FPs/scan. (The official script itself plots/saves the
curve interpolated on ``np.linspace(1/8, 8, 10001)``; some later re-implementations, e.g. DIAG's 2025
"LUNA16 CPM calculator", take the sensitivity of the curve point *nearest* each rate instead: values
can then differ in the 3rd decimal.) FPs/scan divide by the number of scans in the
``seriesuids`` list (scans without marks included). Annotations of scans outside the list are ignored (as
the official script, which only collects annotations of listed scans). Predictions for scans outside the
list are not scored: they are listed in ``FrocResult.unknown_seriesuids`` and logged as a warning.
Probabilities may be any finite value >= 0 (the official script takes any real; NaN, inf and negative
values are rejected here as they always indicate a bug upstream).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import DataError
from pipeline.evaluate.bootstrap import (
    bootstrap_sensitivity,
    make_entries,
    order_stat_ci,
    point_curve,
)
from pipeline.evaluate.matching import limit_marks, match

log = logging.getLogger(__name__)

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
COORDS = ["coordX", "coordY", "coordZ"]


def rate_key(rate: float) -> str:
    """``0.125 -> "0.125"``, ``1.0 -> "1"``."""
    return f"{rate:g}"


@dataclass
class FrocResult:
    """FROC analysis of one set of predictions.

    ``fps_per_scan``, ``sensitivity``, ``thresholds`` (N,): the FROC curve (first point (0, 0) at
    threshold inf), FPs per scan ascending. ``band_fps``, ``band_low``, ``band_high`` (K,): bootstrap 95%
    band on a log grid 1/8..8 (empty without bootstrap). ``missed``: the missed nodules (annotation rows).
    """

    cpm: float
    sensitivities: dict[str, float]
    ci_low: dict[str, float]
    ci_high: dict[str, float]
    cpm_ci: tuple[float, float]
    counts: dict[str, int]
    fps_per_scan: np.ndarray
    sensitivity: np.ndarray
    thresholds: np.ndarray
    missed: pd.DataFrame
    unknown_seriesuids: list[str]
    band_fps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    band_low: np.ndarray = field(default_factory=lambda: np.zeros(0))
    band_high: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bootstrap: int = 0
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    def to_metrics(self) -> dict[str, Any]:
        """JSON-able summary (NaN -> None) as written to ``metrics.json``."""
        def num(v: float) -> float | None:
            return None if v is None or not math.isfinite(v) else float(v)

        ci = {k: [num(self.ci_low[k]), num(self.ci_high[k])] for k in self.sensitivities}
        ci["cpm"] = [num(self.cpm_ci[0]), num(self.cpm_ci[1])]
        return {
            "cpm": num(self.cpm),
            "sensitivity": {k: num(v) for k, v in self.sensitivities.items()},
            "ci": ci,
            "counts": dict(self.counts),
            "bootstrap": self.bootstrap,
            "seed": self.seed,
            "unknown_seriesuids": list(self.unknown_seriesuids),
            "notes": list(self.notes),
        }


def _check_table(df: pd.DataFrame, columns: list[str], name: str) -> pd.DataFrame:
    src = df.attrs.get("path", name)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(src, f"missing column(s) {missing}; expected {columns}")
    out = df[columns].reset_index(drop=True)
    for col in columns[1:]:
        vals = pd.to_numeric(out[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(vals)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(src, f"row {i + 2}: column {col} is not a finite number ({df[col].iloc[i]!r})")
    out = out.astype({c: np.float64 for c in columns[1:]})
    out["seriesuid"] = out["seriesuid"].astype(str).str.strip()
    return out


def froc(annotations_df: pd.DataFrame, excluded_df: pd.DataFrame | None, seriesuids: Sequence[str],
         predictions_df: pd.DataFrame, *, max_marks: int = 100, fp_rates: Sequence[float] = FP_RATES,
         bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95) -> FrocResult:
    """LUNA16 FROC analysis (see module docstring for the rules).

    ``annotations_df``/``excluded_df``: seriesuid, coordX, coordY, coordZ (world mm), diameter_mm.
    ``predictions_df``: seriesuid, coordX, coordY, coordZ (world mm), probability. ``bootstrap``: number of
    scan resamples for the CIs (0 = none; CI values are then NaN).
    """
    uids = [str(u).strip() for u in seriesuids]
    if not uids:
        raise DataError("seriesuids", "empty list of scans")
    dup = pd.Index(uids)[pd.Index(uids).duplicated()]
    if len(dup):
        raise DataError("seriesuids", f"{dup[0]} is listed twice (pooled folds must be disjoint)")
    ann = _check_table(annotations_df, ["seriesuid"] + COORDS + ["diameter_mm"], "annotations")
    exc = _check_table(excluded_df if excluded_df is not None else ann.iloc[:0],
                       ["seriesuid"] + COORDS + ["diameter_mm"], "annotations_excluded")
    pred = _check_table(predictions_df, ["seriesuid"] + COORDS + ["probability"], "predictions")
    neg = pred["probability"].to_numpy() < 0
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise DataError(predictions_df.attrs.get("path", "predictions"),
                        f"row {i + 2}: probability must be >= 0, got {pred['probability'][i]}")
    if (pred["probability"] > 1).any():
        log.info("predictions: some probabilities exceed 1 (allowed: only their order matters)")

    index = pd.Index(uids)
    n_scans = len(uids)
    p_scan = index.get_indexer(pred["seriesuid"])
    unknown = sorted(set(pred["seriesuid"][p_scan < 0]))
    if unknown:
        log.warning("predictions: %d mark(s) on %d seriesuid(s) not in the seriesuids list are not scored "
                    "(first: %s)", int((p_scan < 0).sum()), len(unknown), unknown[0])
    pred = pred[p_scan >= 0].reset_index(drop=True)
    p_scan = p_scan[p_scan >= 0]
    p_prob = pred["probability"].to_numpy()
    keep = limit_marks(p_scan, p_prob, max_marks)
    p_scan, p_prob = p_scan[keep], p_prob[keep]
    p_xyz = pred[COORDS].to_numpy()[keep]

    a_scan, e_scan = index.get_indexer(ann["seriesuid"]), index.get_indexer(exc["seriesuid"])
    ann, exc = ann[a_scan >= 0].reset_index(drop=True), exc[e_scan >= 0].reset_index(drop=True)
    a_scan, e_scan = a_scan[a_scan >= 0], e_scan[e_scan >= 0]
    n_nod = len(ann)
    m = match(p_scan, p_xyz, p_prob, np.r_[a_scan, e_scan].astype(np.int64),
              np.r_[ann[COORDS].to_numpy(), exc[COORDS].to_numpy()].reshape(-1, 3),
              np.r_[ann["diameter_mm"].to_numpy(), exc["diameter_mm"].to_numpy()],
              np.r_[np.ones(n_nod, bool), np.zeros(len(exc), bool)], n_scans)

    fp = m.mark_status == 0
    found = m.nodule_found
    entries = make_entries(np.r_[m.nodule_prob[found], p_prob[fp]],
                           np.r_[np.ones(found.sum(), np.int64), np.zeros(fp.sum(), np.int64)],
                           np.r_[a_scan[found], p_scan[fp]].astype(np.int64))
    fps, sens, thr = point_curve(entries, n_nod, n_scans)
    rates = np.asarray(fp_rates, dtype=np.float64)
    keys = [rate_key(r) for r in rates]
    at = np.interp(rates, fps, sens)
    cpm = float(np.mean(at))
    notes: list[str] = []
    if n_nod == 0:
        notes.append("no annotated nodule in the listed scans: sensitivity and CPM are undefined (NaN)")
    elif not found.any():
        notes.append("no nodule detected: sensitivity 0 everywhere (the official script gives NaN here)")
    if fp.sum() == 0 and found.any():
        notes.append("no false positives: FPs/scan is 0 along the whole curve (as the official script)")

    nan = {k: float("nan") for k in keys}
    lo, hi, cpm_ci = dict(nan), dict(nan), (float("nan"), float("nan"))
    band_fps = band_lo = band_hi = np.zeros(0)
    if bootstrap > 0 and n_nod > 0:
        band_fps = np.geomspace(rates.min(), rates.max(), 97)
        targets = np.r_[rates, band_fps]
        per_scan = np.bincount(a_scan, minlength=n_scans)
        bs = bootstrap_sensitivity(entries, per_scan, targets, bootstrap, seed)
        l_r, h_r = order_stat_ci(bs[:, :len(rates)], confidence)
        lo, hi = dict(zip(keys, map(float, l_r))), dict(zip(keys, map(float, h_r)))
        c_lo, c_hi = order_stat_ci(bs[:, :len(rates)].mean(axis=1), confidence)
        cpm_ci = (float(c_lo), float(c_hi))
        band_lo, band_hi = order_stat_ci(bs[:, len(rates):], confidence)

    missed = ann[~found].copy()
    counts = {
        "n_scans": n_scans, "n_nodules": n_nod, "tp": int(found.sum()), "fp": int(fp.sum()),
        "missed": int((~found).sum()), "ignored_excluded": m.ignored_excluded,
        "ignored_duplicates": m.ignored_duplicates, "dropped_over_limit": int((~keep).sum()),
        "marks_scored": int(keep.sum()), "marks_unknown_scan": int(len(predictions_df) - len(pred)),
    }
    return FrocResult(cpm=cpm, sensitivities=dict(zip(keys, map(float, at))), ci_low=lo, ci_high=hi,
                      cpm_ci=cpm_ci, counts=counts, fps_per_scan=fps, sensitivity=sens, thresholds=thr,
                      missed=missed, unknown_seriesuids=unknown, band_fps=band_fps, band_low=band_lo,
                      band_high=band_hi, bootstrap=int(bootstrap), seed=int(seed), notes=notes)
