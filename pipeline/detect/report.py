"""HTML report: per scan the top findings as axial / coronal / sagittal crops + a summary table.

Crops are cut from the ORIGINAL scan around each finding's voxel and shown in the standard
radiological orientation (patient left on the image right, superior up) whatever the scan's
direction matrix, with physical (mm) aspect, an HU window and a circle of the finding diameter.
PNGs go to ``<out>/report/``; ``report.html`` references them by relative path (open from disk).
"""
from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.io.geometry import Geometry
from pipeline.utils import tmp_prefix

WINDOW_HU = (-1000.0, 400.0)


def _canonical(crop_zyx: np.ndarray, geometry: Geometry, spacing_zyx: np.ndarray):
    """Reorder/flip index axes of a crop so array axes are world (z, y, x) increasing.

    Returns (array, spacing per world axis zyx, permutation world<-index, signs)."""
    d = geometry.direction_matrix  # columns: index axes x, y, z in world xyz
    axes_zyx = []  # for each index axis (z, y, x) the world axis (0 = z, 1 = y, 2 = x) it maps to
    signs = []
    for col in (2, 1, 0):
        w = int(np.argmax(np.abs(d[:, col])))
        axes_zyx.append(2 - w)
        signs.append(np.sign(d[w, col]) or 1.0)
    if sorted(axes_zyx) != [0, 1, 2]:  # oblique beyond recognition: keep index order
        axes_zyx, signs = [0, 1, 2], [1.0, 1.0, 1.0]
    order = [axes_zyx.index(w) for w in range(3)]  # index axis giving world axis w
    arr = np.transpose(crop_zyx, order)
    for w in range(3):
        if signs[order[w]] < 0:
            arr = np.flip(arr, axis=w)
    return arr, spacing_zyx[order], order, [signs[o] for o in order]


_LETTERS = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}
"""(left, right, top, bottom) edge letters of each view in the radiological display used here."""


