"""LUNA16 mark-to-nodule matching, vectorised (the rules of ``noduleCADEvaluationLUNA16.py``).

Rules reproduced exactly from the official script (``evaluateCAD``):

* **Mark limit.** Per scan, when there are more than ``max_marks`` marks, the official script sorts the
  probabilities descending, takes ``t = probs[max_marks]`` (the 101st largest) and keeps the marks with
  probability **strictly greater** than ``t``. Marks tied with the 101st therefore all drop out, so a scan
  can keep fewer than 100 marks (``dropped_over_limit`` counts the marks removed).
* **Hit.** A mark hits a finding when the squared world distance (mm^2) to its centre is strictly below
  ``(diameter_mm / 2) ** 2``; a diameter < 0 (``-1`` in ``annotations_excluded.csv``) means 10 mm.
* **Included nodules first.** A mark hitting an included nodule (annotations.csv) is never an FP and never
  "ignored", even if it also lies in an excluded finding.
* **One TP per nodule.** A nodule hit by several marks yields one TP entry at the highest probability of
  those marks; the other marks are ignored (``ignored_duplicates`` = sum over nodules of ``hits - 1``).
  A single mark hitting two included nodules counts for both (the official script only prints
  "This is strange: CAD mark ... detected two nodules!" and keeps both TPs).
* **Excluded findings.** Marks not on an included nodule but hitting an excluded finding are ignored
  (neither TP nor FP), counted once in ``ignored_excluded`` however many excluded findings they hit.
* **Missed nodules** stay in the denominator; every remaining mark is an FP.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

_PAIR_CHUNK = 2_000_000  # max (mark, finding) pairs held at once


@dataclass(frozen=True)
class MatchResult:
    """Outcome of matching; all arrays are numpy.

    nodule_found (K,) bool, nodule_prob (K,) float (max probability of the hitting marks, -inf if missed),
    nodule_hits (K,) int; mark_status (M,) int8: 0 FP, 1 on an included nodule (TP or duplicate),
    2 ignored (excluded finding); counts of ignored duplicates / excluded marks.
    """

    nodule_found: np.ndarray
    nodule_prob: np.ndarray
    nodule_hits: np.ndarray
    mark_status: np.ndarray
    ignored_duplicates: int
    ignored_excluded: int


def limit_marks(scan_idx: np.ndarray, prob: np.ndarray, max_marks: int) -> np.ndarray:
    """Boolean keep-mask (M,) implementing the official per-scan mark limit (see module docstring).

    ``max_marks <= 0`` keeps everything (as the official ``maxNumberOfCADMarks=-1``).
    """
    m = len(prob)
    keep = np.ones(m, dtype=bool)
    if max_marks <= 0 or m == 0:
        return keep
    order = np.lexsort((-prob, scan_idx))  # by scan, then probability descending
    s_sorted = scan_idx[order]
    counts = np.bincount(scan_idx)
    starts = np.cumsum(counts) - counts
    rank = np.arange(m) - starts[s_sorted]
    over = counts > max_marks
    # probability of the (max_marks+1)-th mark of each over-limit scan
    thr = np.full(len(counts), -np.inf)
    at = (rank == max_marks) & over[s_sorted]
    thr[s_sorted[at]] = prob[order][at]
    keep[order] = ~over[s_sorted] | (prob[order] > thr[s_sorted])
    return keep


def match(mark_scan: np.ndarray, mark_xyz_mm: np.ndarray, mark_prob: np.ndarray,
          find_scan: np.ndarray, find_xyz_mm: np.ndarray, find_diameter_mm: np.ndarray,
          find_included: np.ndarray, n_scans: int) -> MatchResult:
    """Match marks to findings of the same scan.

    ``mark_scan`` (M,) int scan index; ``mark_xyz_mm`` (M, 3) world x, y, z in mm; ``mark_prob`` (M,).
    ``find_*`` (F,): the included nodules AND excluded findings; ``find_included`` (F,) bool. The
    nodule arrays of the result are indexed like the included findings in their order in ``find_*``.
    """
    m, f = len(mark_prob), len(find_scan)
    incl_idx = np.flatnonzero(find_included)
    k_of_find = np.full(f, -1, dtype=np.int64)
    k_of_find[incl_idx] = np.arange(len(incl_idx))
    n_incl = len(incl_idx)
    diam = np.where(find_diameter_mm < 0.0, 10.0, find_diameter_mm)
    r2 = (diam / 2.0) * (diam / 2.0)

    f_order = np.argsort(find_scan, kind="stable")
    f_counts = np.bincount(find_scan, minlength=n_scans)
    f_starts = np.cumsum(f_counts) - f_counts
    n_pairs = f_counts[mark_scan] if m else np.zeros(0, dtype=np.int64)

    nodule_prob = np.full(n_incl, -np.inf)
    nodule_hits = np.zeros(n_incl, dtype=np.int64)
    mark_incl = np.zeros(m, dtype=bool)
    mark_excl = np.zeros(m, dtype=bool)
    # chunks of marks so that the pair arrays stay bounded
    csum = np.cumsum(n_pairs)
    bounds = [0]
    while bounds[-1] < m:
        base = csum[bounds[-1] - 1] if bounds[-1] else 0
        nxt = int(np.searchsorted(csum, base + _PAIR_CHUNK, side="right"))
        bounds.append(max(nxt, bounds[-1] + 1))
    for a, b in itertools.pairwise(bounds):
        npair = n_pairs[a:b]
        total = int(npair.sum())
        if total == 0:
            continue
        pm = np.repeat(np.arange(a, b), npair)
        within = np.arange(total) - np.repeat(np.cumsum(npair) - npair, npair)
        pf = f_order[f_starts[mark_scan[pm]] + within]
        dx = find_xyz_mm[pf, 0] - mark_xyz_mm[pm, 0]
        dy = find_xyz_mm[pf, 1] - mark_xyz_mm[pm, 1]
        dz = find_xyz_mm[pf, 2] - mark_xyz_mm[pm, 2]
        hit = (dx * dx + dy * dy + dz * dz) < r2[pf]
        hi = hit & find_included[pf]
        he = hit & ~find_included[pf]
        k = k_of_find[pf[hi]]
        np.maximum.at(nodule_prob, k, mark_prob[pm[hi]])
        nodule_hits += np.bincount(k, minlength=n_incl)
        mark_incl[pm[hi]] = True
        mark_excl[pm[he]] = True

    status = np.zeros(m, dtype=np.int8)
    status[mark_excl] = 2
    status[mark_incl] = 1
    return MatchResult(
        nodule_found=nodule_hits > 0,
        nodule_prob=nodule_prob,
        nodule_hits=nodule_hits,
        mark_status=status,
        ignored_duplicates=int(np.maximum(nodule_hits - 1, 0).sum()),
        ignored_excluded=int((mark_excl & ~mark_incl).sum()),
    )
