"""``predict``: score every candidate of a split with a trained classifier (false-positive reduction).

Writes to ``out_dir``: ``predictions.csv`` (LUNA16 submission: seriesuid, coordX, coordY, coordZ,
probability), ``scored.csv`` (seriesuid, candidate, label, probability) and ``seriesuids.csv``
(every scan of the scored subsets, no header: from the LUNA16 root when given, so scans without
candidates still count, else from the patch index).

Completeness: with the LUNA16 root given (as ``dvc.yaml`` does), the predictions hold exactly one
row per candidate of the candidates CSV (the one the patch store was cut from) for every scan of
the scored subsets, or ``predict`` stops with an error naming what is missing (e.g. a scan that
failed preprocessing): a partial file would undercount false positives and inflate the CPM.
A candidate whose centre lies outside its volume is scored like any other, on its air-padded
patch (the official script counts it).

Under ``torchrun`` each rank scores its contiguous shard of the rows on its own device; the
probabilities are gathered in row order and only rank 0 writes (the same files as one process).
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


def check_complete(patches: Path, rows: pd.DataFrame, subsets: list[int], luna_root) -> int:
    """Raise DataError unless ``rows`` (unshifted index rows) hold every candidate of the candidates
    CSV for every scan of ``subsets`` under ``luna_root``; returns that candidate count."""
    from pipeline.io.luna16 import index_root, read_candidates

    summ = read_json(patches / "summary.json") if (patches / "summary.json").is_file() else {}
    name = summ.get("params", {}).get("candidates_csv", "candidates.csv")
    csv = Path(luna_root) / name
    cands = read_candidates(csv).reset_index(drop=True)
    if summ.get("candidates_csv_rows") not in (None, len(cands)):
        raise DataError(csv, f"has {len(cands)} rows but the patch store {patches} was cut from "
                        f"{summ['candidates_csv_rows']}: rerun patches")
    scans = index_root(luna_root)
    uids = set(scans.loc[scans["subset"].astype(int).isin(subsets), "seriesuid"].astype(str))
    want = np.flatnonzero(cands["seriesuid"].astype(str).isin(uids).to_numpy())
    have = rows["candidate"].to_numpy(np.int64)
    missing = np.setdiff1d(want, have)
    if len(missing) or len(have) != len(want):
        miss_uids = sorted(set(cands["seriesuid"].iloc[missing].astype(str)))
        raise DataError(patches, f"holds {len(have)} of the {len(want)} candidates of subsets {subsets} in {name}; "
                        f"{len(missing)} missing in {len(miss_uids)} scan(s), e.g. {miss_uids[:1]} (failed "
                        "preprocessing, or a store cut with another candidates file): fix and rerun patches; "
                        "a partial prediction file would undercount false positives")
    return len(want)


def predict(model_dir: str | os.PathLike, patches_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
            split: str = "test", subsets=None, luna_root=None, device: str = "auto",
            batch_size: int = 128, progress: bool = True) -> PredictResult:
    """Score the non-shifted candidates of ``split`` (or of the LUNA16 ``subsets`` given)."""
    from pipeline.train.distributed import session

    if split not in SPLITS:
        raise ConfigError(f"predict split must be one of {', '.join(SPLITS)}; got {split!r}")
    with session(device):  # torchrun: one shard per rank, gathered on rank 0; group destroyed at the end
        return _predict(model_dir, patches_dir, out_dir, split, subsets, luna_root, device, batch_size)


def _predict(model_dir, patches_dir, out_dir, split, subsets, luna_root, device, batch_size) -> PredictResult:
    from pipeline.patches.dataset import PatchStore
    from pipeline.runtime import configure_device, load_model, resolve_device
    from pipeline.train.data import PatchDataset
    from pipeline.train.distributed import ShardSampler, gather_cat, is_main
    from pipeline.train.loop import predict_logits

    t0 = time.perf_counter()
    patches, out = Path(patches_dir), Path(out_dir)
    dev = resolve_device(device)
    configure_device(dev)
    model, config = load_model(model_dir, dev)
    if config.get("task") == "segmenter":
        raise ConfigError(f"{model_dir}: is a segmenter; predict needs a classifier model folder")
    store = PatchStore(patches)
    idx = store.index
    subs = sorted(int(s) for s in subsets) if subsets is not None else _subsets_of(patches, idx, split)
    keep = idx["subset"].astype(int).isin(subs) & ~idx["shifted"].astype(bool)
    rows = idx.loc[keep, "sample"].to_numpy(np.int64)
    n_csv = check_complete(patches, idx.loc[keep], subs, luna_root) if luna_root is not None else None
    ds = PatchDataset(store, rows, model.kind)
    loader = DataLoader(ds, batch_size=batch_size, sampler=ShardSampler(len(ds)))
    logits, _, got = gather_cat(*predict_logits(model, loader, dev))
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
    if not is_main():
        return PredictResult(out, len(pred), len(uids), subs, time.perf_counter() - t0)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "predictions.csv", pred)
    write_csv(out / "scored.csv", scored)
    write_text(out / "seriesuids.csv", "".join(f"{u}\n" for u in uids))
    secs = time.perf_counter() - t0
    write_json(out / "predict_summary.json", {  # content only (no timings): identical runs, identical bytes
        "model_dir": str(model_dir), "split": split, "subsets": subs, "n_candidates": len(pred),
        "n_candidates_csv": n_csv, "n_scans": len(uids), "n_scans_with_candidates": int(pred["seriesuid"].nunique())})
    log.info("scored %d candidates in %d scans (subsets %s) in %.1f s (%.0f/s)", len(pred), len(uids), subs, secs,
             len(pred) / max(secs, 1e-9))
    return PredictResult(out, len(pred), len(uids), subs, secs)