def render_finding(array_zyx: np.ndarray, geometry: Geometry, index_zyx, diameter_mm: float, caption: str,
                   png: Path, half_mm: float = 32.0, window=WINDOW_HU, lesion=None) -> Path:
    """Axial / coronal / sagittal crops (±``half_mm``) around voxel ``index_zyx`` of the original scan,
    each with its orientation letters (R/L, A/P, S/I) and a 10 mm scale bar; the outline of
    ``lesion`` (a :class:`~pipeline.measure.segment.LesionMask` on the scan's grid) when given, else a
    circle of ``diameter_mm``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    from pipeline.patches.extract import crop_padded

    sp = np.asarray(geometry.spacing_zyx_mm, float)
    half = np.maximum(np.ceil(half_mm / sp).astype(int), 1)
    start = np.asarray(index_zyx, int) - half
    crop = crop_padded(array_zyx, start, 2 * half + 1, fill=int(window[0])).astype(np.float32)
    arr, wsp, _, _ = _canonical(crop, geometry, sp)
    outline = None
    if lesion is not None and not lesion.empty:
        full = np.zeros(crop.shape, np.float32)
        lo = np.asarray(lesion.start_zyx) - start
        src = tuple(slice(max(-a, 0), min(n, c - a)) for a, n, c in zip(lo, lesion.mask_zyx.shape, crop.shape))
        dst = tuple(slice(max(a, 0), max(a, 0) + (s.stop - s.start)) for a, s in zip(lo, src))
        if all(s.stop > s.start for s in src):
            full[dst] = lesion.mask_zyx[src]
        outline = _canonical(full, geometry, sp)[0]
    c = np.asarray(arr.shape) // 2  # the finding voxel is the crop centre
    views = [("axial", arr[c[0]], wsp[1], wsp[2], False),  # rows y (anterior up), cols x
             ("coronal", arr[:, c[1], :], wsp[0], wsp[2], True),  # rows z (superior up), cols x
             ("sagittal", arr[:, :, c[2]], wsp[0], wsp[1], True)]  # rows z, cols y
    masks = ([outline[c[0]], outline[:, c[1], :], outline[:, :, c[2]]] if outline is not None else [None] * 3)
    fig, axs = plt.subplots(1, 3, figsize=(9, 3.5), dpi=80)
    for ax, (name, img, sr, sc, up), m in zip(axs, views, masks):
        h, w = img.shape
        ext = (-(w // 2 + 0.5) * sc, (w - w // 2 - 0.5) * sc, (h - h // 2 - 0.5) * sr, -(h // 2 + 0.5) * sr)
        if up:
            img, ext = img[::-1], (ext[0], ext[1], -ext[2], -ext[3])
            m = m[::-1] if m is not None else None
        ax.imshow(img, cmap="gray", vmin=window[0], vmax=window[1], extent=ext, interpolation="bilinear")
        if m is not None and m.any():
            ax.contour(m, levels=[0.5], colors="#ffcc00", linewidths=1.0, extent=ext, origin="upper")
        else:
            ax.add_patch(Circle((0, 0), max(diameter_mm / 2.0, 1.0) + 2.0, fill=False, color="#ffcc00", lw=1.2))
        x0 = min(ext[0], ext[1])
        y0, y1 = min(ext[2], ext[3]), max(ext[2], ext[3])
        bar_y = y1 - 0.08 * (y1 - y0) if not up else y0 + 0.08 * (y1 - y0)
        ax.plot([x0 + 3, x0 + 13], [bar_y, bar_y], color="white", lw=2)
        ax.text(x0 + 8, bar_y, "10 mm", color="white", fontsize=7, ha="center",
                va="bottom" if not up else "top")
        left, right, top, bottom = _LETTERS[name]
        kw = {"color": "#66ccff", "fontsize": 9, "fontweight": "bold", "transform": ax.transAxes}
        ax.text(0.02, 0.5, left, ha="left", va="center", **kw)
        ax.text(0.98, 0.5, right, ha="right", va="center", **kw)
        ax.text(0.5, 0.98, top, ha="center", va="top", **kw)
        ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **kw)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(caption, fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f"{tmp_prefix(png.name)}png")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(png)
    return png


def _caption(k: int, row) -> str:
    head = f"#{k + 1}  p={row['probability']:.3f} (seg {row['seg_score']:.2f}, cls {row['cls_score']:.2f})"
    if isinstance(row.get("type"), str) and row.get("type"):
        return (f"{head}  {row['type']}, mean {row['mean_diameter_mm']:.1f} mm "
                f"({row['long_axis_mm']:.1f} x {row['short_axis_mm']:.1f}), {row['volume_mm3']:.0f} mm3, "
                f"Lung-RADS* {row['lungrads']}\nimage {int(row['image_number'])}, {row['side']}, "
                f"x,y,z=({row['coordX']:.1f}, {row['coordY']:.1f}, {row['coordZ']:.1f}) mm   "
                "*research aid, not a clinical category")
    return (f"{head}  d={row['diameter_mm']:.1f} mm  "
            f"x,y,z=({row['coordX']:.1f}, {row['coordY']:.1f}, {row['coordZ']:.1f}) mm")


def render_scan(array_zyx: np.ndarray, geometry: Geometry, findings: pd.DataFrame, report_dir: Path,
                scan_id: str, top: int = 20, masks: list | None = None) -> list[str]:
    """PNG names (relative to the report folder's parent) of the findings' crops (at most ``top``),
    each with its lesion outline from ``masks`` (same order as ``findings``) when measured."""
    names = []
    for k, row in findings.head(top).reset_index(drop=True).iterrows():
        png = Path(report_dir) / f"{scan_id}_{k + 1}.png"
        lesion = masks[k] if masks and k < len(masks) else None
        half = max(32.0, 0.75 * float(row.get("long_axis_mm") or 0.0) + 10.0) if lesion is not None else 32.0
        render_finding(array_zyx, geometry, (row["index_z"], row["index_y"], row["index_x"]),
                       float(row["diameter_mm"]), _caption(k, row), png, half_mm=half, lesion=lesion)
        names.append(f"{Path(report_dir).name}/{png.name}")
    return names


def _fmt(v, nd=3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.{nd}f}" if isinstance(v, float) else html.escape(str(v))


def _digits(col: str) -> int:
    return 3 if col in ("probability", "seg_score", "cls_score") else \
        0 if col.startswith("volume") or col == "image_number" else \
        2 if col.startswith("coord") else 1


def write_report(path: Path, records: list[dict], errors: pd.DataFrame, run_info: dict,
                 studies: pd.DataFrame | None = None) -> Path:
    """``report.html``: per-study summary (``studies``: :func:`pipeline.detect.studies.studies_table`),
    summary table (one row per scan), errors, then per scan its findings + crops and its files for
    viewers (Slicer markups; DICOM SEG / SR with ``--dicom-out``)."""
    from pipeline.utils import atomic_path

    e = html.escape
    style = ("body{font-family:sans-serif;margin:1.5em;max-width:1100px}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
             "td.l,th.l{text-align:left}img{max-width:100%;display:block;margin:4px 0 12px}")
    c = run_info.get("counts", {})
    n_fail = c.get("failed", len(errors))
    dup = f" ({c['duplicates']} more path(s) named a scan already listed)" if c.get("duplicates") else ""
    intro = (f"{c.get('inputs', '?')} path(s) given{dup}: {c.get('scans', len(records) + n_fail)} scan(s), "
             f"{len(records)} done, {n_fail} failed; {c.get('bad_arguments', 0)} path(s) held no scan; "
             f"combine = {e(str(run_info.get('config', {}).get('combine')))}. Research software: not for "
             "clinical use. Measurements, types and Lung-RADS v2022 categories (*) are research aids computed "
             "from size and type alone, not clinical categories.")
    head = ("<h2>Summary</h2><table><tr><th class='l'>scan</th><th>findings</th><th>highest Lung-RADS*</th>"
            "<th>top p</th><th>top diameter (mm)</th></tr>")
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Nodule detection report</title>",
             f"<style>{style}</style></head><body>", "<h1>Nodule detection report</h1>"]
    if run_info.get("warning"):
        parts.append("<p style='background:#c0392b;color:#fff;padding:8px 12px;font-weight:bold'>Warning: "
                     f"{e(run_info['warning'])}.</p>")
    parts.append(f"<p>{intro}</p>")
    if studies is not None and len(studies):
        parts.append("<h2>Studies</h2><table><tr><th class='l'>study</th><th>scans</th><th>findings</th>"
                     "<th>largest (mean mm)</th><th class='l'>its type</th><th>highest Lung-RADS*</th></tr>")
        parts += [f"<tr><td class='l'>{e(str(s.study))}</td><td>{s.scans}</td><td>{s.findings}</td>"
                  f"<td>{_fmt(s.largest_mean_diameter_mm, 1)}</td><td class='l'>{e(str(s.largest_type or ''))}</td>"
                  f"<td>{e(str(s.highest_lungrads or '–'))}</td></tr>" for s in studies.itertuples()]
        parts.append("</table>")
    parts.append(head)
    for r in records:
        f = r["findings"]
        top = f[0] if f else {}
        parts.append(f"<tr><td class='l'><a href='#{e(r['id'])}'>{e(r['scan'])}</a></td><td>{len(f)}</td>"
                     f"<td>{e(str(r.get('lungrads_highest') or '–'))}</td>"
                     f"<td>{_fmt(top.get('probability'))}</td><td>{_fmt(top.get('diameter_mm'), 1)}</td></tr>")
    parts.append("</table>")
    if len(errors):
        parts.append("<h2>Scans that failed</h2><table><tr><th class='l'>scan</th><th class='l'>reason</th></tr>")
        parts += [f"<tr><td class='l'>{e(str(s))}</td><td class='l'>{e(str(m))}</td></tr>"
                  for s, m in zip(errors["scan"], errors["reason"])]
        parts.append("</table>")
    cols = ["probability", "type", "lungrads", "mean_diameter_mm", "long_axis_mm", "short_axis_mm", "volume_mm3",
            "solid_mean_diameter_mm", "image_number", "side", "coordX", "coordY", "coordZ", "seg_score", "cls_score"]
    for r in records:
        cat = r.get("lungrads_highest")
        parts.append(f"<h2 id='{e(r['id'])}'>{e(r['scan'])}</h2><p>series {e(str(r['seriesuid']))}, "
                     f"{r['n_candidates']} candidate(s) scored"
                     + (f"; highest Lung-RADS* category <b>{e(cat)}</b>" if cat else "") + "</p>")
        files = [f"markups/{r['id']}.mrk.json"] + [v for k, v in (r.get("dicom") or {}).items() if k in ("seg", "sr")]
        parts.append("<p>For viewers: " + ", ".join(f"<a href='{e(p)}'>{e(p)}</a>" for p in files)
                     + " (3D Slicer markups, LPS; DICOM SEG / SR)</p>")
        if r["findings"]:
            parts.append("<table><tr><th>#</th>" + "".join(f"<th>{c}</th>" for c in cols) +
                         "<th>voxel (z, y, x)</th></tr>")
            for k, f in enumerate(r["findings"]):
                parts.append(f"<tr><td>{k + 1}</td>" + "".join(f"<td>{_fmt(f.get(c), _digits(c))}</td>"
                                                               for c in cols) +
                             f"<td>({f['index_z']}, {f['index_y']}, {f['index_x']})</td></tr>")
            parts.append("</table>")
        parts += [f"<img src='{e(png)}' alt='finding crops'>" for png in r.get("crops", [])]
    parts.append("</body></html>")
    with atomic_path(path) as tmp:  # UTF-8 whatever the locale: paths may hold any character
        tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return Path(path)


def add_explain_images(path: Path, images: dict[str, str]) -> Path:
    """Insert each finding's saliency PNG (``detect --explain``) after its crop in ``report.html``.

    ``images``: crop name as the report references it (``report/<id>_<k>.png``) -> saliency PNG path;
    the saliency PNG is referenced relative to the report's folder."""
    from pipeline.utils import atomic_path

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    for crop, png in images.items():
        tag = f"<img src='{html.escape(crop)}' alt='finding crops'>"
        rel = Path(os.path.relpath(Path(png).resolve(), path.parent.resolve())).as_posix()
        text = text.replace(tag, f"{tag}\n<img src='{html.escape(rel)}' alt='saliency (what the classifier "
                                 "looked at)'>", 1)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
