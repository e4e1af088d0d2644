"""A 3D mask of the lesion at a point, on the scan's own grid: seeded, HU-adaptive, cut from vessels
and chest wall.

Steps, in a region of interest (ROI) of the original scan around the seed (``radius_mm``; grown when
the lesion reaches the ROI's edge, as masses do):

1. *Where a lesion may be* (``allowed``, from :func:`pipeline.measure.core._allowed`): the aerated
   lung closed by a rolling ball and hole-filled, so a nodule inside the lung or on the pleura is
   in, the chest wall and mediastinum out. Without a lung mask the whole ROI is allowed.
2. *Which component*: voxels >= ``DISCOVERY_HU`` (-700 HU: ground glass included), 6-connected;
   the component overlapping the ``prior`` most (the segmenter's thresholded component, so an
   off-centre detection still finds its lesion), else the one at the seed, else the nearest one
   within ``SEED_SEARCH_MM``.
3. *Threshold*: half way between the lung background (median HU of allowed voxels below
   ``DISCOVERY_HU``) and the lesion (median HU inside the component's inscribed ball at its core,
   so an attached wall or vessel does not set it): the half-maximum level, at which a
   partial-volume edge places the boundary where it is (a solid nodule: about -400 HU; ground glass
   at -600 HU: about -725 HU), clipped to [-750, -300] HU. The component is taken again at it.
4. *Vessels and necks*: the lesion's core is the deepest point of the component (distance map) in
   the prior, or the local maximum reached by climbing from the seed. An opening by reconstruction
   with a ball of ``0.5 x`` the inscribed radius there (0.6 to 3 mm; Euclidean distances in mm,
   anisotropic voxels respected) keeps the part whose core is connected to the lesion's core, grown
   back by that radius within the component: vessels thinner than the ball, and structures joined
   through necks narrower than it, are cut off.
5. *Broad contacts*: when the result still reaches farther than ``LEAK_FACTOR`` x the inscribed
   radius + 2 mm from the core (a nodule on the mediastinum or on a thick vessel), it is split by a
   watershed of its distance map (scikit-image; markers = h-maxima, h = 1 mm) and the core's basin
   is kept.

Building blocks: ``scipy.ndimage`` labelling and Euclidean distance transforms, SimpleITK for
sampling masks between grids (:func:`pipeline.preprocess.resample.resample`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from pipeline.io.geometry import Geometry

DISCOVERY_HU = -700.0
THRESHOLD_CLIP_HU = (-750.0, -300.0)
SEED_SEARCH_MM = 6.0
OPEN_FRACTION, OPEN_MIN_MM, OPEN_MAX_MM = 0.5, 0.6, 2.0  # opening radius: a share of the inscribed radius
LUNG_BACKGROUND_HU = -850.0  # when the ROI holds too few lung voxels to measure it
_SIX = ndi.generate_binary_structure(3, 1)


@dataclass
class LesionMask:
    """``mask_zyx`` (bool) on ``geometry`` (the ROI: a box of the scan's grid starting at voxel
    ``start_zyx``); ``threshold_hu`` / ``background_hu`` / ``lesion_hu`` as used; ``open_mm`` the
    opening radius; ``touches_edge``: the mask reaches an in-plane edge of the ROI (grow it)."""

    mask_zyx: np.ndarray
    geometry: Geometry
    start_zyx: tuple[int, int, int]
    threshold_hu: float
    background_hu: float
    lesion_hu: float
    open_mm: float
    touches_edge: bool
    inscribed_mm: float = 0.0

    @property
    def empty(self) -> bool:
        return not self.mask_zyx.any()


def roi(geometry: Geometry, center_xyz_mm, radius_mm: float) -> tuple[tuple[slice, ...], Geometry]:
    """Voxel box (z, y, x slices, clipped to the scan) of +-``radius_mm`` around a world point, and
    its own grid (same spacing and direction; origin at the box's first voxel)."""
    c = geometry.world_to_voxel_zyx(np.asarray(center_xyz_mm, float)).reshape(3)
    half = np.ceil(radius_mm / np.asarray(geometry.spacing_zyx_mm)).astype(int)
    shape = np.asarray(geometry.shape_zyx)
    lo = np.clip(np.floor(c).astype(int) - half, 0, shape - 1)
    hi = np.clip(np.ceil(c).astype(int) + half + 1, lo + 1, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    origin = geometry.voxel_zyx_to_world(lo).reshape(3)
    g = Geometry(tuple(origin), geometry.spacing_xyz_mm, geometry.direction, tuple(int(b - a) for a, b in zip(lo, hi)))
    return box, g


def _box(mask: np.ndarray, margin_vox) -> tuple[slice, ...]:
    """The bounding box of ``mask`` grown by ``margin_vox`` voxels per axis, clipped to the array."""
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(axis=0) - margin_vox, 0)
    hi = np.minimum(idx.max(axis=0) + 1 + margin_vox, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _edt(mask: np.ndarray, sp) -> np.ndarray:
    """Distance (mm) of each mask voxel to the nearest voxel outside it; computed on the mask's box
    grown by one voxel, which gives the same values as the whole array (the box's rim lies outside
    the mask, and is nearer than anything beyond it) at a fraction of the cost in a large ROI."""
    out = np.zeros(mask.shape)
    if mask.any():
        box = _box(mask, 1)
        out[box] = ndi.distance_transform_edt(mask[box], sampling=sp)
    return out


def _near(mask: np.ndarray, radius_mm: float, sp) -> np.ndarray:
    """Voxels within ``radius_mm`` of ``mask`` (Euclidean, mm): the distance map of the complement,
    computed on the mask's box grown by the radius (all of ``mask`` lies inside it)."""
    out = np.zeros(mask.shape, bool)
    if mask.any():
        box = _box(mask, np.ceil(radius_mm / np.asarray(sp, float)).astype(int) + 1)
        out[box] = ndi.distance_transform_edt(~mask[box], sampling=sp) <= radius_mm
    return out


def _pick(labels: np.ndarray, n: int, seed: np.ndarray, prior: np.ndarray | None, sp) -> int:
    """Label of the component overlapping ``prior`` most, else at / nearest to the seed (0: none)."""
    if n == 0:
        return 0
    if prior is not None and prior.any():
        counts = np.bincount(labels[prior], minlength=n + 1)
        counts[0] = 0
        if counts.max() > 0:
            return int(np.argmax(counts))
    s = tuple(np.clip(np.rint(seed).astype(int), 0, np.asarray(labels.shape) - 1))
    if labels[s]:
        return int(labels[s])
    idx = np.argwhere(labels > 0)
    d = np.linalg.norm((idx - seed) * np.asarray(sp), axis=1)
    k = int(np.argmin(d))
    return int(labels[tuple(idx[k])]) if d[k] <= SEED_SEARCH_MM else 0


def _core_point(comp: np.ndarray, dist: np.ndarray, seed: np.ndarray, prior, sp) -> tuple | None:
    """The lesion's centre of mass in distance terms: the deepest point of the component inside the
    prior; without a prior, the local maximum of the distance map reached by climbing from the seed
    (or from the component voxel nearest to it). A thick neighbour (wall, mediastinum, a large
    vessel) a few mm away is never taken for the lesion's core."""
    if prior is not None and (prior & comp).any():
        idx = np.argwhere(prior & comp)
        return tuple(idx[int(np.argmax(dist[prior & comp]))])
    if not comp.any():
        return None
    p = np.clip(np.rint(seed).astype(int), 0, np.asarray(comp.shape) - 1)
    if not comp[tuple(p)]:
        idx = np.argwhere(comp)
        p = idx[int(np.argmin(np.linalg.norm((idx - seed) * np.asarray(sp), axis=1)))]
    shape = np.asarray(comp.shape)
    start = p.copy()
    reach = max(float(dist[tuple(p)]), 2.0)  # climb within the seed's own inscribed ball
    steps = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if a or b or c])
    for _ in range(int(shape.sum())):
        nb = p + steps
        nb = nb[np.all((nb >= 0) & (nb < shape), axis=1)]
        nb = nb[np.linalg.norm((nb - start) * np.asarray(sp), axis=1) <= reach]
        if len(nb) == 0:
            break
        best = nb[int(np.argmax(dist[tuple(nb.T)]))]
        if dist[tuple(best)] <= dist[tuple(p)]:
            break
        p = best
    return tuple(int(v) for v in p)


