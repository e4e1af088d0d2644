"""The ``infer`` stage: detection on the LUNA16 test subsets, plus the files the FROC needs.

``run_infer`` runs :func:`pipeline.detect.batch` detection on the scans of the chosen subsets under
the output folder's lock, then writes ``predictions.csv`` (LUNA16 submission), ``seriesuids.csv``
(every scan of the subsets, failed ones included) and ``seg_metrics.json``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.detect.batch import DetectResult, locked_out_dir, resolve_model_dirs, run_locked
from pipeline.detect.config import DetectConfig
from pipeline.errors import ConfigError, DataError


def infer_subsets(cls_dir: Path | None, seg_dir: Path) -> list[int]:
    """Test subsets the models were trained without (train.test_subsets, else patches.folds.test)."""
    from pipeline.utils import read_json

    for d in (cls_dir, seg_dir):
        if d is None:
            continue
        c = read_json(Path(d) / "config.json")
        subs = (c.get("train") or {}).get("test_subsets") or ((c.get("patches") or {}).get("folds") or {}).get("test")
        if subs is not None:
            return sorted(int(s) for s in ([subs] if isinstance(subs, int) else subs))
    raise ConfigError("infer.subsets is null and the model config.json names no test subsets; set infer.subsets")


def run_infer(luna_root, model, out_dir, cfg: DetectConfig | None = None, *, segmenter=None,
              progress: bool = True, **kw) -> DetectResult:
    """The ``infer`` stage: detect on the LUNA16 scans of ``cfg.subsets`` (default: the models' test
    subsets), then write ``predictions.csv`` (LUNA16 submission) and ``seriesuids.csv`` (every scan of
    those subsets, no header, failed ones included) next to ``findings.csv`` for the FROC, and
    ``seg_metrics.json`` (the segmenter's validation Dice / AUC from its ``metrics.json``)."""
    from pipeline.io.luna16 import index_root

    cfg = cfg or DetectConfig()
    cls_dir, seg_dir = resolve_model_dirs(model, segmenter)
    subs = list(cfg.subsets) if cfg.subsets is not None else infer_subsets(cls_dir, seg_dir)
    idx = index_root(luna_root)
    sel = idx[idx["subset"].astype(int).isin(subs)]
    if sel.empty:
        raise DataError(luna_root, f"no scans in subsets {subs} (present: {sorted(idx['subset'].unique())})")
    kw.setdefault("stage", "infer")
    with locked_out_dir(out_dir, kw.pop("wait_s", 0.0), kw["stage"], force=kw.pop("force", False)) as out:
        res = run_locked(list(sel["path"]), model, out, cfg, segmenter=segmenter, progress=progress,
                   **{"save_maps": False, "overwrite": False, "scheduler": None, "run_log": None, **kw})
        _write_infer_outputs(out, sel, subs, seg_dir, res)
    return res


def _write_infer_outputs(out: Path, sel: pd.DataFrame, subs: list[int], seg_dir: Path, res: DetectResult) -> None:
    """predictions.csv, seriesuids.csv, run.json (+ subsets) and seg_metrics.json of the infer stage."""
    from pipeline.utils import read_json, write_csv, write_json

    pred = res.findings[["seriesuid", "coordX", "coordY", "coordZ", "probability"]]
    write_csv(out / "predictions.csv", pred, float_format="%.6g")
    write_csv(out / "seriesuids.csv", sel[["seriesuid"]], header=False)
    res.run_info["subsets"] = subs
    write_json(out / "run.json", res.run_info)
    seg_metrics = Path(seg_dir) / "metrics.json"
    if seg_metrics.is_file():  # the segmenter's own validation Dice/AUC, reported with the detection track
        m = read_json(seg_metrics)
        write_json(out / "seg_metrics.json", {k: m[k] for k in ("best_val_dice", "val_auc", "best_epoch") if k in m})
