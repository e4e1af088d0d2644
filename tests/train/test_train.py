"""Classifier training on a hand-made PatchStore (blobs vs lines): learning, checkpoints, resume,
transfer strategies, precision options, predict, CLI. Bound: val AUC > 0.8 after 5 epochs."""
from __future__ import annotations

import json
import logging
import re

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.train.config import TrainConfig

FAST = {"encoder": "efficientnet_lite0", "weights": "pretrained", "batch_size": 16, "head_hidden": 64, "seed": 3}


@pytest.fixture(autouse=True)
def _threads(two_torch_threads):  # tests/conftest.py
    yield


@pytest.fixture(scope="module")
def trained(easy_patches, tmp_path_factory):
    from pipeline.train.stage import train_classifier

    base = tmp_path_factory.mktemp("clf")
    cfg = TrainConfig(**FAST, epochs=5, strategy="full")
    res = train_classifier(easy_patches, base / "model", cfg, live_dir=base / "live", progress=False)
    return base, res


def test_classifier_learns_and_writes_outputs(trained):
    base, res = trained
    out = base / "model"
    assert res.metrics["best_val_auc"] > 0.8, res.history
    assert {"model.pt", "last.pt", "config.json", "provenance.json", "metrics.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    for key in ("best_val_auc", "val_accuracy", "epochs_run", "strategy_reason"):
        assert key in m
    assert not {"train_seconds", "samples_per_s", "wall_seconds"} & set(m)  # timings: run log, not the model folder
    assert res.metrics["train_seconds"] > 0 and res.metrics["samples_per_s"] > 0
    ck0 = torch.load(out / "last.pt", weights_only=True)
    assert not any("seconds" in h or "samples_per_s" in h for h in ck0["history"])
    prov = json.loads((out / "provenance.json").read_text(encoding="utf-8"))
    assert prov["weights_source"] != "random" and len(prov["sha256"]) == 64
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert cfg["task"] == "classifier" and cfg["patches"]["plane_px"] == 32 and cfg["model"]["weights"] == "pretrained"
    live = json.loads((base / "live" / "metrics.json").read_text(encoding="utf-8"))
    assert "val" in live and "val_auc" in live["val"] and live["step"] == 4
    assert (base / "live" / "plots" / "metrics" / "val" / "val_auc.tsv").is_file()
    card = json.loads((base / "model" / "model_card.json").read_text(encoding="utf-8"))
    assert card["task"] == "classifier" and card["metrics"]["validation"]["best_val_auc"] is not None
    assert (base / "model" / "MODEL_CARD.md").is_file()
    # results only in the DVC metrics; the timings beside them, one per epoch
    assert "perf" not in live and not (base / "live" / "plots" / "metrics" / "perf").exists()
    assert set(live["train"]) == {"train_loss", "lr"}
    timings = json.loads((base / "live" / "timings.json").read_text(encoding="utf-8"))
    assert len(timings["seconds_per_epoch"]) == len(timings["samples_per_s"]) == live["step"] + 1
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["epoch"] == 4 and len(ck["history"]) == 5


def test_checkpoint_reloads_and_reproduces_val_metrics(trained, easy_patches):
    from pipeline.patches.dataset import PatchStore
    from pipeline.train.checkpoint import load_model
    from pipeline.train.data import PatchDataset, split_rows
    from pipeline.train.stage import classifier_task

    base, res = trained
    model, _config = load_model(base / "model")  # built with weights="none", then model.pt (weights_only)
    store = PatchStore(easy_patches)
    ds = PatchDataset(store, split_rows(store.index, "val"), model.kind)
    val = classifier_task("sampler").evaluate(model, torch.utils.data.DataLoader(ds, batch_size=32),
                                              torch.device("cpu"), None)
    assert val["val_auc"] == res.metrics["val_auc"]
    assert val["val_accuracy"] == res.metrics["val_accuracy"]
    assert val["val_loss"] == pytest.approx(res.metrics["val_loss"], rel=1e-6)


def test_predict_writes_luna16_columns_and_all_scans(trained, easy_patches, tmp_path):
    from pipeline.train.predict import predict

    base, _ = trained
    luna = tmp_path / "luna"
    uids = [f"1.2.3.0.{i}" for i in range(4)] + ["9.9.9.no.candidates"]
    (luna / "subset0").mkdir(parents=True)
    (luna / "subset1").mkdir()
    for u in uids:
        (luna / "subset0" / f"{u}.mhd").write_text("")
    (luna / "subset1" / "1.2.3.1.0.mhd").write_text("")
    idx = pd.read_csv(easy_patches / "index.csv").sort_values("candidate")  # the store's candidates CSV
    idx.assign(**{"class": idx["label"]})[["seriesuid", "coordX", "coordY", "coordZ", "class"]].to_csv(
        luna / "candidates.csv", index=False)
    res = predict(base / "model", easy_patches, tmp_path / "fpr", split="test", luna_root=luna)
    pred = pd.read_csv(tmp_path / "fpr" / "predictions.csv")
    assert list(pred.columns) == ["seriesuid", "coordX", "coordY", "coordZ", "probability"]
    assert len(pred) == 40 and pred["probability"].between(0, 1).all()
    scored = pd.read_csv(tmp_path / "fpr" / "scored.csv")
    assert list(scored.columns) == ["seriesuid", "candidate", "label", "probability"]
    listed = (tmp_path / "fpr" / "seriesuids.csv").read_text(encoding="utf-8").split()
    assert sorted(listed) == sorted(uids) and res.n_scans == 5


def test_linear_probe_freezes_encoder_bitwise(easy_patches, tmp_path):
    from pipeline.models.classifier import build_classifier
    from pipeline.train.checkpoint import load_model
    from pipeline.train.stage import seed_everything, train_classifier

    cfg = TrainConfig(**FAST, epochs=1, strategy="linear_probe", max_train_samples=48)
    seed_everything(cfg.seed)
    before = build_classifier(cfg.model()).state_dict()
    train_classifier(easy_patches, tmp_path / "m", cfg, live_dir=None, progress=False)
    after = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    enc = [k for k in before if k.startswith("encoder.")]
    assert enc and any("running_mean" in k for k in enc)
    for k in enc:
        assert torch.equal(before[k], after[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("head."))
    load_model(tmp_path / "m")


def test_resume_is_bit_exact(easy_patches, tmp_path, caplog):
    from pipeline.train.stage import train_classifier

    cfg = TrainConfig(**FAST, epochs=2, strategy="progressive", max_train_samples=48, warmup_epochs=1.0)
    with caplog.at_level(logging.INFO, logger="pipeline.train.loop"):
        a = train_classifier(easy_patches, tmp_path / "a", cfg, live_dir=tmp_path / "la", progress=False)
    # one progress line per epoch even with progress=False (dvc repro passes --quiet)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train a epoch: ")]
    assert len(lines) == 2 and lines[0].startswith("train a epoch: 1/2 (50%) elapsed "), lines
    assert re.search(r"^train a epoch: 2/2 \(100%\) elapsed \d+s, ETA 0s, [\d.]+ epoch/s; train_loss=\S+ "
                     r"val_auc=\S+ \(best \S+ at epoch [12]\)", lines[1]), lines
    caplog.clear()
    train_classifier(easy_patches, tmp_path / "b", cfg, live_dir=tmp_path / "lb", progress=False, stop_after=1)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["epoch"] == 0
    with caplog.at_level(logging.INFO, logger="pipeline.train.loop"):
        b = train_classifier(easy_patches, tmp_path / "b", cfg, live_dir=tmp_path / "lb", progress=False,
                             resume=True)
    assert [r.getMessage()[:22] for r in caplog.records if r.getMessage().startswith("train b epoch")] == \
        ["train b epoch: 2/2 (10"]  # resumed after epoch 1: only epoch 2 runs
    sa = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    strip = [{k: v for k, v in h.items() if k not in ("seconds", "samples_per_s")} for h in a.history]
    assert strip == [{k: v for k, v in h.items() if k not in ("seconds", "samples_per_s")} for h in b.history]
    assert json.loads((tmp_path / "lb" / "metrics.json").read_text(encoding="utf-8"))["step"] == 1


def test_precision_and_option_validation():
    from pipeline.train.loop import resolve_precision

    with pytest.raises(ConfigError, match="auto, bf16, fp16, fp32"):
        TrainConfig(precision="fp8")
    with pytest.raises(ConfigError, match="sampler, focal, none"):
        TrainConfig(imbalance="smote")
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        resolve_precision("fp16", torch.device("cpu"))
    assert resolve_precision("auto", torch.device("cpu")) is None
    assert resolve_precision("bf16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(ConfigError, match="overlap"):
        TrainConfig(test_subsets=[0, 1], val_subsets=[1])


def test_bf16_focal_and_cli(easy_patches, tmp_path):
    from pipeline.cli import main

    params = tmp_path / "params.yaml"
    params.write_text("train:\n  encoder: efficientnet_lite0\n  batch_size: 16\n  head_hidden: 32\n"
                      "  imbalance: focal\n  precision: bf16\n  max_train_samples: 40\n")
    rc = main(["train", "--patches", str(easy_patches), "--out", str(tmp_path / "m"), "--live", str(tmp_path / "l"),
               "--params", str(params), "--epochs", "1", "--val-subsets", "0", "--test-subsets", "1", "--quiet"])
    assert rc == 0
    m = json.loads((tmp_path / "m" / "metrics.json").read_text(encoding="utf-8"))
    assert m["precision"] == "bfloat16" and m["epochs_run"] == 1 and m["strategy"] == "partial"
    assert "partial" in m["strategy_reason"] and np.isfinite(m["val_loss"])
    rc = main(["predict", "--model", str(tmp_path / "m"), "--patches", str(easy_patches),
               "--out", str(tmp_path / "p"), "--subsets", "1"])
    assert rc == 0 and len(pd.read_csv(tmp_path / "p" / "predictions.csv")) == 40
    assert main(["train", "--patches", str(easy_patches), "--params", str(params), "--precision", "fp16",
                 "--device", "cpu", "--out", str(tmp_path / "x")]) == 1  # ConfigError -> exit 1
