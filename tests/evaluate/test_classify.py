"""Classifier metrics and Dice against hand-worked values."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipeline.evaluate.classify import (
    classifier_metrics,
    confusion_matrix,
    dice,
    roc_auc,
    roc_points,
    youden_threshold,
)


def test_confusion_and_threshold_metrics():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.5, 0.0])
    np.testing.assert_array_equal(confusion_matrix(y, s >= 0.5), [[3, 2], [1, 2]])
    m = classifier_metrics(y, s, threshold=0.5)  # score >= threshold is positive (0.5 -> positive)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(3 / 5)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 5) / 2)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["confusion"] == [[3, 2], [1, 2]] and m["n"] == 8 and m["n_pos"] == 3


def brute_auc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    return np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)])


def test_auc_rank_based_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 60)
        s = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], 60)
        assert roc_auc(y, s) == pytest.approx(brute_auc(y, s), abs=1e-12)
    assert roc_auc([0, 1], [0.3, 0.3]) == 0.5
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert np.isnan(roc_auc([1, 1], [0.1, 0.2]))


def test_auc_equals_trapezoid_of_roc_points():
    rng = np.random.default_rng(1)
    y, s = rng.integers(0, 2, 200), rng.random(200).round(1)
    fpr, tpr, thr = roc_points(y, s)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(y, s), abs=1e-12)
    assert thr[0] == np.inf and np.all(np.diff(thr[1:]) < 0)


def test_youden_threshold():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.35, 0.3, 0.8, 0.9])
    assert youden_threshold(y, s) == pytest.approx(0.8)  # J = 2/3 at 0.8 and at 0.3: highest kept
    m = classifier_metrics(y, s, youden=True)
    assert m["threshold"] == pytest.approx(0.8) and m["specificity"] == 1.0


def test_input_errors():
    with pytest.raises(ValueError, match="0 or 1"):
        classifier_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="shape"):
        roc_auc([0, 1], [0.1])


def test_dice():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    a[:2], b[1:3] = True, True
    assert dice(a, b) == pytest.approx(2 * 16 / 64)
    assert dice(a, a) == 1.0 and dice(np.zeros(3), np.zeros(3)) == 1.0
    with pytest.raises(ValueError):
        dice(a, b[:2])
