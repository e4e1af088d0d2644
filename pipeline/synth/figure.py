"""Picture of synthetic (or real) LUNA16 scans: axial + coronal slices through a nodule.

Slices are drawn in world millimetres (``imshow`` extents from :class:`Geometry`), so flipped
index axes are undone: axial views are in radiological convention (patient LEFT on image
RIGHT, anterior at the top), coronal views have patient left on the right and superior at the top.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.io.geometry import Geometry
from pipeline.io.luna16 import index_root, read_annotations
from pipeline.io.scans import read_scan

WINDOW_HU = (-1000, 400)


def _axis_mm(geom: Geometry, arr_axis: int, world_axis: int) -> np.ndarray:
    n = geom.shape_zyx[arr_axis]
    pts = np.zeros((n, 3))
    pts[:, arr_axis] = np.arange(n)
    return geom.voxel_zyx_to_world(pts)[:, world_axis]


def _extent(coords: np.ndarray) -> tuple[float, float]:
    h = (coords[-1] - coords[0]) / max(len(coords) - 1, 1) / 2 if len(coords) > 1 else 0.5
    return float(coords[0] - h), float(coords[-1] + h)


def _header_flipped(path: str) -> bool:
    import SimpleITK as sitk

    r = sitk.ImageFileReader()
    r.SetFileName(path)
    r.ReadImageInformation()
    return not np.allclose(np.asarray(r.GetDirection()).reshape(3, 3), np.eye(3))


def _panel(ax_axial, ax_cor, scan, nodules, target) -> None:
    from matplotlib.patches import Circle

    g = scan.geometry
    if not g.is_identity_direction and not np.allclose(np.abs(g.direction_matrix), np.eye(3)):
        raise ValueError(f"{scan.path}: only axis-aligned directions can be displayed")
    k, j, _ = np.clip(g.world_to_nearest_voxel_zyx(target), 0, np.asarray(g.shape_zyx) - 1)
    xs, ys, zs = _axis_mm(g, 2, 0), _axis_mm(g, 1, 1), _axis_mm(g, 0, 2)
    kw = {"cmap": "gray", "vmin": WINDOW_HU[0], "vmax": WINDOW_HU[1], "origin": "upper",
          "interpolation": "nearest"}
    xl, xr = _extent(xs)
    yt, yb = _extent(ys)
    ax_axial.imshow(scan.array_zyx[k], extent=(xl, xr, yb, yt), **kw)
    ax_axial.set_xlim(min(xl, xr), max(xl, xr))
    ax_axial.set_ylim(max(yt, yb), min(yt, yb))  # anterior (-y) at the top
    zt, zb = _extent(zs)
    ax_cor.imshow(scan.array_zyx[:, j, :], extent=(xl, xr, zb, zt), **kw)
    ax_cor.set_xlim(min(xl, xr), max(xl, xr))
    ax_cor.set_ylim(min(zt, zb), max(zt, zb))  # superior (+z) at the top
    zc, yc = g.voxel_zyx_to_world([k, j, 0])[2], g.voxel_zyx_to_world([k, j, 0])[1]
    for n in nodules.itertuples():
        r = n.diameter_mm / 2
        for ax, (a, b), d in ((ax_axial, (n.coordX, n.coordY), n.coordZ - zc), (ax_cor, (n.coordX, n.coordZ), n.coordY - yc)):
            if abs(d) < r:
                ax.add_patch(Circle((a, b), np.sqrt(r * r - d * d) + 1.5, fill=False, color="red", lw=1))
    uid = scan.seriesuid
    short = f"{uid[:8]}...{uid[-8:]}" if len(uid) > 20 else uid
    sp = "x".join(f"{s:.3g}" for s in g.spacing_xyz_mm)
    dirn = "identity" if g.is_identity_direction else "diag(" + ",".join(
        f"{v:+.0f}" for v in np.diag(g.direction_matrix)) + ")"
    ax_axial.set_title(f"{short} axial z={zc:.1f} mm\nspacing {sp} mm, direction {dirn}", fontsize=8)
    ax_cor.set_title(f"coronal y={yc:.1f} mm (superior up)", fontsize=8)
    for ax in (ax_axial, ax_cor):
        ax.set_xlabel("x mm (patient left ->)", fontsize=7)
        ax.tick_params(labelsize=6)


def plot_scan(root: str | Path, out_png: str | Path, seriesuid: str | None = None) -> Path:
    """Write a PNG: per scan an axial and a coronal slice through its largest nodule, nodules circled.

    Picks ``seriesuid`` (or the scan with the largest nodule) and, when one exists, a scan with a
    flipped direction that has a nodule (2 x 2 panels). Window [-1000, 400] HU.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(root)
    index = index_root(root)
    ann_path = root / "annotations.csv"
    ann = read_annotations(ann_path) if ann_path.is_file() else None
    ann = ann[ann["seriesuid"].isin(index["seriesuid"])] if ann is not None else None
    chosen: list[str] = []
    if seriesuid:
        chosen.append(seriesuid)
    elif ann is not None and len(ann):
        chosen.append(ann.sort_values("diameter_mm", ascending=False)["seriesuid"].iloc[0])
    else:
        chosen.append(index["seriesuid"].iloc[0])
    with_nod = list(dict.fromkeys(ann.sort_values("diameter_mm", ascending=False)["seriesuid"])) if ann is not None else []
    paths = dict(zip(index["seriesuid"], index["path"]))
    # second scan: one with a nodule whose direction differs (flipped vs identity) from the first
    first_flipped = _header_flipped(paths[chosen[0]])
    others = [u for u in with_nod if u != chosen[0] and u in paths]
    pick = next((u for u in others if _header_flipped(paths[u]) != first_flipped), others[0] if others else None)
    if pick:
        chosen.append(pick)
    fig, axes = plt.subplots(len(chosen), 2, figsize=(9, 4.3 * len(chosen)), squeeze=False)
    for row, uid in zip(axes, chosen):
        scan = read_scan(paths[uid])
        nods = ann[ann["seriesuid"] == uid] if ann is not None else None
        if nods is not None and len(nods):
            big = nods.sort_values("diameter_mm").iloc[-1]
            target = np.array([big.coordX, big.coordY, big.coordZ])
        else:
            target = scan.geometry.center_xyz_mm()
        _panel(row[0], row[1], scan, nods.iloc[0:0] if nods is None else nods, target)
    fig.suptitle("synthetic LUNA16 scans: axial in radiological convention (patient left on image right), "
                 "annotated nodules circled", fontsize=9)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    from pipeline.utils import atomic_path

    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return out
