"""Exact, fast replacements for the two slow steps of the lung mask (bool arrays, axis order z, y, x).

* :func:`hull_or_fill`: per axial slice, the pixel convex hull of
  ``skimage.morphology.convex_hull_image`` (pixels as diamonds of half-pixel radius, hull
  borders included) or the hole-filled slice, chosen by the hull-to-area ratio. The hull is
  rasterised row by row with exact integer arithmetic (coordinates doubled so every vertex is
  an integer) instead of testing every pixel against the polygon, and holes are only filled on
  the slices whose choice depends on them. Same pixels as the reference, not an approximation.
* :func:`dilate_ball`: dilation by the Euclidean ball ``{d : |d * spacing| <= r}`` (what
  ``distance_transform_edt(~mask, sampling) <= r`` computes), as an OR of shifted copies: the
  x-dilations by each needed half-width, bit-packed along x, then shifted in y and z. The
  ball is not separable, but it is a union of x-runs, one per (dz, dy), which is exact.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError


def _hull_rows(rows: np.ndarray, xl: np.ndarray, xr: np.ndarray, out_rows: np.ndarray):
    """Pixel interval [lo, hi] per row in ``out_rows`` of the closed convex hull of the diamonds
    (a pixel's four edge midpoints, as convex_hull_image) of the pixels (rows[i], xl[i]) and
    (rows[i], xr[i]) (the row extremes: the hull of every pixel of the slice). Returns (lo, hi)
    int64 arrays, or None when Qhull fails (never for diamonds; the reference then keeps the
    filled slice)."""
    # diamonds of the row extremes, doubled: (2r, 2xl - 1) and (2r, 2xr + 1) on the row, and on
    # each line between rows (odd 2r +- 1) only its leftmost and rightmost point (the others
    # lie between them): the same hull as all points, and no repeated point (as skimage).
    y0 = int(out_rows[0])
    big = np.iinfo(np.int64).max // 8
    lft = np.full(len(out_rows) + 2, big, dtype=np.int64)
    rgt = np.full(len(out_rows) + 2, -big, dtype=np.int64)
    lft[rows - y0 + 1], rgt[rows - y0 + 1] = xl, xr
    lmin, lmax = np.minimum(lft[:-1], lft[1:]), np.maximum(rgt[:-1], rgt[1:])
    k = np.nonzero(lmin < big)[0]
    kk = k[lmax[k] != lmin[k]]
    pts = np.concatenate([
        np.stack([2 * rows, 2 * xl - 1], 1), np.stack([2 * rows, 2 * xr + 1], 1),
        np.stack([2 * (y0 + k) - 1, 2 * lmin[k]], 1), np.stack([2 * (y0 + kk) - 1, 2 * lmax[kk]], 1)])
    try:
        hull = ConvexHull(pts.astype(np.float64))
    except QhullError:  # degenerate input: the reference gets an empty hull
        return None
    v = pts[hull.vertices]  # convex polygon, vertices in order around it
    k = len(v)
    i0 = int(np.lexsort((v[:, 1], v[:, 0]))[0])  # lowest row (then leftmost)
    i1 = int(np.lexsort((-v[:, 1], v[:, 0]))[-1])  # highest row (then leftmost)
    fwd = v[(i0 + np.arange((i1 - i0) % k + 1)) % k]  # the two monotone chains i0 -> i1
    bwd = v[(i0 - np.arange((i0 - i1) % k + 1)) % k]
    Y = 2 * out_rows
    lo = hi = None
    for c in (fwd, bwd):
        j = np.clip(np.searchsorted(c[:, 0], Y, side="right") - 1, 0, len(c) - 2)
        y1, x1, y2, x2 = c[j, 0], c[j, 1], c[j + 1, 0], c[j + 1, 1]
        flat = y1 == y2  # only at a chain's ends: its first vertex is the crossing
        den = np.where(flat, 1, y2 - y1)
        num = np.where(flat, x1, x1 * den + (Y - y1) * (x2 - x1))  # crossing at x = num / den
        clo, chi = -((-num) // (2 * den)), num // (2 * den)  # ceil / floor of the pixel x
        for jv in (np.searchsorted(c[:, 0], Y, side="left"), j + 1):  # vertices on the row
            jv = np.minimum(jv, len(c) - 1)
            on = c[jv, 0] == Y
            clo = np.where(on, np.minimum(clo, -((-c[jv, 1]) // 2)), clo)
            chi = np.where(on, np.maximum(chi, c[jv, 1] // 2), chi)
        lo, hi = (clo, chi) if lo is None else (np.minimum(lo, clo), np.maximum(hi, chi))
    return lo, hi


def hull_or_fill(comp: np.ndarray, hull_ratio: float) -> np.ndarray:
    """Per axial slice of one component (bool, z, y, x): its convex hull when the hull is at
    most ``hull_ratio`` times the hole-filled slice's area, else the hole-filled slice
    (``hull_ratio <= 0``: always the filled slice). Holes are filled with
    ``ndi.binary_fill_holes`` (4-connected background) on the slice's bounding box."""
    out = np.zeros_like(comp, dtype=bool)
    nx = comp.shape[2]
    anyrow = comp.any(axis=2)
    first = comp.argmax(axis=2)
    last = nx - 1 - comp[:, :, ::-1].argmax(axis=2)
    counts = comp.sum(axis=(1, 2))
    xs = np.arange(nx)
    for z in np.nonzero(counts)[0]:
        rows = np.nonzero(anyrow[z])[0]
        y0, y1 = int(rows[0]), int(rows[-1]) + 1
        x0, x1 = int(first[z, rows].min()), int(last[z, rows].max()) + 1
        sl = comp[z, y0:y1, x0:x1]
        filled = None
        if hull_ratio > 0 and counts[z] >= 3:
            span = np.arange(y0, y1)
            iv = _hull_rows(rows, first[z, rows], last[z, rows], span)
            if iv is not None:
                lo, hi = iv
                hull_sum = np.maximum(hi - lo + 1, 0).sum()
                if not hull_sum <= hull_ratio * counts[z]:  # needs the filled area to decide
                    filled = ndi.binary_fill_holes(sl)
                if filled is None or hull_sum <= hull_ratio * filled.sum():
                    out[z, y0:y1] = (xs >= lo[:, None]) & (xs <= hi[:, None])
                    continue
        out[z, y0:y1, x0:x1] = ndi.binary_fill_holes(sl) if filled is None else filled
    return out


def ball_halfwidths(radius_mm: float, spacing_zyx_mm: Sequence[float]) -> dict[tuple[int, int], int]:
    """{(|dz|, |dy|): largest |dx|} of the offsets with ``sqrt((dz*sz)^2 + (dy*sy)^2 + (dx*sx)^2)
    <= radius_mm``, evaluated in float64 in the same order as ``distance_transform_edt``."""
    sz, sy, sx = (float(s) for s in spacing_zyx_mm)
    r = float(radius_mm)
    out: dict[tuple[int, int], int] = {}
    for dz in range(int(np.ceil(r / sz)) + 2):
        for dy in range(int(np.ceil(r / sy)) + 2):
            best = -1
            for dx in range(int(np.ceil(r / sx)) + 2):
                d = np.sqrt((float(dz) * sz) ** 2 + (float(dy) * sy) ** 2 + (float(dx) * sx) ** 2)
                if d <= r:
                    best = dx
            if best >= 0:
                out[(dz, dy)] = best
    return out


def _or_shifted(dst: np.ndarray, src: np.ndarray, d: int, axis: int) -> None:
    """dst[i] |= src[i - d] along ``axis`` (entries shifted in from outside are False)."""
    n = dst.shape[axis]
    if abs(d) >= n:
        return
    a = [slice(None)] * dst.ndim
    b = [slice(None)] * dst.ndim
    a[axis] = slice(max(d, 0), n + min(d, 0))
    b[axis] = slice(max(-d, 0), n - max(d, 0))
    dst[tuple(a)] |= src[tuple(b)]


def dilate_ball(mask_zyx: np.ndarray, radius_mm: float, spacing_zyx_mm: Sequence[float]) -> np.ndarray:
    """Dilation of a bool (z, y, x) mask by the Euclidean ball of ``radius_mm`` (voxel size
    ``spacing_zyx_mm`` in mm); voxels outside the array do not exist (no wrap-around)."""
    hw = ball_halfwidths(radius_mm, spacing_zyx_mm)
    nx = mask_zyx.shape[2]
    xdil = {0: np.ascontiguousarray(mask_zyx, dtype=bool)}
    for w in range(1, max(hw.values()) + 1):
        prev = xdil[w - 1]
        cur = prev.copy()
        _or_shifted(cur, prev, 1, 2)
        _or_shifted(cur, prev, -1, 2)
        xdil[w] = cur
    packed = {w: np.packbits(a, axis=2) for w, a in xdil.items() if w in set(hw.values())}
    del xdil
    out = np.zeros_like(next(iter(packed.values())))
    for dz in sorted({k[0] for k in hw}):
        disk = np.zeros_like(out)
        for (kz, dy), w in hw.items():
            if kz != dz:
                continue
            for s in {dy, -dy}:
                _or_shifted(disk, packed[w], s, 1)
        for s in {dz, -dz}:
            _or_shifted(out, disk, s, 0)
    return np.unpackbits(out, axis=2, count=nx).view(bool)
