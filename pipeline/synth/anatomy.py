"""Chest anatomy in WORLD space (LPS mm): body wall, lungs, mediastinum, spine, ribs.

Every structure is an analytic signed-distance-like field of world coordinates relative to
the chest centre: ``u`` = x - cx (patient left +), ``v`` = y - cy (posterior +),
``w`` = z - cz (superior +). The voxel grid only supplies the world coordinates of its
voxel centres (:func:`world_axes`, via :class:`~pipeline.io.geometry.Geometry`), so a scan
whose index axes are flipped still holds the same chest in world space.
Edges are blended with a partial-volume fraction ``clip(0.5 - sd / voxel_mm, 0, 1)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import ConfigError
from pipeline.io.geometry import Geometry

# label values of SyntheticScan.labels_zyx
OUTSIDE, BODY, LUNG, VESSEL, BONE, MEDIASTINUM, NODULE = 0, 1, 2, 3, 4, 5, 6
F32 = np.float32


def world_axes(geometry: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World x, y, z (mm, float32) of voxel centres as arrays broadcastable to ``shape_zyx``.

    Needs a signed-permutation direction (axis flips / swaps), so that each world axis
    depends on one index axis; coordinates come from ``Geometry.voxel_zyx_to_world``.
    """
    m = np.abs(geometry.direction_matrix)
    if not (np.allclose(np.sort(m, axis=1)[:, :2], 0, atol=1e-6) and np.allclose(m.max(axis=1), 1, atol=1e-6)):
        raise ConfigError("synth: direction must be a signed permutation matrix (axis flips/swaps), "
                          f"got {geometry.direction_matrix.tolist()}")
    out = []
    for world_axis in range(3):
        idx_axis_xyz = int(np.argmax(m[world_axis]))  # index axis (x, y, z order) feeding this world axis
        arr_axis = 2 - idx_axis_xyz  # array axis in (z, y, x)
        n = geometry.shape_zyx[arr_axis]
        pts = np.zeros((n, 3))
        pts[:, arr_axis] = np.arange(n)
        vals = geometry.voxel_zyx_to_world(pts)[:, world_axis].astype(F32)
        shape = [1, 1, 1]
        shape[arr_axis] = n
        out.append(vals.reshape(shape))
    return out[0], out[1], out[2]


