"""PNGs of the explain stage: per-sample saliency, the contact sheet, the feature space before /
after transfer and the first convolution's filters before / after. Matplotlib (Agg), atomic writes.

Patches: planes ``(3, P, P)`` HU (axial, coronal, sagittal for ``planes: orthogonal``; the map of a
2D input is one ``(P, P)`` map shared by the three input planes) or cubes ``(1, S, S, S)`` / ``(S, S, S)``
HU (z, y, x; the map ``(S, S, S)`` is shown through the centre slices).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

WINDOW_HU = (-1000.0, 400.0)
PLANES = ("axial", "coronal", "sagittal")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, png: Path) -> Path:
    from pipeline.utils import atomic_path

    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(png, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    _plt().close(fig)
    return png


def views(patch: np.ndarray, smap: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(plane name, image HU (H, W), map (H, W))`` for the three planes of one patch."""
    patch = np.asarray(patch, np.float32)
    if patch.ndim == 3 and smap.ndim == 2:  # 2D planes, one map for all three input channels
        return [(PLANES[k], patch[k], smap) for k in range(3)]
    cube = patch[0] if patch.ndim == 4 else patch
    c = np.asarray(cube.shape) // 2
    return [("axial", cube[c[0]], smap[c[0]]), ("coronal", cube[:, c[1]], smap[:, c[1]]),
            ("sagittal", cube[:, :, c[2]], smap[:, :, c[2]])]


def _norm(m: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(m)), float(np.max(m))
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def _overlay(ax, img, smap, title=""):
    ax.imshow(img, cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1], interpolation="nearest")
    if smap is not None:
        ax.imshow(_norm(smap), cmap="jet", alpha=0.4, vmin=0, vmax=1, interpolation="bilinear")
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def sample_figure(png: Path, patch: np.ndarray, maps: dict[str, np.ndarray], caption: str,
                  radius_px: float | None = None) -> Path:
    """One sample: row 1 the three input planes, then per method the map over each plane."""
    from matplotlib.patches import Circle

    plt = _plt()
    rows = 1 + len(maps)
    fig, axs = plt.subplots(rows, 3, figsize=(6, 2.1 * rows), dpi=80, squeeze=False)
    first = next(iter(maps.values()))
    for j, (name, img, _) in enumerate(views(patch, first)):
        _overlay(axs[0, j], img, None, name)
        if radius_px:
            c = (np.asarray(img.shape) - 1) / 2.0
            axs[0, j].add_patch(Circle((c[1], c[0]), radius_px, fill=False, color="#ffcc00", lw=0.8))
    for i, (method, m) in enumerate(maps.items(), start=1):
        for j, (name, img, sm) in enumerate(views(patch, m)):
            _overlay(axs[i, j], img, sm, f"{method} ({name})")
    fig.suptitle(caption, fontsize=8)
    fig.tight_layout()
    return _save(fig, png)


def contact_sheet(png: Path, patches: np.ndarray, maps: dict[str, np.ndarray], captions: list[str],
                  per_row: int = 4) -> Path:
    """Grid of samples, each as (axial input, axial overlay per method)."""
    plt = _plt()
    n, methods = len(patches), list(maps)
    block = 1 + len(methods)
    nrow = max(1, -(-n // per_row))
    fig, axs = plt.subplots(nrow, per_row * block, figsize=(1.3 * per_row * block, 1.5 * nrow), dpi=80,
                            squeeze=False)
    for ax in axs.ravel():
        ax.axis("off")
    for k in range(n):
        r, c0 = divmod(k, per_row)
        name, img, _ = views(patches[k], maps[methods[0]][k])[0]
        _overlay(axs[r, c0 * block], img, None, captions[k])
        axs[r, c0 * block].axis("on")
        for j, meth in enumerate(methods, start=1):
            _, img, sm = views(patches[k], maps[meth][k])[0]
            _overlay(axs[r, c0 * block + j], img, sm, meth)
            axs[r, c0 * block + j].axis("on")
    fig.suptitle(f"saliency on nodule patches ({name} plane; input, then {', '.join(methods)} overlay)",
                 fontsize=9)
    fig.tight_layout()
    return _save(fig, png)


def feature_space_figure(png: Path, before: dict[str, np.ndarray], after: dict[str, np.ndarray],
                         labels: np.ndarray, titles: tuple[str, str], aucs: tuple[float, float],
                         suptitle: str = "") -> Path:
    """2 x 2: rows PCA / t-SNE, columns before / after transfer; points coloured by label."""
    plt = _plt()
    fig, axs = plt.subplots(2, 2, figsize=(9, 8), dpi=80)
    lab = np.asarray(labels).astype(int)
    for j, (emb, title, auc) in enumerate(zip((before, after), titles, aucs)):
        for i, kind in enumerate(("pca", "tsne")):
            ax = axs[i, j]
            for y, color, name in ((0, "#4477aa", "non-nodule"), (1, "#ee6677", "nodule")):
                pts = emb[kind][lab == y]
                ax.scatter(pts[:, 0], pts[:, 1], s=6 if y == 0 else 12, c=color, alpha=0.6, label=name,
                           linewidths=0)
            ax.set_title(f"{title}\n{'PCA' if kind == 'pca' else 't-SNE'}, linear-probe AUC {auc:.3f}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    axs[0, 0].legend(fontsize=8, loc="best")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return _save(fig, png)


def _tiles(w: np.ndarray) -> np.ndarray:
    """Filters ``(out, in, k, k[, k])`` -> displayable ``(out, k, k, 3|1)`` (centre slice for 3D)."""
    if w.ndim == 5:
        w = w[:, :, w.shape[2] // 2]
    t = np.moveaxis(w, 1, -1)
    return t if t.shape[-1] in (1, 3) else t.mean(-1, keepdims=True)


def filters_figure(png: Path, before: np.ndarray, after: np.ndarray, name: str, max_filters: int = 32,
                   note: str = "") -> Path:
    """Rows: first-conv filters before, after, and |after - before| (shared scale per row)."""
    plt = _plt()
    tb, ta = _tiles(before)[:max_filters], _tiles(after)[:max_filters]
    diff = np.abs(ta - tb)
    n = len(tb)
    fig, axs = plt.subplots(3, n, figsize=(max(6.0, 0.45 * n), 2.2), dpi=100, squeeze=False)
    scale = float(max(np.abs(tb).max(), np.abs(ta).max(), 1e-12))
    dmax = float(diff.max())
    for j in range(n):
        for i, (tile, title) in enumerate(((tb[j], "before"), (ta[j], "after"))):
            img = np.clip(tile / (2 * scale) + 0.5, 0, 1)
            axs[i, j].imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1,
                             interpolation="nearest")
        d = diff[j].mean(-1) / dmax if dmax > 0 else diff[j].mean(-1)
        axs[2, j].imshow(d, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        for i in range(3):
            axs[i, j].set_xticks([])
            axs[i, j].set_yticks([])
    for i, label in enumerate(("before", "after", "|change|")):
        axs[i, 0].set_ylabel(label, fontsize=7)
    fig.suptitle(f"{name}: first-convolution filters before / after fine-tuning "
                 f"(max |change| {dmax:.3g}, max |weight| {scale:.3g}){note}", fontsize=8)
    fig.tight_layout()
    return _save(fig, png)
