"""Slow, loop-style reference of the official ``evaluateCAD`` + ``computeFROC`` (no bootstrap).

Written independently in the style of ``noduleCADEvaluationLUNA16.py`` (dicts of marks per scan, a
Python loop over nodule annotations and marks) so tests and ``benchmarks/bench_froc.py`` can check the
vectorised :func:`pipeline.evaluate.froc.froc` against it. ``roc_curve`` below reproduces sklearn's
``roc_curve`` points (without ``drop_intermediate``, which only removes collinear points and so does not
change any interpolated value). Not used by the pipeline itself.
"""
from __future__ import annotations

import math

import numpy as np

FIXED_FPS = (0.125, 0.25, 0.5, 1, 2, 4, 8)


def roc_curve(labels: list[float], scores: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    tps, fps, thr = [0.0], [0.0], [math.inf]
    tp = fp = 0.0
    for n, i in enumerate(order):
        tp += labels[i]
        fp += 1.0 - labels[i]
        if n == len(order) - 1 or scores[order[n + 1]] != scores[i]:
            tps.append(tp)
            fps.append(fp)
            thr.append(scores[i])
    tps_a, fps_a = np.array(tps), np.array(fps)
    with np.errstate(invalid="ignore", divide="ignore"):
        return fps_a / fps_a[-1], tps_a / tps_a[-1], np.array(thr)


def compute_froc(gt: list[float], prob: list[float], n_images: int, exclude: list[bool]):
    gt_local = [g for g, e in zip(gt, exclude) if not e]
    prob_local = [p for p, e in zip(prob, exclude) if not e]
    detected = sum(gt_local)
    total = sum(gt)
    fpr, tpr, thr = roc_curve(gt_local, prob_local)
    if sum(gt) == len(gt):
        fps = np.zeros(len(fpr))
    else:
        fps = fpr * (len(prob_local) - detected) / n_images
    sens = (tpr * detected) / total
    return fps, sens, thr


def evaluate(seriesuids, annotations, excluded, predictions, max_marks=100):
    """``annotations``/``excluded``: lists of (uid, x, y, z, diameter); ``predictions``: (uid, x, y, z, p).

    Returns dict with the official FROC lists (gt, prob, exclude, divisor = FROCGTList, FROCProbList,
    excludeList, FPDivisorList), fps, sens, thresholds, cpm, sensitivities (list at FIXED_FPS), counts.
    """
    all_cands = {}
    for uid in seriesuids:
        marks = {}
        i = 0
        for row in predictions:
            if row[0] == uid:
                marks[i] = row
                i += 1
        if max_marks > 0 and len(marks) > max_marks:
            probs = sorted((float(r[4]) for r in marks.values()), reverse=True)
            threshold = probs[max_marks]
            kept = {}
            for k, r in marks.items():
                if len(kept) >= max_marks:
                    break
                if float(r[4]) > threshold:
                    kept[k] = r
            marks = kept
        all_cands[uid] = marks

    gt, prob, exclude, divisor = [], [], [], []
    tp = fn = fp = dups = irrelevant = 0
    for uid in seriesuids:
        cands = all_cands.get(uid, {})
        remaining = dict(cands)
        nodules = [(r, "Included") for r in annotations if r[0] == uid]
        nodules += [(r, "Excluded") for r in excluded if r[0] == uid]
        for nod, state in nodules:
            x, y, z, diameter = float(nod[1]), float(nod[2]), float(nod[3]), float(nod[4])
            if diameter < 0.0:
                diameter = 10.0
            r2 = math.pow(diameter / 2.0, 2.0)
            matches = []
            for key, c in cands.items():
                d2 = math.pow(x - c[1], 2.0) + math.pow(y - c[2], 2.0) + math.pow(z - c[3], 2.0)
                if d2 < r2:
                    if state == "Included":
                        matches.append(c)
                        remaining.pop(key, None)
                    elif key in remaining:
                        irrelevant += 1
                        del remaining[key]
            if len(matches) > 1:
                dups += len(matches) - 1
            if state == "Included":
                if matches:
                    best = None
                    for c in matches:
                        if best is None or float(c[4]) > best:
                            best = float(c[4])
                    gt.append(1.0), prob.append(best), exclude.append(False), divisor.append(uid)
                    tp += 1
                else:
                    gt.append(1.0), prob.append(-1e9), exclude.append(True), divisor.append(uid)
                    fn += 1
        for c in remaining.values():
            gt.append(0.0), prob.append(float(c[4])), exclude.append(False), divisor.append(uid)
            fp += 1
    fps, sens, thr = compute_froc(gt, prob, len(seriesuids), exclude)
    at = [float(np.interp(r, fps, sens)) for r in FIXED_FPS]
    return {"gt": gt, "prob": prob, "exclude": exclude, "divisor": divisor, "fps": fps, "sens": sens, "thresholds": thr, "sensitivities": at, "cpm": float(np.mean(at)),
            "counts": {"tp": tp, "fp": fp, "missed": fn, "ignored_duplicates": dups,
                       "ignored_excluded": irrelevant}}
