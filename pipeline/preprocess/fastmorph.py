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

BIG = np.iinfo(np.int64).max // 8


def hull_intervals(anyrow: np.ndarray, first: np.ndarray, last: np.ndarray,
                   eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row intervals of the per-slice pixel convex hulls of a component, all slices at once.

    Args:
        anyrow: (z, y) bool, the row holds a pixel of the slice.
        first, last: (z, y) int, the row's leftmost / rightmost pixel x (where ``anyrow``).
        eligible: (z,) bool, slices to hull (the others get no hull).

    Returns:
        ``(lo, hi, ok)``: (z, y) int64 pixel x range ``[lo, hi]`` of the hull on each row
        (empty where ``hi < lo``) and (z,) bool ``ok``: the slice was hulled.

    The hull is that of ``skimage.morphology.convex_hull_image``: the hull of the pixels'
    diamonds (edge midpoints). Coordinates are doubled so every point is an integer. Only the
    row extremes matter: on each level (a row, y = 2r, or the line between two rows, y = 2r - 1)
    the leftmost and the rightmost point. The hull's left boundary is the convex minorant of the
    left points (Andrew's monotone chain), the right boundary the concave majorant of the right
    points; the chains of all slices are built in lockstep, one level at a time, as array
    operations over the slices. On row ``Y`` a chain edge from ``(y1, x1)`` to ``(y2, x2)``
    crosses at ``x = (x1 (y2 - y1) + (Y - y1)(x2 - x1)) / (y2 - y1)`` (exact integers); the row's
    pixels run from the ceiling of the left crossing / 2 to the floor of the right one / 2.
    """
    nz, ny = anyrow.shape
    present = anyrow & eligible[:, None]
    lft = np.where(present, first, BIG).astype(np.int64)
    rgt = np.where(present, last, -BIG).astype(np.int64)
    pad_l = np.pad(lft, ((0, 0), (1, 1)), constant_values=BIG)
    pad_r = np.pad(rgt, ((0, 0), (1, 1)), constant_values=-BIG)
    # levels y = -1, 0, 1, ..., 2 ny - 1 (doubled): lines between rows (odd) and rows (even)
    n_lev = 2 * ny + 1
    xl = np.full((nz, n_lev), BIG, dtype=np.int64)
    xr = np.full((nz, n_lev), -BIG, dtype=np.int64)
    xl[:, 0::2] = np.minimum(pad_l[:, :-1], pad_l[:, 1:]) * 2
    xr[:, 0::2] = np.maximum(pad_r[:, :-1], pad_r[:, 1:]) * 2
    xl[:, 1::2] = np.where(present, 2 * lft - 1, BIG)
    xr[:, 1::2] = np.where(present, 2 * rgt + 1, -BIG)
    has = xl < BIG
    lo = np.full((nz, ny), BIG, dtype=np.int64)
    hi = np.full((nz, ny), -BIG, dtype=np.int64)
    ok = eligible & has.any(axis=1)  # diamonds always span 2-D: never a degenerate hull
    zs = np.nonzero(ok)[0]
    if not len(zs):
        return lo, hi, ok
    has, xl, xr = has[zs], xl[zs], xr[zs]
    for xs_, side, out, rnd in ((xl, 1, lo, np.minimum), (xr, -1, hi, np.maximum)):
        sy, sx, size = _chains(has, xs_, side)
        j = np.arange(n_lev)[None, :]
        e = j < size[:, None] - 1
        ez, ej = np.nonzero(e)
        y1, x1, y2, x2 = sy[ez, ej], sx[ez, ej], sy[ez, ej + 1], sx[ez, ej + 1]
        r0, r1 = -((-y1) // 2), y2 // 2  # pixel rows (Y = 2r) on the edge, end rows included
        n = np.maximum(r1 - r0 + 1, 0)
        k = np.repeat(np.arange(len(ez)), n)
        row = r0[k] + (np.arange(len(k)) - np.repeat(np.cumsum(n) - n, n))
        den = y2[k] - y1[k]
        num = x1[k] * den + (2 * row - y1[k]) * (x2[k] - x1[k])
        px = -((-num) // (2 * den)) if side == 1 else num // (2 * den)  # ceil (left) / floor (right)
        rnd.at(out, (zs[ez[k]], row), px)
    return lo, hi, ok


def _chains(has: np.ndarray, x: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Monotone-chain hull side of the points (level y = j - 1, x[s, j]) where ``has[s, j]``, for
    every row ``s`` at once: ``side`` 1 = the convex minorant (left boundary), -1 = the concave
    majorant (right). Returns the chain vertices' doubled y and x, (s, levels) each, and their
    count per row."""
    ns, nl = x.shape
    sy = np.zeros((ns, nl), dtype=np.int64)
    sx = np.zeros((ns, nl), dtype=np.int64)
    fy, fx = sy.reshape(-1), sx.reshape(-1)  # flat views: 1-D gathers are much cheaper than 2-D
    size = np.zeros(ns, dtype=np.int64)
    base = np.arange(ns) * nl
    for j in range(nl):
        act = has[:, j]
        if not act.any():
            continue
        s = np.nonzero(act)[0]
        by, bx = j - 1, x[s, j]
        while True:  # pop the last vertex while it is not strictly outside the chord to the new point
            m = size[s] >= 2
            if not m.any():
                break
            t = s[m]
            i1 = base[t] + size[t] - 1
            i0 = i1 - 1
            oy, ox = fy[i0], fx[i0]
            cross = (fx[i1] - ox) * (by - oy) - (bx[m] - ox) * (fy[i1] - oy)
            pop = side * cross >= 0
            if not pop.any():
                break
            size[t[pop]] -= 1
        i = base[s] + size[s]
        fy[i] = by
        fx[i] = bx
        size[s] += 1
    return sy, sx, size


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
    if hull_ratio > 0:
        lo, hi, ok = hull_intervals(anyrow, first, last, counts >= 3)
        hull_sum = np.maximum(hi - lo + 1, 0).sum(axis=1)
    else:
        ok = np.zeros(len(counts), dtype=bool)
    use_hull = ok & (hull_sum <= hull_ratio * counts) if hull_ratio > 0 else ok
    for z in np.nonzero((counts > 0) & ~use_hull)[0]:
        rows = np.nonzero(anyrow[z])[0]
        y0, y1 = int(rows[0]), int(rows[-1]) + 1
        x0, x1 = int(first[z, rows].min()), int(last[z, rows].max()) + 1
        filled = ndi.binary_fill_holes(comp[z, y0:y1, x0:x1])
        if ok[z] and hull_sum[z] <= hull_ratio * filled.sum():  # the filled area decides for the hull
            use_hull[z] = True
        else:
            out[z, y0:y1, x0:x1] = filled
    zh = np.nonzero(use_hull)[0]
    if len(zh):
        out[zh] = (xs >= lo[zh, :, None]) & (xs <= hi[zh, :, None])
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
