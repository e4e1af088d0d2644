"""Classifier and segmentation metrics (numpy only).

``labels`` are 0/1 arrays (N,), ``scores`` real arrays (N,); a sample is predicted positive when
``score >= threshold``. Undefined ratios (e.g. specificity without negatives) are NaN.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def _check(labels: np.ndarray, scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    s = None
    if scores is not None:
        s = np.asarray(scores, dtype=np.float64)
        if s.shape != y.shape:
            raise ValueError(f"scores shape {s.shape} differs from labels shape {y.shape}")
        if not np.isfinite(s).all():
            raise ValueError("scores contain NaN or inf")
    return y.astype(bool), s


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """2x2 int array ``[[tn, fp], [fn, tp]]`` (rows: true 0/1, columns: predicted 0/1)."""
    y, _ = _check(labels)
    p, _ = _check(predicted)
    return np.array([[np.sum(~y & ~p), np.sum(~y & p)], [np.sum(y & ~p), np.sum(y & p)]], dtype=np.int64)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic with average ranks (ties count 1/2)."""
    y, s = _check(labels, scores)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg_rank = first + (counts + 1) / 2.0  # 1-based average rank of each distinct value
    ranks = np.empty(len(s))
    ranks[order] = np.repeat(avg_rank, counts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _roc_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, s = _check(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    ends = np.flatnonzero(np.r_[ss[1:] != ss[:-1], True]) if len(ss) else np.zeros(0, int)
    tps = np.r_[0, np.cumsum(ys)[ends]]
    fps = np.r_[0, np.cumsum(~ys)[ends]]
    return tps, fps, np.r_[np.inf, ss[ends]]


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at each distinct score, descending; first point (0, 0) at +inf."""
    tps, fps, thr = _roc_counts(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        return fps / fps[-1], tps / tps[-1], thr


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Score threshold maximising sensitivity + specificity - 1 (ties: the highest threshold).

    Compared in exact integer arithmetic (``tp * n_neg - fp * n_pos``); NaN without both classes.
    """
    tps, fps, thr = _roc_counts(labels, scores)
    n_pos, n_neg = int(tps[-1]), int(fps[-1])
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    j = tps.astype(np.int64) * n_neg - fps.astype(np.int64) * n_pos
    best = int(np.argmax(j[1:])) + 1  # skip the (0, 0) point at +inf
    return float(thr[best])


def classifier_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5,
                       youden: bool = False) -> dict[str, Any]:
    """accuracy, balanced_accuracy, auc, sensitivity, specificity, precision, confusion [[tn, fp], [fn, tp]],
    threshold (``youden=True``: chosen at the Youden index instead of ``threshold``), n, n_pos."""
    y, s = _check(labels, scores)
    thr = youden_threshold(y, s) if youden else float(threshold)
    pred = s >= thr
    (tn, fp), (fn, tp) = confusion_matrix(y, pred)
    sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    bal = float(np.nanmean([sens, spec])) if np.isfinite([sens, spec]).any() else float("nan")
    return {
        "accuracy": _ratio(tp + tn, len(y)), "balanced_accuracy": bal, "auc": roc_auc(y, s),
        "sensitivity": sens, "specificity": spec, "precision": _ratio(tp, tp + fp),
        "confusion": [[int(tn), int(fp)], [int(fn), int(tp)]], "threshold": thr,
        "n": len(y), "n_pos": int(y.sum()),
    }


def dice(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """Dice coefficient of two boolean masks of the same shape; 1.0 when both are empty."""
    a, b = np.asarray(mask_a).astype(bool), np.asarray(mask_b).astype(bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.logical_and(a, b).sum()) / denom
