"""Evaluation: LUNA16-exact FROC/CPM with bootstrap CIs, classifier metrics, the ``evaluate`` stage.

* :func:`pipeline.evaluate.froc.froc` -> :class:`~pipeline.evaluate.froc.FrocResult`
* :mod:`pipeline.evaluate.classify`: accuracy, balanced accuracy, ROC AUC, Youden threshold, Dice
* :func:`pipeline.evaluate.stage.run` / :func:`~pipeline.evaluate.stage.write_froc_outputs`
"""
from pipeline.evaluate.froc import FP_RATES, FrocResult, froc

__all__ = ["FP_RATES", "FrocResult", "froc"]
