"""Paint the chest of :class:`~pipeline.synth.anatomy.Chest` onto a voxel grid (float32 HU + labels)."""
from __future__ import annotations

import numpy as np

from pipeline.synth.anatomy import BODY, BONE, F32, LUNG, MEDIASTINUM, Chest, blend, ellipse_q, frac


def _set(labels: np.ndarray, mask, value: int) -> None:
    labels[np.broadcast_to(mask, labels.shape)] = value


def render_anatomy(chest: Chest, x, y, z, shape_zyx, voxel_mm: float):
    """Body wall, mediastinum, trachea, lungs, spine, ribs, sternum.

    Args:
        x, y, z: world coordinates (mm) broadcastable to ``shape_zyx`` (from ``world_axes``).
        voxel_mm: mean voxel size, the width of partial-volume edges.

    Returns:
        ``(hu, labels, lung_sd)``: float32 HU (z, y, x), uint8 labels (z, y, x), float32 signed
        distance to the lungs (mm, negative inside).
    """
    u, v, w = chest.rel(x, y, z)
    s = chest.scale
    # body: fat ring + muscle, constant along the body axis
    f_body = frac(chest.body_sd(u, v), voxel_mm)
    hu2 = F32(-1000.0) + F32(900.0) * f_body  # fat -100
    blend(hu2, F32(40.0), frac(chest.body_sd(u, v) + F32(chest.fat), voxel_mm))
    hu = np.ascontiguousarray(np.broadcast_to(hu2, shape_zyx), dtype=F32)
    labels = np.ascontiguousarray(np.broadcast_to((f_body >= 0.5).astype(np.uint8) * BODY, shape_zyx))

    # mediastinum / heart / aorta, trachea in the upper part
    f = frac(chest.mediastinum_sd(u, v, w), voxel_mm)
    blend(hu, F32(38.0), f)
    _set(labels, f >= 0.5, MEDIASTINUM)
    tr = np.maximum((ellipse_q(u, v + F32(0.1 * chest.ay), 0.055 * chest.ax, 0.05 * chest.ax) - 1)
                    * F32(0.05 * chest.ax), F32(0.05 * chest.fz) - w)
    f = frac(tr, voxel_mm)
    blend(hu, F32(-990.0), f)

    # lungs
    lung_sd = chest.lung_sd(u, v, w)
    f = frac(lung_sd, voxel_mm)
    hu += (chest.lung_texture(u, v, w) - hu) * f
    _set(labels, f >= 0.5, LUNG)

    # spine: vertebral body (cortex + cancellous, discs), canal, posterior elements
    su, sv, rv = chest.spine()
    disc = np.mod(w + F32(chest.rib_phase), F32(25 * s)) < F32(5 * s)
    vb = (ellipse_q(u - F32(su), v - F32(sv), rv, rv * 0.9) - 1) * F32(rv * 0.9)
    f = frac(vb, voxel_mm)
    blend(hu, np.where(disc, F32(90.0), F32(900.0)), f)
    blend(hu, np.where(disc, F32(90.0), F32(420.0)), frac(vb + F32(1.8 * s), voxel_mm))
    _set(labels, (f >= 0.5) & ~disc, BONE)
    cv = sv + 1.35 * rv
    ring = (ellipse_q(u - F32(su), v - F32(cv), 0.55 * rv, 0.5 * rv) - 1) * F32(0.5 * rv)
    spin = (ellipse_q(u - F32(su), v - F32(cv + 0.75 * rv), 0.2 * rv, 0.55 * rv) - 1) * F32(0.2 * rv)
    f = frac(np.minimum(ring, spin), voxel_mm)
    blend(hu, F32(650.0), f)
    _set(labels, f >= 0.5, BONE)
    f = frac(ring + F32(0.2 * rv), voxel_mm)
    blend(hu, F32(15.0), f)
    _set(labels, f >= 0.5, BODY)

    # ribs and sternum
    f = frac(chest.rib_sd(u, v, w), voxel_mm)
    blend(hu, F32(700.0), f)
    _set(labels, f >= 0.5, BONE)
    st = (ellipse_q(u, v + F32(chest.ay - chest.fat - 7 * s), 13 * s, 5 * s) - 1) * F32(5 * s)
    f = frac(st, voxel_mm)
    blend(hu, F32(500.0), f)
    _set(labels, f >= 0.5, BONE)
    return hu, labels, np.ascontiguousarray(np.broadcast_to(lung_sd, shape_zyx), dtype=F32)
