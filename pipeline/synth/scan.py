"""One synthetic chest CT: geometry, anatomy, vessels, lesions, noise, candidates."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.io.geometry import Geometry
from pipeline.synth.anatomy import F32, LUNG, VESSEL, Chest, frac, world_axes
from pipeline.synth.candidates import make_candidates
from pipeline.synth.config import SynthConfig
from pipeline.synth.nodules import place_lesions, place_mass, render_lesions
from pipeline.synth.render import render_anatomy
from pipeline.synth.vessels import grow_trees, hilum_xyz_mm, render_vessels

UID_PREFIX = "1.3.6.1.4.1.14519.5.2.1.6279.6001."
FLIPS = ((1.0, 1.0, -1.0), (-1.0, 1.0, 1.0), (1.0, -1.0, 1.0))
LESION_COLUMNS = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "kind", "hu"]


@dataclass
class SyntheticScan:
    """A generated scan.

    Attributes:
        array_zyx: int16 HU, shape (z, y, x).
        geometry: its grid (LPS world mm).
        labels_zyx: uint8 (z, y, x): 0 outside, 1 body, 2 lung parenchyma, 3 vessel, 4 bone,
            5 mediastinum, 6 nodule (lung = labels in {2, 3, 6}).
        nodules: annotated nodules (> 3 mm): seriesuid, coordX/Y/Z (mm), diameter_mm, kind, hu.
        excluded: excluded findings, same columns (diameter_mm -1 where "unknown"); a mass
            (``kind`` mass) has the diameter of the sphere around its centre that holds all of it.
        candidates: seriesuid, coordX/Y/Z, class, kind.
    """

    seriesuid: str
    array_zyx: np.ndarray
    geometry: Geometry
    labels_zyx: np.ndarray
    nodules: pd.DataFrame
    excluded: pd.DataFrame
    candidates: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)


def make_uid(rng: np.random.Generator) -> str:
    """LIDC-like series UID (about 60 characters) drawn from ``rng``."""
    n = int(rng.integers(24, 29))
    digits = [int(rng.integers(1, 10))] + rng.integers(0, 10, n - 1).tolist()
    return UID_PREFIX + "".join(map(str, digits))


def _rng(rng_or_seed) -> np.random.Generator:
    return rng_or_seed if isinstance(rng_or_seed, np.random.Generator) else np.random.default_rng(rng_or_seed)


def _lesion_frame(uid: str, lesions, excluded: bool, rng) -> pd.DataFrame:
    rows = []
    for les in lesions:
        d = les.diameter_mm
        if excluded and (d >= 3 or rng.random() < 0.3):
            d = -1.0
        rows.append((uid, *les.center_xyz_mm.tolist(), round(float(d), 2), les.kind, round(les.hu, 1)))
    return pd.DataFrame(rows, columns=LESION_COLUMNS)


def enclosing_radius_mm(lesion, labels_zyx: np.ndarray, geometry: Geometry) -> float:
    """The largest distance (mm) from the lesion's centre to a voxel of its rendered component (label
    NODULE, connected to the centre): a mass's lobes reach past its nominal radius, and its row in
    ``annotations_excluded.csv`` must cover all of it (the FROC ignores marks inside that sphere)."""
    from scipy import ndimage as ndi

    from pipeline.synth.anatomy import NODULE
    from pipeline.synth.vessels import bbox_zyx

    sl = bbox_zyx(geometry, lesion.center_xyz_mm, 2.0 * lesion.radius_mm)
    lab, _ = ndi.label(labels_zyx[sl] == NODULE)
    c = np.rint(geometry.world_to_voxel_zyx(lesion.center_xyz_mm)).astype(int).ravel() - [s.start for s in sl]
    k = lab[tuple(np.clip(c, 0, np.asarray(lab.shape) - 1))]
    if k == 0:
        return float(lesion.radius_mm)
    vox = np.argwhere(lab == k) + [s.start for s in sl]
    return float(np.linalg.norm(geometry.voxel_zyx_to_world(vox) - lesion.center_xyz_mm, axis=1).max())


def mass_candidates(seriesuid: str, mass, rng: np.random.Generator, n: int = 8) -> pd.DataFrame:
    """``n`` class-0 candidates (kind ``mass``): one at the mass's centre, the others at 0.3-0.9 of
    its radius in random directions (as candidate detectors fire all over a mass), so that training
    cubes hold its interior, its edge and the lung around it."""
    d = rng.normal(size=(n - 1, 3))
    pts = mass.center_xyz_mm + d / np.linalg.norm(d, axis=1, keepdims=True) * (
        rng.uniform(0.3, 0.9, (n - 1, 1)) * mass.radius_mm)
    pts = np.vstack([mass.center_xyz_mm[None], pts])
    return pd.DataFrame([(seriesuid, *p.tolist(), 0, "mass") for p in pts],
                        columns=["seriesuid", "coordX", "coordY", "coordZ", "class", "kind"])


def make_scan(seriesuid: str, rng_or_seed, cfg: SynthConfig | None = None, *, shape_zyx=None,
              spacing_xyz_mm=None, direction=None, mass_seed=None) -> SyntheticScan:
    """Generate one scan. Unset spacing / direction / shape are drawn from ``cfg`` with the rng.

    ``shape_zyx`` defaults to ``cfg.fov_mm / spacing``; ``direction`` must be a signed
    permutation (identity, or one axis flipped such as diag(1, 1, -1)). ``mass_seed`` (an int or
    a list of ints): add one mass (``cfg.mass_diameter_mm``) drawn from a random stream of its own,
    with 8 class-0 candidates on it; None: no mass (the scan's other draws are the same).
    """
    cfg = cfg or SynthConfig()
    rng = _rng(rng_or_seed)
    if spacing_xyz_mm is None:
        sxy = round(float(rng.uniform(*cfg.spacing_inplane_mm)), 6)
        spacing_xyz_mm = (sxy, sxy, float(rng.choice(cfg.slice_mm)))
    if direction is None:
        direction = np.diag(FLIPS[int(rng.integers(0, 3))]) if rng.random() < cfg.flip_fraction else np.eye(3)
    if shape_zyx is None:
        shape_zyx = tuple(round(f / s) for f, s in zip(cfg.fov_mm[::-1], tuple(spacing_xyz_mm)[::-1]))
    box_centre = np.array([rng.uniform(-20, 20), rng.uniform(-20, 20) + 10, rng.uniform(-260, -90)])
    g0 = Geometry((0.0, 0.0, 0.0), spacing_xyz_mm, direction, shape_zyx)
    origin = np.round(box_centre - g0.center_xyz_mm(), 3)
    geometry = Geometry(tuple(origin.tolist()), spacing_xyz_mm, direction, shape_zyx)
    fov_xyz = geometry.extent_xyz_mm
    fov_world = np.abs(geometry.direction_matrix) @ np.asarray(fov_xyz)  # extent along world x, y, z
    centre = geometry.center_xyz_mm() + rng.uniform(-0.02, 0.02, 3) * fov_world * np.array([1, 1, 0])
    chest = Chest.sample(rng, centre, fov_world)

    axes = world_axes(geometry)
    vox = float(np.mean(geometry.spacing_xyz_mm))
    hu, labels, lung_sd = render_anatomy(chest, *axes, geometry.shape_zyx, vox)
    segs, branches = grow_trees(chest, rng)
    vf = render_vessels(segs, geometry, axes, vox)
    vf *= frac(lung_sd, vox)
    vessel_hu = float(rng.uniform(40, 100))
    hu += (F32(vessel_hu) - hu) * vf
    labels[(vf >= 0.5) & (labels == LUNG)] = VESSEL
    del vf
    hila = np.stack([hilum_xyz_mm(chest, -1), hilum_xyz_mm(chest, 1)])
    n_nod = int(rng.integers(cfg.nodules_per_scan[0], cfg.nodules_per_scan[1] + 1))
    nodules, excluded = place_lesions(chest, geometry, rng, n_nod, tuple(cfg.diameter_mm), hila)
    masses = []
    if mass_seed is not None:
        mrng = np.random.default_rng(mass_seed)
        m = place_mass(chest, geometry, mrng, tuple(cfg.mass_diameter_mm), hila, nodules + excluded)
        masses = [m] if m is not None else []
    render_lesions(nodules + excluded + masses, hu, labels, lung_sd, geometry, axes, vox)
    sigma = float(rng.uniform(*cfg.noise_hu))
    hu += rng.standard_normal(hu.shape, dtype=F32) * F32(sigma)
    np.clip(hu, -1024, 3071, out=hu)
    array = np.rint(hu).astype(np.int16)
    del hu
    nod_df = _lesion_frame(seriesuid, nodules, False, rng)
    exc_df = _lesion_frame(seriesuid, excluded, True, rng)
    cands = make_candidates(seriesuid, geometry, labels, lung_sd, nod_df, branches,
                            int(cfg.negatives_per_scan), float(cfg.hard_negative_fraction), rng,
                            positives_per_nodule=tuple(cfg.positives_per_nodule),
                            positive_offset=float(cfg.positive_offset))
    if masses:
        mass_df = _lesion_frame(seriesuid, masses, False, rng)
        mass_df["diameter_mm"] = [round(2 * enclosing_radius_mm(m, labels, geometry), 2) for m in masses]
        exc_df = pd.concat([exc_df, mass_df], ignore_index=True)
        cands = pd.concat([cands, mass_candidates(seriesuid, masses[0], mrng)], ignore_index=True)
    meta = {"masses": len(masses), "noise_hu": sigma, "vessel_hu": vessel_hu, "n_vessel_segments": len(segs),
            "flipped": not geometry.is_identity_direction}
    return SyntheticScan(seriesuid, array, geometry, labels, nod_df, exc_df, cands, meta)