def _ball(shape, centre, radius_mm: float, sp) -> np.ndarray:
    zz, yy, xx = np.ogrid[tuple(slice(0, k) for k in shape)]
    c = np.asarray(centre, float)
    return (((zz - c[0]) * sp[0]) ** 2 + ((yy - c[1]) * sp[1]) ** 2 + ((xx - c[2]) * sp[2]) ** 2) <= radius_mm ** 2


LEAK_FACTOR = 2.5  # voxels farther than LEAK_FACTOR x r_in + 2 mm from the core: something else is attached


def _split_if_leaking(comp: np.ndarray, c0: tuple, r_in: float, sp) -> np.ndarray:
    """When the component reaches far beyond the lesion's core (a juxta-pleural nodule on the
    mediastinum, a nodule on a thick vessel), split it by a watershed of the distance map (markers:
    its h-maxima, h = 1 mm) and keep the basin of the core."""
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    idx = np.argwhere(comp)
    far = np.linalg.norm((idx - np.asarray(c0)) * np.asarray(sp), axis=1).max()
    if far <= LEAK_FACTOR * r_in + 2.0:
        return comp
    dist = _edt(comp, sp)
    markers, n = ndi.label(h_maxima(dist, max(1.0, 0.3 * r_in)), structure=np.ones((3, 3, 3), bool))
    if not markers[c0]:
        markers[c0] = n + 1  # the lesion's core is always a marker of its own
    basins = watershed(-dist, markers, mask=comp)
    return basins == basins[c0] if basins[c0] else comp


