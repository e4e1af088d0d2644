"""FROC curve from scored entries, and its scan-level bootstrap, vectorised.

An *entry* is what the official script appends to ``FROCGTList``/``FROCProbList``: one per detected
nodule (label 1, probability = max of its hitting marks) and one per false-positive mark (label 0).
Missed nodules only enter the denominator. The curve is sklearn's ``roc_curve`` (one point per distinct
probability, plus ``(0, 0)`` at threshold ``inf``) rescaled exactly like ``computeFROC``::

    fps  = (fpr * n_fp) / n_scans        sens = (tpr * n_detected) / n_nodules

(the same arithmetic order, so values agree bit for bit). Where the official script would produce NaN
(no detected nodule: sklearn's tpr is 0/0) we return sensitivity 0; with no FP at all ``fps`` is all 0
as in the official script. ``sens`` is NaN only when there are no nodules at all.

Bootstrap (``computeFROC_bootstrap``): resample the scans of the list with replacement; a resample is
represented by per-scan multiplicities ``w`` (B, S), so every entry is weighted by the multiplicity of
its scan and one global sort by probability serves all resamples (cumulative sums of weights).
Confidence bounds are the official order statistics ``sorted[floor(0.025 B)]`` and
``sorted[floor(0.975 B)]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_ROW_CHUNK_ELEMS = 4_000_000  # resamples x entries processed at once


@dataclass(frozen=True)
class Entries:
    """Entries sorted by probability descending (stable). ``level_end`` (G,): index of the last entry of
    each distinct-probability level; ``thresholds`` (G,) the level probabilities."""

    prob: np.ndarray
    label: np.ndarray
    scan: np.ndarray
    level_end: np.ndarray
    thresholds: np.ndarray


def make_entries(prob: np.ndarray, label: np.ndarray, scan: np.ndarray) -> Entries:
    order = np.argsort(-prob, kind="stable")
    p = prob[order]
    if len(p):
        level_end = np.flatnonzero(np.r_[p[1:] != p[:-1], True])
    else:
        level_end = np.zeros(0, dtype=np.int64)
    return Entries(p, label[order].astype(np.int64), scan[order], level_end, p[level_end])


def curve_from_cumulative(ctp: np.ndarray, cfp: np.ndarray, n_nodules: np.ndarray | float, n_scans: int,
                          detected: np.ndarray | None = None,
                          total_fp: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(fps_per_scan, sensitivity), each (..., G+1) with the leading (0, 0) point.

    ``ctp``/``cfp`` (..., G): cumulative TP / FP counts at each level (descending threshold).
    ``detected``/``total_fp`` (...,): totals over all levels, when ``ctp``/``cfp`` cover only the first
    levels (default: their last column).
    """
    ctp = np.asarray(ctp, dtype=np.float64)
    cfp = np.asarray(cfp, dtype=np.float64)
    shape = ctp.shape[:-1] + (1,)
    nn = np.asarray(n_nodules, dtype=np.float64).reshape(shape[:-1] + (1,))
    if ctp.shape[-1] == 0:
        return np.zeros(shape), np.broadcast_to(np.where(nn > 0, 0.0, np.nan), shape).copy()
    detected = ctp[..., -1:] if detected is None else np.asarray(detected, np.float64).reshape(shape)
    total_fp = cfp[..., -1:] if total_fp is None else np.asarray(total_fp, np.float64).reshape(shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = cfp / total_fp
        fps = np.where(total_fp > 0, fpr * total_fp / n_scans, 0.0)
        tpr = ctp / detected
        sens = np.where(detected > 0, tpr * detected / nn, 0.0)
        sens = np.where(nn > 0, sens, np.nan)
    zero = np.zeros(shape)
    return np.concatenate([zero, fps], axis=-1), np.concatenate([np.where(nn > 0, zero, np.nan), sens], axis=-1)


def point_curve(entries: Entries, n_nodules: int, n_scans: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fps_per_scan, sensitivity, thresholds) of the un-resampled data; thresholds[0] = inf."""
    ctp = np.cumsum(entries.label)[entries.level_end]
    cfp = np.cumsum(1 - entries.label)[entries.level_end]
    fps, sens = curve_from_cumulative(ctp, cfp, n_nodules, n_scans)
    return fps, sens, np.r_[np.inf, entries.thresholds]


def order_stat_ci(samples: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Official ``computeMeanCI`` bounds along axis 0 of ``samples`` (B, ...)."""
    b = samples.shape[0]
    pz = (1.0 - confidence) / 2.0
    srt = np.sort(samples, axis=0)
    lo = srt[math.floor(pz * b)]
    hi = srt[min(math.floor((1.0 - pz) * b), b - 1)]
    return lo, hi


def multiplicities(n_scans: int, n_resamples: int, seed: int) -> np.ndarray:
    """(B, S) int32: how often each scan appears in each resample (scans drawn with replacement)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_scans, size=(n_resamples, n_scans))
    flat = (draws + (np.arange(n_resamples) * n_scans)[:, None]).ravel()
    return np.bincount(flat, minlength=n_resamples * n_scans).reshape(n_resamples, n_scans).astype(np.int32)


def _rows_sensitivity(entries: Entries, w: np.ndarray, n_levels: int, n_nod: np.ndarray, det: np.ndarray,
                      tfp: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated sensitivities (c, T) of resamples ``w`` (c, S) using only the first ``n_levels`` levels,
    and whether that prefix reaches beyond the largest target (then the values are exact)."""
    n_scans = w.shape[1]
    n_e = int(entries.level_end[n_levels - 1]) + 1 if n_levels else 0
    lab = entries.label[:n_e].astype(bool)
    out = np.empty((w.shape[0], len(targets)))
    ok = np.zeros(w.shape[0], dtype=bool)
    step = max(1, _ROW_CHUNK_ELEMS // max(n_e, 1))
    ends = entries.level_end[:n_levels]
    for a in range(0, w.shape[0], step):
        wb = w[a:a + step][:, entries.scan[:n_e]]  # (c, E) weight of each entry in each resample
        ctp = np.cumsum(np.where(lab, wb, 0), axis=1, dtype=np.int32)[:, ends]
        cfp = np.cumsum(np.where(lab, 0, wb), axis=1, dtype=np.int32)[:, ends]
        fps, sens = curve_from_cumulative(ctp, cfp, n_nod[a:a + step], n_scans, det[a:a + step], tfp[a:a + step])
        ok[a:a + step] = fps[:, -1] > targets.max()
        for i in range(fps.shape[0]):
            out[a + i] = np.interp(targets, fps[i], sens[i])
    return out, ok


def bootstrap_sensitivity(entries: Entries, nodules_per_scan: np.ndarray, fps_targets: np.ndarray,
                          n_resamples: int, seed: int) -> np.ndarray:
    """(B, T) sensitivities at ``fps_targets`` (T,) for B scan resamples (np.interp on each curve).

    Speed-up: curves are first built only up to the level where the full data reach twice the largest
    target FPs/scan; ``np.interp`` never looks past the first point beyond its argument, so a resample
    whose truncated curve already passes the largest target is exact; the others are recomputed in full.
    """
    n_scans = len(nodules_per_scan)
    w = multiplicities(n_scans, n_resamples, seed)
    targets = np.asarray(fps_targets, dtype=np.float64)
    lab = entries.label.astype(bool)
    n_nod = w.astype(np.int64) @ nodules_per_scan.astype(np.int64)
    det = w.astype(np.int64) @ np.bincount(entries.scan[lab], minlength=n_scans)
    tfp = w.astype(np.int64) @ np.bincount(entries.scan[~lab], minlength=n_scans)
    n_levels = len(entries.level_end)
    cfp_full = np.cumsum(~lab)[entries.level_end] if n_levels else np.zeros(0)
    cut = int(np.searchsorted(cfp_full, 2.0 * targets.max() * n_scans, side="right")) + 1
    if cut >= n_levels:
        return _rows_sensitivity(entries, w, n_levels, n_nod, det, tfp, targets)[0]
    out, ok = _rows_sensitivity(entries, w, cut, n_nod, det, tfp, targets)
    if not ok.all():
        redo = np.flatnonzero(~ok)
        out[redo] = _rows_sensitivity(entries, w[redo], n_levels, n_nod[redo], det[redo], tfp[redo], targets)[0]
    return out
