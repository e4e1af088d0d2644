"""``plot_patches``: a grid of 2D / 2.5D / 3D-centre-slice patches of a few candidates."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.patches.dataset import PatchStore


def _pick(store: PatchStore, n: int) -> list[int]:
    """Up to n//2 positives (largest first) and hard negatives (brightest centre pixel)."""
    idx = store.index[store.index["shifted"] == 0]
    pos = idx[idx["label"] == 1].sort_values("diameter_mm", ascending=False)["sample"].tolist()
    neg = idx[idx["label"] == 0]["sample"].to_numpy()
    n_pos = min(len(pos), max(1, n // 2))
    picked = pos[:n_pos]
    if len(neg):
        planes = store.planes(neg)
        p = planes.shape[-1] // 2
        centre = planes[:, :, p - 1:p + 2, p - 1:p + 2].mean(axis=(1, 2, 3))
        picked += neg[np.argsort(-centre)[: n - len(picked)]].tolist()
    return picked


def plot_patches(patches_dir: str | os.PathLike, out_png: str | os.PathLike, n: int = 6) -> Path:
    """Write a PNG: one row per candidate; columns 2D (axial), the 3 channels of the 2.5D
    patch, and the centre axial slice of the 3D cube; titles give label and diameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    store = PatchStore(patches_dir)
    rows = _pick(store, n)
    mode = "orthogonal"
    summ = Path(patches_dir) / "summary.json"
    if summ.is_file():
        import json

        mode = json.loads(summ.read_text(encoding="utf-8")).get("params", {}).get("planes", mode)
    names = {"orthogonal": ["axial", "coronal", "sagittal"], "adjacent": ["z-1", "z", "z+1"],
             "axial": ["axial", "axial", "axial"]}[mode]
    axial_ch = 1 if mode == "adjacent" else 0
    planes, cubes = store.planes(rows), store.cubes(rows)
    fig, axes = plt.subplots(len(rows), 5, figsize=(10, 2.1 * len(rows)), squeeze=False)
    kw = {"cmap": "gray", "vmin": -1000, "vmax": 400}
    for r, (s, pl, cu) in enumerate(zip(rows, planes, cubes)):
        row = store.index.iloc[s]
        lab = "nodule" if row["label"] == 1 else "negative"
        diam = f", {row['diameter_mm']:.1f} mm" if row["label"] == 1 else ""
        imgs = [pl[axial_ch]] + [pl[i] for i in range(3)] + [cu[cu.shape[0] // 2]]
        titles = ["2D axial"] + [f"2.5D {nm}" for nm in names] + ["3D centre slice"]
        for c, (img, t) in enumerate(zip(imgs, titles)):
            ax = axes[r, c]
            ax.imshow(img, **kw)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(t, fontsize=8)
        axes[r, 0].set_ylabel(f"#{int(row['candidate'])} {lab}{diam}\n{row['split']}", fontsize=7)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