def segment_lesion(hu_zyx: np.ndarray, geometry: Geometry, seed_zyx, *, allowed: np.ndarray | None = None,
                   prior: np.ndarray | None = None, start_zyx=(0, 0, 0)) -> LesionMask:
    """Mask of the lesion at continuous voxel index ``seed_zyx`` of the ROI ``hu_zyx`` (HU, (z, y, x)
    on ``geometry``). ``allowed``: where a lesion may be (the eroded lung); ``prior``: the
    segmenter's component on the same grid. See the module docstring."""
    sp = np.asarray(geometry.spacing_zyx_mm, float)
    hu = np.asarray(hu_zyx, np.float32)
    ok = np.ones(hu.shape, bool) if allowed is None else allowed.astype(bool)
    seed = np.asarray(seed_zyx, float).reshape(3)
    lab0, n0 = ndi.label((hu >= DISCOVERY_HU) & ok, structure=_SIX)
    first = _pick(lab0, n0, seed, prior, sp)
    bg_vox = hu[ok & (hu < DISCOVERY_HU)]
    bg = float(np.median(bg_vox)) if bg_vox.size >= 50 else LUNG_BACKGROUND_HU
    if first == 0:
        return LesionMask(np.zeros(hu.shape, bool), geometry, tuple(start_zyx), DISCOVERY_HU, bg, float("nan"),
                          0.0, False)
    comp0 = lab0 == first
    dist0 = _edt(comp0, sp)
    c00 = _core_point(comp0, dist0, seed, prior, sp)
    ball = _ball(comp0.shape, c00, max(float(dist0[c00]), 1.5), sp) & comp0
    level = float(np.median(hu[ball if ball.any() else comp0]))  # the lesion's own interior
    t = float(np.clip((bg + level) / 2.0, *THRESHOLD_CLIP_HU))
    lab, n = ndi.label((hu >= t) & ok, structure=_SIX)
    # the component at the seed; with a prior, the one overlapping the prior (within the first) most
    pick = _pick(lab, n, seed, None if prior is None else (prior & comp0 if (prior & comp0).any() else prior), sp)
    if pick == 0:
        pick = _pick(lab, n, seed, comp0, sp)
    comp = lab == pick if pick else comp0 & (hu >= t)
    dist = _edt(comp, sp)
    c0 = _core_point(comp, dist, seed, prior, sp)
    r_in = float(dist[c0]) if c0 is not None else 0.0
    r_open = float(np.clip(OPEN_FRACTION * r_in, OPEN_MIN_MM, OPEN_MAX_MM))
    if c0 is not None and r_in > r_open:
        core = dist > r_open
        cl, _ = ndi.label(core, structure=np.ones((3, 3, 3), bool))
        kept = cl == cl[c0]
        comp = comp & _near(kept, r_open + 0.5 * float(sp.max()), sp)
        comp = _split_if_leaking(comp, c0, r_in, sp)
    ny, nx = comp.shape[1:]
    touches = bool(comp[:, 0, :].any() or comp[:, ny - 1, :].any() or comp[:, :, 0].any() or comp[:, :, nx - 1].any())
    return LesionMask(comp, geometry, tuple(int(v) for v in start_zyx), t, bg, level, r_open, touches, r_in)
