"""End to end on the synthetic ``tiny_luna`` root: preprocess -> patches -> train (1 epoch) -> predict.
tiny_luna has 2 subsets: train on subset 0, validate and score subset 1 (split overrides)."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from pipeline.errors import DataError


def test_tiny_luna_train_and_predict(tiny_luna, tmp_path):
    from pipeline.patches.config import Folds, PatchesConfig
    from pipeline.patches.stage import run as patches
    from pipeline.preprocess import PreprocessConfig
    from pipeline.preprocess.stage import run as preprocess
    from pipeline.train.config import TrainConfig
    from pipeline.train.predict import predict
    from pipeline.train.stage import train_classifier

    torch.set_num_threads(2)
    preprocess(tiny_luna, tmp_path / "pre", PreprocessConfig(workers=2), progress=False)
    patches(tiny_luna, tmp_path / "pre", tmp_path / "p", PatchesConfig(workers=2, folds=Folds(test=(), val=())),
            progress=False)
    cfg = TrainConfig(epochs=1, batch_size=16, head_hidden=32, test_subsets=(), val_subsets=(1,))
    res = train_classifier(tmp_path / "p", tmp_path / "m", cfg, preprocessed_dir=tmp_path / "pre",
                           live_dir=tmp_path / "live", progress=False)
    assert res.metrics["epochs_run"] == 1 and res.metrics["n_train"] > 0
    import json

    config = json.loads((tmp_path / "m" / "config.json").read_text(encoding="utf-8"))
    assert config["preprocess"]["params"]["spacing_xyz_mm"] and config["patches"]["plane_px"] == 64
    predict(tmp_path / "m", tmp_path / "p", tmp_path / "fpr", subsets=[1], luna_root=tiny_luna)
    pred = pd.read_csv(tmp_path / "fpr" / "predictions.csv")
    scans = pd.read_csv(tmp_path / "fpr" / "seriesuids.csv", header=None)[0].astype(str)
    subset1 = {p.stem for p in (tiny_luna / "subset1").glob("*.mhd")}
    assert set(scans) == subset1 and set(pred["seriesuid"].astype(str)) <= subset1 and len(pred) > 0
    cands = pd.read_csv(tiny_luna / "candidates.csv", dtype={"seriesuid": str})
    want = cands[cands["seriesuid"].isin(subset1)]
    assert len(pred) == len(want)  # one row per candidate of the scored subset, nothing dropped
    key = ["seriesuid", "coordX", "coordY", "coordZ"]
    got = pred.astype({"seriesuid": str}).merge(want, on=key, how="inner")
    assert len(got) == len(want)
    # a store that lacks candidates of the scored subset is an error, never a partial file
    idx = pd.read_csv(tmp_path / "p" / "index.csv", dtype={"seriesuid": str})
    drop = idx.index[(idx["subset"] == 1) & (idx["label"] == 0)][:3]
    idx.drop(drop).to_csv(tmp_path / "p" / "index.csv", index=False)
    with pytest.raises(DataError, match="3 missing"):
        predict(tmp_path / "m", tmp_path / "p", tmp_path / "fpr2", subsets=[1], luna_root=tiny_luna)
    assert not (tmp_path / "fpr2" / "predictions.csv").exists()
