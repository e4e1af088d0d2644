"""Saliency for the top findings of a ``detect`` output folder.

Each finding's classifier input is cut again from its scan exactly as ``detect`` cut it (the
classifier's saved preprocess and patch params, :mod:`pipeline.detect.score`), then explained with
:func:`pipeline.explain.saliency.explain_patches`. The scans are read from the paths recorded in
``scans/<id>.json`` (as given to ``detect``: relative paths resolve from the working directory).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.explain.config import ExplainConfig


def _records(detect_dir: Path) -> list[dict]:
    from pipeline.utils import read_json

    folder = detect_dir / "scans"
    if not folder.is_dir():
        raise DataError(folder, "not a detect output folder (no scans/)")
    recs = []
    for p in sorted(folder.glob("*.json")):
        if p.name.endswith(".error.json"):
            continue
        try:
            rec = read_json(p)
        except (OSError, ValueError) as exc:
            raise DataError(p, f"unreadable detect result ({type(exc).__name__})") from None
        if rec.get("status") == "ok" and rec.get("findings"):
            recs.append(rec)
    return recs


def finding_patches(rec: dict, model_config: dict, kind: str, top: int) -> np.ndarray:
    """Classifier inputs float32 of the first ``top`` findings of one scan record."""
    from pipeline.detect.scan import preprocess_config
    from pipeline.detect.score import cut_patches, patch_params
    from pipeline.io.scans import read_scan
    from pipeline.preprocess import preprocess_scan

    path = Path(rec["scan"])
    if not path.exists():
        raise DataError(path, "scan of a detect finding not found (run from the folder detect ran in)")
    scan = read_scan(path)
    array, _, geom = preprocess_scan(scan, preprocess_config(model_config))
    f = rec["findings"][:top]
    xyz = np.array([[r["coordX"], r["coordY"], r["coordZ"]] for r in f], float)
    centers = geom.world_to_nearest_voxel_zyx(xyz).reshape(-1, 3)
    x = cut_patches(array, geom, centers, kind, patch_params(model_config)).astype(np.float32)
    return x


def explain_detect(detect_dir: str | os.PathLike, model_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   cfg: ExplainConfig | None = None, top: int = 5) -> dict[str, str]:
    """Maps for the ``top`` findings of every scan of ``detect_dir``: ``out_dir/<id>_<k>.png`` (three
    planes x methods) and ``<id>_<k>_<method>.npy``, plus ``out_dir/saliency_sheet.png``.

    Returns ``{crop png (as report.html names it): saliency png path}`` for the findings that have a
    crop in the report."""
    from pipeline.explain import figures
    from pipeline.explain.saliency import explain_patches
    from pipeline.runtime import load_model, resolve_device
    from pipeline.utils import atomic_path

    cfg = cfg or ExplainConfig()
    d, out = Path(detect_dir), Path(out_dir)
    device = resolve_device(cfg.device)
    model, config = load_model(model_dir, device)
    kind = config.get("kind", "2d")
    done: dict[str, str] = {}
    sheet_x, sheet_maps, caps = [], {m: [] for m in cfg.methods}, []
    for rec in _records(d):
        x = finding_patches(rec, config, kind, top)
        maps = explain_patches(model, config, x, cfg, device)
        crops = rec.get("crops") or []
        for k in range(len(x)):
            f = rec["findings"][k]
            stem = f"{rec['id']}_{k + 1}"
            for m, mm in maps.items():
                with atomic_path(out / f"{stem}_{m}.npy") as tmp:
                    np.save(tmp, mm[k])
            cap = f"{rec['id']} #{k + 1} p={f['probability']:.2f} cls={f.get('cls_score') or float('nan'):.2f}"
            png = figures.sample_figure(out / f"{stem}.png", x[k], {m: mm[k] for m, mm in maps.items()}, cap)
            if k < len(crops):
                done[crops[k]] = str(png)
            if len(sheet_x) < cfg.n_sheet:
                sheet_x.append(x[k])
                caps.append(f"{rec['id'][:10]} #{k + 1}")
                for m, mm in maps.items():
                    sheet_maps[m].append(mm[k])
    if sheet_x:
        figures.contact_sheet(out / "saliency_sheet.png", np.stack(sheet_x),
                              {m: np.stack(v) for m, v in sheet_maps.items()}, caps)
    return done
