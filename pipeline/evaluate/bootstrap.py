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


def curve_from_cumulative(ctp: np.ndarray, cfp: np.ndarray, n_nodules: np.ndarray | float,
                          n_scans: int) -> tuple[np.ndarray, np.ndarray]:
    """(fps_per_scan, sensitivity), each (..., G+1) with the leading (0, 0) point.

    ``ctp``/``cfp`` (..., G): cumulative TP / FP counts at each level (descending threshold).
    """
    ctp = np.asarray(ctp, dtype=np.float64)
    cfp = np.asarray(cfp, dtype=np.float64)
    shape = ctp.shape[:-1] + (1,)
    if ctp.shape[-1] == 0:
        z = np.zeros(shape)
        nn = np.broadcast_to(np.asarray(n_nodules, dtype=np.float64).reshape(shape[:-1] + (1,)), shape)
        return z, np.where(nn > 0, 0.0, np.nan)
    detected = ctp[..., -1:]
    total_fp = cfp[..., -1:]
    nn = np.asarray(n_nodules, dtype=np.float64).reshape(shape[:-1] + (1,))
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
    lo = srt[int(math.floor(pz * b))]
    hi = srt[min(int(math.floor((1.0 - pz) * b)), b - 1)]
    return lo, hi


def multiplicities(n_scans: int, n_resamples: int, seed: int) -> np.ndarray:
    """(B, S) int32: how often each scan appears in each resample (scans drawn with replacement)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_scans, size=(n_resamples, n_scans))
    flat = (draws + (np.arange(n_resamples) * n_scans)[:, None]).ravel()
    return np.bincount(flat, minlength=n_resamples * n_scans).reshape(n_resamples, n_scans).astype(np.int32)


def bootstrap_sensitivity(entries: Entries, nodules_per_scan: np.ndarray, fps_targets: np.ndarray,
                          n_resamples: int, seed: int) -> np.ndarray:
    """(B, T) sensitivities at ``fps_targets`` (T,) for B scan resamples (np.interp on each curve)."""
    n_scans = len(nodules_per_scan)
    w = multiplicities(n_scans, n_resamples, seed)
    n_nod = w.astype(np.int64) @ nodules_per_scan.astype(np.int64)
    out = np.empty((n_resamples, len(fps_targets)))
    n_e = max(len(entries.prob), 1)
    step = max(1, _ROW_CHUNK_ELEMS // n_e)
    lab = entries.label.astype(bool)
    for a in range(0, n_resamples, step):
        wb = w[a:a + step][:, entries.scan]  # (c, E) weight of each entry in each resample
        ctp = np.cumsum(np.where(lab, wb, 0), axis=1)[:, entries.level_end]
        cfp = np.cumsum(np.where(lab, 0, wb), axis=1)[:, entries.level_end]
        fps, sens = curve_from_cumulative(ctp, cfp, n_nod[a:a + step], n_scans)
        for i in range(fps.shape[0]):
            out[a + i] = np.interp(fps_targets, fps[i], sens[i])
    return out
