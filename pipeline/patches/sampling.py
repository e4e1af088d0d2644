"""Which samples to cut: labels and diameters, every candidate plus shifted positives."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.patches.config import PatchesConfig

COORDS = ["coordX", "coordY", "coordZ"]
# vox_z/y/x: the patch centre voxel on the preprocessed grid (cube[S//2, S//2, S//2]), for the
# segmenter's annotation masks (nodules.csv holds the annotations in the same voxel frame)
VOXEL_COLUMNS = ["vox_z", "vox_y", "vox_x"]
INDEX_COLUMNS = ["sample", "seriesuid", "candidate", "coordX", "coordY", "coordZ", "label", "diameter_mm",
                 "subset", "split", "shard", "offset", "shifted", *VOXEL_COLUMNS]


def label_candidates(candidates: pd.DataFrame, annotations: pd.DataFrame) -> pd.DataFrame:
    """Add ``candidate`` (row number), ``label`` (= class) and ``diameter_mm``.

    ``diameter_mm`` of a positive = the nearest annotation of its series whose sphere
    (radius diameter/2) contains it; -1 when none does; 0 for negatives.
    """
    df = candidates.reset_index(drop=True).copy()
    df["candidate"] = np.arange(len(df))
    df["label"] = df["class"].astype(int)
    df["diameter_mm"] = 0.0
    by_uid = {u: g for u, g in annotations.groupby("seriesuid")}
    for i in np.nonzero(df["label"].to_numpy() == 1)[0]:
        ann = by_uid.get(df.at[i, "seriesuid"])
        diam = -1.0
        if ann is not None:
            d = np.linalg.norm(ann[COORDS].to_numpy() - df.loc[i, COORDS].to_numpy(float), axis=1)
            inside = d <= ann["diameter_mm"].to_numpy() / 2
            if inside.any():
                diam = float(ann["diameter_mm"].to_numpy()[inside][np.argmin(d[inside])])
        df.at[i, "diameter_mm"] = diam
    return df


def select_samples(labelled: pd.DataFrame, cfg: PatchesConfig) -> pd.DataFrame:
    """Keep EVERY candidate, add ``pos_shifts`` shifted copies of every positive, assign shards.

    The store holds one unshifted row per candidate of the candidates CSV (for the scans that
    were preprocessed), whatever the split, so any subset can be scored completely by any
    cross-validation fold. Shifted copies (``shifted = 1``) are made for the positives of every
    subset; they are training material only (``split_rows`` keeps them in a fold's train side,
    ``predict`` never scores them). Negative subsampling is a training-time setting
    (``train.neg_ratio``, applied by the sampler), never an extraction-time one.

    Args:
        labelled: output of :func:`label_candidates` with ``subset`` and ``split`` columns.

    Returns:
        the index table (``INDEX_COLUMNS`` minus the voxel centres, which the stage adds),
        sorted train/val/test, subset, seriesuid, candidate, shift copy;
        ``shard = sample // shard_size``, ``offset = sample % shard_size``.
    """
    df = labelled.copy()
    df["shifted"] = 0
    parts = [df]
    pos = df[df["label"] == 1].sort_values("candidate")
    if cfg.pos_shifts and len(pos):
        rng = np.random.default_rng([int(cfg.seed), 1])
        for k in range(int(cfg.pos_shifts)):
            sh = pos.copy()
            sh[COORDS] = sh[COORDS].to_numpy(float) + rng.uniform(-cfg.shift_mm, cfg.shift_mm, (len(sh), 3))
            sh["shifted"] = k + 1
            parts.append(sh)
    out = pd.concat(parts, ignore_index=True)
    out["_split_order"] = out["split"].map({"train": 0, "val": 1, "test": 2})
    out = out.sort_values(["_split_order", "subset", "seriesuid", "candidate", "shifted"]).reset_index(drop=True)
    out["shifted"] = (out["shifted"] > 0).astype(int)
    out["sample"] = np.arange(len(out))
    out["shard"] = out["sample"] // int(cfg.shard_size)
    out["offset"] = out["sample"] % int(cfg.shard_size)
    return out[[c for c in INDEX_COLUMNS if c not in VOXEL_COLUMNS]]
