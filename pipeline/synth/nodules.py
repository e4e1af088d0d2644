"""Nodules (solid lobulated, part-solid, ground-glass, juxta-pleural), excluded findings
(< 3 mm lesions, calcified granulomas) and masses (> 30 mm, irregular): placement inside the lungs
and partial-volume rendering."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.io.geometry import Geometry
from pipeline.synth.anatomy import F32, NODULE, Chest, frac
from pipeline.synth.vessels import _sub, bbox_zyx

KINDS = ("solid", "juxta_pleural", "part_solid", "ggo")
KIND_P = (0.5, 0.2, 0.15, 0.15)


@dataclass
class Lesion:
    center_xyz_mm: np.ndarray
    diameter_mm: float
    kind: str  # solid | juxta_pleural | part_solid | ggo | small | calcified | mass
    hu: float
    lobes: list = field(default_factory=list)  # (offset_xyz_mm, radius_mm)
    harm: np.ndarray = field(default_factory=lambda: np.zeros(9))

    @property
    def radius_mm(self) -> float:
        return self.diameter_mm / 2


def _diameter(rng: np.random.Generator, lo: float, hi: float, median: float) -> float:
    return float(np.clip(rng.lognormal(np.log(median), 0.45), max(lo, 3.2), hi))


def _sample_sites(chest: Chest, geometry: Geometry, rng, n: int, margin_vox: float) -> tuple[np.ndarray, np.ndarray]:
    """n random world points at voxel centres (+-0.2 voxel), with their lung signed distance."""
    shape = np.asarray(geometry.shape_zyx)
    lo = np.minimum(np.ceil(margin_vox), (shape - 1) // 2)
    idx = rng.integers(lo, np.maximum(shape - lo, lo + 1), size=(n, 3)) + rng.uniform(-0.2, 0.2, (n, 3))
    pts = geometry.voxel_zyx_to_world(idx)
    u, v, w = chest.rel(*(pts[:, i].astype(F32) for i in range(3)))
    return pts, chest.lung_sd(u, v, w)


_DIRS = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1) if i or j or k], float)
_DIRS /= np.linalg.norm(_DIRS, axis=1, keepdims=True)


def _touches_pleura(chest: Chest, pts: np.ndarray, sd: np.ndarray, r: float) -> np.ndarray:
    """True where a sphere of radius r at ``pts`` pokes through the pleura but its core is in the lung."""
    ok = (sd < -0.2 * r) & (sd > -2.0 * r)
    cand = np.flatnonzero(ok)
    if cand.size == 0:
        return ok

    def sd_at(scale: float) -> np.ndarray:
        q = (pts[cand, None, :] + scale * r * _DIRS[None]).reshape(-1, 3)
        u, v, w = chest.rel(*(q[:, i].astype(F32) for i in range(3)))
        return chest.lung_sd(u, v, w).reshape(len(cand), -1)

    ok[cand] = (sd_at(1.0).max(axis=1) > 0.3) & (sd_at(0.5).max(axis=1) < 0)
    return ok


def place_lesions(chest: Chest, geometry: Geometry, rng: np.random.Generator, n_nodules: int,
                  diameter_mm: tuple[float, float], hila_xyz_mm: np.ndarray) -> tuple[list[Lesion], list[Lesion]]:
    """Annotated nodules (> 3 mm) and excluded findings, none overlapping, away from the hila."""
    placed: list[Lesion] = []
    excluded: list[Lesion] = []
    vox = float(max(geometry.spacing_xyz_mm))
    wants = [("nodule", str(rng.choice(KINDS, p=KIND_P))) for _ in range(n_nodules)]
    wants += [("excluded", str(rng.choice(["small", "calcified"], p=[0.7, 0.3])))
              for _ in range(int(rng.integers(0, 4)))]
    for group, kind in wants:
        if kind in ("small", "calcified"):
            d = rng.uniform(1.5, 2.9) if kind == "small" else rng.uniform(2.0, 5.0)
        else:
            d = _diameter(rng, *diameter_mm, median=10.0 if kind in ("ggo", "part_solid") else 7.0)
        r = d / 2
        pts, sd = _sample_sites(chest, geometry, rng, 3000, (r + 2) / min(geometry.spacing_xyz_mm))
        ok = _touches_pleura(chest, pts, sd, r) if kind == "juxta_pleural" else sd < -(r + 1.5)
        for h in hila_xyz_mm:
            ok &= np.linalg.norm(pts - h, axis=1) > r + 0.3 * chest.lung_rb
        for o in placed + excluded:
            ok &= np.linalg.norm(pts - o.center_xyz_mm, axis=1) > r + o.radius_mm + 3 + vox
        if not ok.any():
            continue
        c = pts[np.flatnonzero(ok)[0]]
        hu = {"solid": rng.uniform(20, 80), "juxta_pleural": rng.uniform(20, 80), "part_solid": rng.uniform(-550, -350),
              "ggo": rng.uniform(-600, -300), "small": rng.uniform(0, 60), "calcified": rng.uniform(300, 800)}[kind]
        les = Lesion(c, float(d), kind, float(hu))
        if kind in ("solid", "juxta_pleural") and d > 5:
            les.harm = rng.normal(0, 0.06, 9)
            for _ in range(int(rng.integers(0, 3))):
                off = rng.normal(size=3)
                les.lobes.append((off / np.linalg.norm(off) * r * rng.uniform(0.4, 0.6), r * rng.uniform(0.4, 0.6)))
        (placed if group == "nodule" else excluded).append(les)
    return placed, excluded


def place_mass(chest: Chest, geometry: Geometry, rng: np.random.Generator, diameter_mm: tuple[float, float],
               hila_xyz_mm: np.ndarray, others: list[Lesion]) -> Lesion | None:
    """One irregular solid mass (nominal diameter in ``diameter_mm``), or None where none fits.

    About half of the masses touch the chest wall (the ball reaches up to a fifth of its radius
    past the pleura, which clips it: a contact about one radius wide); the others lie free in the
    lung (2 mm or more from the pleura). All keep clear of the mediastinum (radius + 3 mm) and the
    hila. A mass that finds no site shrinks by 10 % steps down to ``diameter_mm[0]``. It keeps
    3 mm clear of ``others`` (nodules, excluded findings), like the nodules.
    """
    d = float(rng.uniform(*diameter_mm))
    on_wall = bool(rng.random() < 0.5)
    vox = float(max(geometry.spacing_xyz_mm))
    while True:
        r = d / 2
        pts, sd = _sample_sites(chest, geometry, rng, 6000, (0.8 * r) / min(geometry.spacing_xyz_mm))
        u, v, w = chest.rel(*(pts[:, i].astype(F32) for i in range(3)))
        free = chest.mediastinum_sd(u, v, w) > r + 3.0
        for h in hila_xyz_mm:
            free &= np.linalg.norm(pts - h, axis=1) > 0.8 * r + 0.2 * chest.lung_rb
        for o in others:
            free &= np.linalg.norm(pts - o.center_xyz_mm, axis=1) > 1.2 * r + o.radius_mm + 2 + vox
        wall, deep = free & (sd > -r) & (sd < -0.8 * r), free & (sd < -(r + 2.0))
        ok = (wall if wall.any() else deep) if on_wall else (deep if deep.any() else wall)
        if ok.any():
            break
        if d <= diameter_mm[0] + 1e-6:
            return None
        d = max(diameter_mm[0], 0.9 * d)
    les = Lesion(pts[np.flatnonzero(ok)[0]], d, "mass", float(rng.uniform(10, 60)))
    les.harm = rng.normal(0, 0.08, 9)
    for _ in range(int(rng.integers(2, 5))):
        off = rng.normal(size=3)
        les.lobes.append((off / np.linalg.norm(off) * r * rng.uniform(0.45, 0.65), r * rng.uniform(0.3, 0.45)))
    return les


def _lesion_sd(les: Lesion, px, py, pz, scale: float = 1.0):
    """Signed distance (mm) to a lobulated sphere: radius modulated by low-order harmonics."""
    r = F32(les.radius_mm * scale)
    dist = np.sqrt(px * px + py * py + pz * pz) + F32(1e-6)
    nx, ny, nz = px / dist, py / dist, pz / dist
    a = les.harm.astype(F32)
    mod = 1 + a[0] * nx + a[1] * ny + a[2] * nz + a[3] * (nx * nx - ny * ny) + a[4] * (2 * nz * nz - nx * nx - ny * ny) \
        + a[5] * nx * ny + a[6] * ny * nz + a[7] * nx * nz
    sd = dist - r * mod
    for off, rl in les.lobes:
        o = off.astype(F32) * F32(scale)
        sd = np.minimum(sd, np.sqrt((px - o[0]) ** 2 + (py - o[1]) ** 2 + (pz - o[2]) ** 2) - F32(rl * scale))
    return sd


def render_lesions(lesions: list[Lesion], hu: np.ndarray, labels: np.ndarray, lung_sd: np.ndarray,
                   geometry: Geometry, axes, voxel_mm: float) -> None:
    """Paint lesions into ``hu`` / ``labels`` in place, clipped at the pleura (juxta-pleural contact)."""
    x, y, z = axes
    for les in lesions:
        extent = les.radius_mm * 1.8 + 2 * voxel_mm
        sl = bbox_zyx(geometry, les.center_xyz_mm, extent)
        if sl is None:
            continue
        c = les.center_xyz_mm.astype(F32)
        px, py, pz = _sub(x, sl) - c[0], _sub(y, sl) - c[1], _sub(z, sl) - c[2]
        f = frac(_lesion_sd(les, px, py, pz), voxel_mm) * frac(lung_sd[sl] - F32(0.5), voxel_mm)
        h, lab = hu[sl], labels[sl]
        h += (F32(les.hu) - h) * f
        if les.kind == "part_solid":
            fc = frac(_lesion_sd(les, px, py, pz, scale=0.45), voxel_mm)
            h += (F32(40.0) - h) * fc
        lab[f >= 0.5] = NODULE