def frac(sd_mm: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Partial-volume fraction inside a surface, from a signed distance (mm, negative inside)."""
    f = np.asarray(sd_mm, dtype=F32) * F32(-1.0 / voxel_mm)
    f += F32(0.5)
    return np.clip(f, 0, 1, out=f)


def blend(hu: np.ndarray, value, f: np.ndarray) -> None:
    """In place: ``hu += (value - hu) * f`` (value scalar or broadcastable)."""
    hu += (value - hu) * f


def ellipse_q(du, dv, a: float, b: float) -> np.ndarray:
    return np.sqrt((du / F32(a)) ** 2 + (dv / F32(b)) ** 2)


@dataclass(frozen=True)
class Chest:
    """Random chest layout (mm, world frame). Sizes scale with the field of view."""

    center_xyz_mm: tuple[float, float, float]
    ax: float  # body semi-axis along x (left-right)
    ay: float  # body semi-axis along y (anterior-posterior)
    fz: float  # field of view along z
    fat: float  # subcutaneous fat thickness, mm
    lung_ra: float
    lung_rb: float
    lung_u: float
    lung_v: float
    lung_zc: float
    lung_hz: float
    lung_harm: tuple  # (k, amp, phase) boundary harmonics, per lung
    rib_period: float
    rib_phase: float
    texture: tuple  # separable plane waves (amp, kx, ky, kz, px, py, pz)

    @property
    def scale(self) -> float:
        return self.ax / 160.0

    @classmethod
    def sample(cls, rng: np.random.Generator, center_xyz_mm, fov_xyz_mm) -> Chest:
        fx, fy, fz = (float(v) for v in fov_xyz_mm)
        ax = 0.45 * fx * rng.uniform(0.93, 1.0)
        ay = min(0.36 * fy, ax * 0.8) * rng.uniform(0.93, 1.0)
        s = ax / 160.0
        harm = tuple(tuple((k, rng.uniform(0.0, 0.035), rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4, 5))
                     for _ in range(2))
        tex = tuple((rng.uniform(6, 14), *rng.normal(0, 2 * np.pi / rng.uniform(8, 30), 3),
                     *rng.uniform(0, 2 * np.pi, 3)) for _ in range(6))
        return cls(tuple(float(c) for c in center_xyz_mm), ax, ay, fz, rng.uniform(6, 14) * s,
                   lung_ra=0.43 * ax * rng.uniform(0.95, 1.05), lung_rb=0.86 * ay * rng.uniform(0.95, 1.05),
                   lung_u=0.5 * ax, lung_v=0.0 * ay, lung_zc=-0.15 * fz, lung_hz=max(0.85 * fz, 90 * s),
                   lung_harm=harm, rib_period=rng.uniform(21, 26) * s, rib_phase=rng.uniform(0, 30),
                   texture=tex)

    # ------------------------------------------------------------------ fields
    def rel(self, x, y, z):
        cx, cy, cz = self.center_xyz_mm
        return x - F32(cx), y - F32(cy), z - F32(cz)

    def body_sd(self, u, v):
        return (ellipse_q(u, v, self.ax, self.ay) - 1) * F32(self.ay)

    def spine(self):
        """(u, v, radius) of the vertebral body."""
        rv = 0.13 * self.ax
        return 0.0, 0.55 * self.ay, rv

    def mediastinum_sd(self, u, v, w):
        s = self.ax
        hz = np.sqrt(np.clip(1 - ((w + F32(0.35 * self.fz)) / F32(0.75 * self.fz)) ** 2, 0, 1))
        heart = (ellipse_q(u - F32(0.1 * s), v + F32(0.3 * self.ay), 0.28 * s, 0.36 * self.ay) - hz) * F32(0.28 * s)
        column = (ellipse_q(u, v + F32(0.05 * self.ay), 0.11 * s, 0.5 * self.ay) - 1) * F32(0.11 * s)
        aorta = (ellipse_q(u - F32(0.13 * s), v - F32(0.38 * self.ay), 0.07 * s, 0.07 * s) - 1) * F32(0.07 * s)
        return np.minimum(np.minimum(heart, column), aorta)

    def lung_sd(self, u, v, w, side: int | None = None):
        """Signed distance (mm, approx., negative inside) to the lungs; side -1 right, +1 left."""
        m = self.mediastinum_sd(u, v, w)
        su, sv, rv = self.spine()
        spine = (ellipse_q(u - F32(su), v - F32(sv), rv, rv) - 1) * F32(rv)
        wall = self.body_sd(u, v) + F32(self.fat + 14 * self.scale)
        carve = np.maximum(np.maximum(F32(3.0) - m, F32(5.0) - spine), wall)
        sz = np.sqrt(np.clip(1 - ((w - F32(self.lung_zc)) / F32(self.lung_hz)) ** 2, 0, 1))
        out = None
        for i, sd in enumerate((-1, 1)):
            if side is not None and sd != side:
                continue
            du, dv = u - F32(sd * self.lung_u), v - F32(self.lung_v)
            th = np.arctan2(dv, du)
            pert = 1 + sum(F32(a) * np.cos(k * th + F32(p)) for k, a, p in self.lung_harm[i])
            ra = self.lung_ra * (0.92 if sd > 0 else 1.0)
            q = ellipse_q(du, dv, ra, self.lung_rb) / pert
            e = (q - sz) * F32(min(ra, self.lung_rb))
            out = e if out is None else np.minimum(out, e)
        return np.maximum(out, carve)

    def lung_texture(self, u, v, w):
        """-850 HU parenchyma with a posterior (dependent) density gradient and smooth texture."""
        t = F32(-850.0) + v * F32(25.0 / self.ay)
        for amp, kx, ky, kz, px, py, pz in self.texture:
            t = t + (F32(amp) * np.cos(u * F32(kx) + F32(px)) * np.cos(v * F32(ky) + F32(py))) * np.cos(
                w * F32(kz) + F32(pz))
        return t

    def rib_sd(self, u, v, w):
        """Ribs: elliptic cross-sections following the chest wall, descending anteriorly."""
        s = self.scale
        qb = ellipse_q(u, v, self.ax, self.ay)
        r_rib = 1 - (self.fat + 7 * s) / self.ay
        d_rad = (qb - F32(r_rib)) * F32(self.ay)
        phi = np.arccos(np.clip(v / np.maximum(np.sqrt(u * u + v * v), F32(1e-3)), -1, 1))  # 0 posterior
        phase = F32(self.rib_phase) - phi * F32(3.2 * self.rib_period / np.pi)
        valid = ((phi > 0.1 * np.pi) & (phi < 0.83 * np.pi)).astype(F32)
        t_r, t_z = 3.2 * s, 4.5 * s
        wm = np.mod(w - phase, F32(self.rib_period)) - F32(self.rib_period / 2)
        q = np.sqrt((d_rad / F32(t_r)) ** 2 + (wm / F32(t_z)) ** 2)
        return (q - 1) * F32(min(t_r, t_z)) + (1 - valid) * F32(1e3)
