"""``predict``: score every candidate of a split with a trained classifier (false-positive reduction).

Writes to ``out_dir``: ``predictions.csv`` (LUNA16 submission: seriesuid, coordX, coordY, coordZ,
probability), ``scored.csv`` (seriesuid, candidate, label, probability) and ``seriesuids.csv``
(every scan of the scored subsets, no header: from the LUNA16 root when given, so scans without
candidates or that failed preprocessing still count, else from the patch index).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from pipeline.errors import ConfigError, DataError
from pipeline.utils import read_json, write_csv, write_json, write_text

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


@dataclass
class PredictResult:
    out_dir: Path
    n_candidates: int
    n_scans: int
    subsets: list[int]
    seconds: float


def _subsets_of(patches: Path, index: pd.DataFrame, split: str) -> list[int]:
    summ = patches / "summary.json"
    folds = read_json(summ).get("params", {}).get("folds", {}) if summ.is_file() else {}
    if split in ("test", "val") and folds.get(split) is not None:
        return sorted(int(s) for s in folds[split])
    return sorted(int(s) for s in index.loc[index["split"] == split, "subset"].unique())


def predict(model_dir: str | os.PathLike, patches_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
            split: str = "test", subsets=None, luna_root=None, device: str = "auto",
            batch_size: int = 128, progress: bool = True) -> PredictResult:
    """Score the non-shifted candidates of ``split`` (or of the LUNA16 ``subsets`` given)."""
    from pipeline.patches.dataset import PatchStore
    from pipeline.train.checkpoint import load_model
    from pipeline.train.data import PatchDataset
    from pipeline.train.loop import predict_logits, resolve_device

    t0 = time.perf_counter()
    if split not in SPLITS:
        raise ConfigError(f"predict split must be one of {', '.join(SPLITS)}; got {split!r}")
    patches, out = Path(patches_dir), Path(out_dir)
    dev = resolve_device(device)
    model, config = load_model(model_dir, dev)
    if config.get("task") == "segmenter":
        raise ConfigError(f"{model_dir}: is a segmenter; predict needs a classifier model folder")
    store = PatchStore(patches)
    idx = store.index
    subs = sorted(int(s) for s in subsets) if subsets is not None else _subsets_of(patches, idx, split)
    keep = idx["subset"].astype(int).isin(subs) & ~idx["shifted"].astype(bool)
    rows = idx.loc[keep, "sample"].to_numpy(np.int64)
    ds = PatchDataset(store, rows, model.kind)
    logits, _, got = predict_logits(model, DataLoader(ds, batch_size=batch_size), dev)
    prob = torch.sigmoid(logits).numpy().astype(np.float64)
    sel = idx.set_index("sample").loc[got.numpy()]
    pred = pd.DataFrame({"seriesuid": sel["seriesuid"].to_numpy(), "coordX": sel["coordX"].to_numpy(),
                         "coordY": sel["coordY"].to_numpy(), "coordZ": sel["coordZ"].to_numpy(),
                         "probability": prob})
    scored = pd.DataFrame({"seriesuid": sel["seriesuid"].to_numpy(), "candidate": sel["candidate"].to_numpy(),
                           "label": sel["label"].to_numpy(), "probability": prob})
    if luna_root is not None:
        from pipeline.io.luna16 import index_root

        scans = index_root(luna_root)
        uids = sorted(scans.loc[scans["subset"].astype(int).isin(subs), "seriesuid"].astype(str))
        missing = sorted(set(pred["seriesuid"]) - set(uids))
        if missing:
            raise DataError(luna_root, f"{len(missing)} scored scan(s) not under the LUNA16 root, e.g. {missing[0]}")
    else:
        uids = sorted(idx.loc[idx["subset"].astype(int).isin(subs), "seriesuid"].astype(str).unique())
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "predictions.csv", pred)
    write_csv(out / "scored.csv", scored)
    write_text(out / "seriesuids.csv", "".join(f"{u}\n" for u in uids))
    secs = time.perf_counter() - t0
    write_json(out / "predict_summary.json", {
        "model_dir": str(model_dir), "split": split, "subsets": subs, "n_candidates": len(pred),
        "n_scans": len(uids), "n_scans_with_candidates": int(pred["seriesuid"].nunique()),
        "seconds": round(secs, 2), "candidates_per_s": round(len(pred) / max(secs, 1e-9), 1)})
    log.info("scored %d candidates in %d scans (subsets %s) in %.1f s", len(pred), len(uids), subs, secs)
    return PredictResult(out, len(pred), len(uids), subs, secs)
