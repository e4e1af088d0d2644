"""Stage ``explain`` core: saliency on a patch-store split, feature space before / after transfer,
first-convolution filters, ``metrics.json``. Reads no params (the CLI passes an ExplainConfig).

Outputs in ``out_dir``:

* ``saliency_sheet.png``: contact sheet of ``n_sheet`` positives of ``split`` (axial input, overlays);
* ``samples/<k>_s<sample>.png`` (three planes x methods) and ``samples/<k>_s<sample>_<method>.npy``
  (the map, float32 on the input grid: ``(P, P)`` for planes, ``(S, S, S)`` z, y, x for cubes);
* ``feature_space.png``: PCA and t-SNE of the pooled encoder features of ``feature_split``, before
  (weights as loaded) and after fine-tuning, coloured by label;
* ``filters.png``: the first convolution's filters before / after;
* ``metrics.json``: ``linear_probe_auc_before`` / ``_after`` (fit on ``probe_fit_split``, AUC on
  ``probe_eval_split``), ``saliency_inside_share`` (primary method) and per method, and
  ``nodule_area_share`` (the share a random maximum would reach).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from pipeline.explain.config import ExplainConfig

log = logging.getLogger(__name__)


def split_of(store, config: dict, split: str) -> np.ndarray:
    """Sample numbers of ``split`` with the subsets the model was trained with (config.json)."""
    from pipeline.train.data import split_rows

    t = config.get("train") or {}
    return split_rows(store.index, split, t.get("test_subsets"), t.get("val_subsets"))


def read_inputs(store, rows: np.ndarray, kind: str) -> np.ndarray:
    """Classifier inputs float32: planes ``(N, 3, P, P)`` or cubes ``(N, 1, S, S, S)`` HU."""
    if kind == "2d":
        return store.planes(rows).astype(np.float32)
    return store.cubes(rows).astype(np.float32)[:, None]


def _saliency(model, config, store, cfg: ExplainConfig, out: Path, device) -> dict:
    from pipeline.explain import figures
    from pipeline.explain.saliency import (
        explain_patches,
        inside_share,
        nodule_area_share,
        radius_px,
    )
    from pipeline.utils import atomic_path

    kind = config.get("kind", "2d")
    rows = split_of(store, config, cfg.split)
    idx = store.index.iloc[rows]
    pos = rows[idx["label"].to_numpy() == 1]
    if not len(pos):
        from pipeline.errors import DataError

        raise DataError(store.root, f"split {cfg.split!r} holds no positives to explain")
    rng = np.random.default_rng(cfg.seed)
    pick = np.sort(rng.choice(pos, size=min(cfg.n_sheet, len(pos)), replace=False))
    x = read_inputs(store, pick, kind)
    r = radius_px(store.index.iloc[pick]["diameter_mm"].to_numpy(float), config, kind)
    maps = explain_patches(model, config, x, cfg, device)
    probs = _probabilities(model, x, device)
    caps = [f"s{s} p={p:.2f} d={2 * rr:.0f}px" for s, p, rr in zip(pick, probs, r)]
    for k, s in enumerate(pick):
        stem = f"{k:02d}_s{int(s)}"
        for m, mm in maps.items():
            with atomic_path(out / "samples" / f"{stem}_{m}.npy") as tmp:
                np.save(tmp, mm[k])
        figures.sample_figure(out / "samples" / f"{stem}.png", x[k], {m: mm[k] for m, mm in maps.items()},
                              caps[k], radius_px=float(r[k]))
    figures.contact_sheet(out / "saliency_sheet.png", x, maps, caps)
    shares = {m: inside_share(mm, r) for m, mm in maps.items()}
    return {"saliency_method": cfg.methods[0], "saliency_inside_share": shares[cfg.methods[0]],
            "saliency_inside_share_by_method": shares, "nodule_area_share": nodule_area_share(r, x.shape[2:]),
            "saliency_samples": len(pick), "saliency_split": cfg.split,
            "saliency_layer": str(cfg.layer), "saliency_mean_probability": float(np.mean(probs))}


def _probabilities(model, x: np.ndarray, device) -> np.ndarray:
    import torch

    from pipeline.detect.score import classify

    return classify(model, x, batch_size=64, device=torch.device(device))


def _features(model, config, store, cfg: ExplainConfig, out: Path, device) -> dict:
    from pipeline.explain import features as F
    from pipeline.explain import figures
    from pipeline.train.data import limit_rows

    kind = config.get("kind", "2d")
    before_model = F.pretrained_classifier(config)
    feats, labels = {}, {}
    for split in dict.fromkeys((cfg.probe_fit_split, cfg.probe_eval_split, cfg.feature_split)):
        rows = split_of(store, config, split)
        x = read_inputs(store, rows, kind)
        labels[split] = store.index.iloc[rows]["label"].to_numpy(int)
        feats[split] = {"before": F.pooled_features(before_model, x, cfg.batch_size, device),
                        "after": F.pooled_features(model, x, cfg.batch_size, device), "rows": rows}
    aucs = {w: F.linear_probe_auc(feats[cfg.probe_fit_split][w], labels[cfg.probe_fit_split],
                                  feats[cfg.probe_eval_split][w], labels[cfg.probe_eval_split], cfg.probe_c)
            for w in ("before", "after")}
    fs = feats[cfg.feature_split]
    keep = limit_rows(np.arange(len(fs["rows"])), labels[cfg.feature_split], cfg.max_embed, cfg.seed)
    emb = {w: F.embed(fs[w][keep], cfg.seed) for w in ("before", "after")}
    prov = getattr(model, "provenance", {}) or {}
    enc = config["model"]["encoder"]
    src = "random init" if config["model"].get("weights") == "none" else prov.get("weights_source", "pretrained")
    figures.feature_space_figure(out / "feature_space.png", emb["before"], emb["after"],
                                 labels[cfg.feature_split][keep],
                                 (f"before: weights as loaded ({src})",
                                  f"after: fine-tuned (strategy {config.get('strategy', '?')})"),
                                 (aucs["before"], aucs["after"]),
                                 f"{enc} pooled features, {cfg.feature_split} split ({len(keep)} patches); "
                                 f"probe fit on {cfg.probe_fit_split}, AUC on {cfg.probe_eval_split}")
    name, w0 = F.first_conv(before_model)
    _, w1 = F.first_conv(model)
    frozen = "; unchanged: frozen by the strategy" if np.array_equal(w0, w1) else ""
    figures.filters_figure(out / "filters.png", w0, w1, name, note=frozen)
    return {"linear_probe_auc_before": aucs["before"], "linear_probe_auc_after": aucs["after"],
            "linear_probe_fit_split": cfg.probe_fit_split, "linear_probe_eval_split": cfg.probe_eval_split,
            "linear_probe_n_fit": len(labels[cfg.probe_fit_split]),
            "linear_probe_n_eval": len(labels[cfg.probe_eval_split]),
            "embedded_patches": len(keep), "feature_split": cfg.feature_split,
            "first_conv": name, "first_conv_max_abs_change": float(np.abs(w1 - w0).max()),
            "encoder": enc, "strategy": config.get("strategy")}


def run_explain(model_dir: str | os.PathLike, patches_dir: str | os.PathLike, out_dir: str | os.PathLike,
                cfg: ExplainConfig | None = None) -> dict:
    """Write the explain outputs (module doc) for the classifier in ``model_dir`` on the patch store
    ``patches_dir``; returns the metrics dict (also ``out_dir/metrics.json``)."""
    import torch

    from pipeline.patches.dataset import PatchStore
    from pipeline.runtime import load_model, resolve_device
    from pipeline.utils import write_json

    cfg = cfg or ExplainConfig()
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    model, config = load_model(model_dir, device)
    if config.get("task", "classifier") != "classifier":
        from pipeline.errors import DataError

        raise DataError(Path(model_dir) / "config.json", "explain needs a classifier model folder")
    store = PatchStore(patches_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    metrics = {**_saliency(model, config, store, cfg, out, device)}
    t1 = time.perf_counter()
    metrics.update(_features(model, config, store, cfg, out, device))
    log.info("explain: saliency %.1f s, features %.1f s", t1 - t0, time.perf_counter() - t1)
    write_json(out / "metrics.json", metrics)
    return metrics
