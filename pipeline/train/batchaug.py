"""Batched training augmentation as tensor ops on the training device (one call per batch).

The same transforms, probabilities and ranges as the per-sample MONAI pipeline of
:func:`pipeline.train.data.build_augment`, applied in the same order:

1. flip each spatial axis with p 0.5 (independently);
2. with p 0.5 rotate by k x 90 degrees, k uniform in {1, 2, 3}, in the axial plane
   ((H, W) of a plane; (y, x) of a cube);
3. with p 0.3 a small affine: rotation uniform in ±0.17 rad (about 10 degrees) in the axial
   plane, scale 1 + U(-0.1, 0.1) per spatial axis, border padding, through one
   ``affine_grid`` + ``grid_sample`` for the affected samples (image bilinear, masks nearest);
4. with p 0.3 Gaussian noise, std drawn uniformly in [0, 10] HU per sample (image only);
5. with p 0.3 an intensity shift uniform in ±20 HU (image only).

Flips and rot90 are exact index permutations (no interpolation), so masks and the ignore
region stay binary and move with the image. Every random draw comes from one
``torch.Generator`` seeded from (seed, epoch, batch[, rank]): a batch is reproducible.

Tensors: ``x`` float32 ``(B, C, P, P)`` (planes) or ``(B, C, Z, Y, X)`` (cubes), HU;
``extra`` float32 with the same batch and spatial shape (binary channels, e.g. ``mask`` and
``ignore`` stacked) or None. Returns the augmented (x, extra); the inputs may be modified.

Difference from the MONAI pipeline: MONAI's ``rotate_range=(0, 0, 0.17)`` for cubes rotates in
the plane of the first two spatial axes (z, y), contrary to the comment next to it ("about z,
in the axial plane"); here the affine rotation is in the axial (y, x) plane for cubes, like rot90.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

FLIP_P, ROT90_P, AFFINE_P, NOISE_P, SHIFT_P = 0.5, 0.5, 0.3, 0.3, 0.3
ROTATE_RAD, SCALE, NOISE_STD_HU, SHIFT_HU = 0.17, 0.1, 10.0, 20.0


def batch_seed(seed: int, epoch: int, batch: int, rank: int = 0) -> int:
    """A 63-bit seed from (seed, epoch, batch, rank) (numpy SeedSequence mixing)."""
    words = [int(v) & 0xFFFFFFFF for v in (seed, epoch, batch, rank)]
    return int(np.random.SeedSequence(words).generate_state(2, np.uint64)[0] >> np.uint64(1))


@dataclass
class AugParams:
    """Per-sample draws of one batch (CPU tensors, length B)."""

    flip: torch.Tensor      # (B, nd) bool, array axis order
    k: torch.Tensor         # (B,) int64, 0 = no rot90
    affine: torch.Tensor    # (B,) bool
    angle: torch.Tensor     # (B,) float32 radians
    scale: torch.Tensor     # (B, nd) float32, array axis order
    noise: torch.Tensor     # (B,) bool
    noise_std: torch.Tensor  # (B,) float32 HU
    shift: torch.Tensor     # (B,) bool
    offset: torch.Tensor    # (B,) float32 HU


class BatchAugment:
    """Batched augmentation for ``kind`` '2d' (planes, 2 spatial axes) or '3d' (cubes, 3)."""

    def __init__(self, kind: str):
        self.nd = 2 if kind == "2d" else 3

    def draw(self, n: int, g: torch.Generator) -> AugParams:
        nd = self.nd
        u = torch.rand(n, nd + 6, generator=g)
        return AugParams(
            flip=u[:, :nd] < FLIP_P,
            k=torch.where(u[:, nd] < ROT90_P, torch.randint(1, 4, (n,), generator=g), 0),
            affine=u[:, nd + 1] < AFFINE_P,
            angle=(u[:, nd + 2] * 2 - 1) * ROTATE_RAD,
            scale=1 + (torch.rand(n, nd, generator=g) * 2 - 1) * SCALE,
            noise=u[:, nd + 3] < NOISE_P, noise_std=u[:, nd + 4] * NOISE_STD_HU,
            shift=u[:, nd + 5] < SHIFT_P, offset=(torch.rand(n, generator=g) * 2 - 1) * SHIFT_HU)

    def __call__(self, x: torch.Tensor, extra: torch.Tensor | None = None, *, seed: int = 0,
                 params: AugParams | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment ``x`` (and ``extra`` geometrically) with the draws of ``seed`` (or ``params``)."""
        g = torch.Generator().manual_seed(int(seed))
        p = params if params is not None else self.draw(len(x), g)
        nd, dev = self.nd, x.device

        # flips then rot90 as one gather per batch: each sample's (flips, k) is a permutation
        elem = (p.flip.long() << torch.arange(nd)).sum(1) + (p.k << nd)
        if bool((elem != 0).any()):
            maps = _perm_maps(tuple(x.shape[-nd:]), dev)[elem.to(dev)]  # (B, N) source voxel
            x = _permute(x, maps)
            extra = None if extra is None else _permute(extra, maps)
        idx = p.affine.nonzero().flatten()
        if len(idx):
            di = idx.to(dev)
            _put(x, idx, resample(x[di], p.angle[idx], p.scale[idx], "bilinear"))
            if extra is not None:  # binary channels: one nearest pass over their bit code
                code = (extra[di] * _bits(extra.shape[1], dev, nd)).sum(1, keepdim=True)
                code = resample(code, p.angle[idx], p.scale[idx], "nearest").to(torch.int64)
                bits = (code >> torch.arange(extra.shape[1], device=dev).view(1, -1, *[1] * nd)) & 1
                _put(extra, idx, bits.float())
        idx = p.noise.nonzero().flatten()
        if len(idx):
            gd = g if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(int(torch.randint(1 << 62, (1,), generator=g)))
            di = idx.to(dev)
            std = p.noise_std[idx].to(dev).view(-1, *([1] * (x.dim() - 1)))
            _put(x, idx, torch.randn((len(idx), *x.shape[1:]), generator=gd, device=dev).mul_(std), add=True)
        if bool(p.shift.any()):
            x += torch.where(p.shift, p.offset, 0.0).to(dev).view(-1, *([1] * (x.dim() - 1)))
        return x, extra


def _put(t: torch.Tensor, idx: torch.Tensor, values: torch.Tensor, add: bool = False) -> None:
    """``t[idx] = values`` (or ``+=``) sample by sample: contiguous per-sample copies (on CPU,
    ``index_copy_`` / ``index_add_`` over the batch dimension were several times slower); on a GPU
    one ``index_copy_`` / ``index_add_`` kernel instead of a launch per sample."""
    if t.device.type != "cpu":
        i = idx.to(t.device)
        t.index_add_(0, i, values) if add else t.index_copy_(0, i, values)
        return
    for j, i in enumerate(idx.tolist()):
        t[i].add_(values[j]) if add else t[i].copy_(values[j])


_MAPS: dict = {}


def _perm_maps(shape: tuple[int, ...], dev) -> torch.Tensor:
    """(2^nd * 4, N) int64: for element ``sum(flip_a << a) + (k << nd)`` and each output voxel
    (flattened), the input voxel after flipping the axes ``a`` then rotating by k x 90 degrees in
    the last two axes (``torch.rot90`` = ``np.rot90`` direction, as MONAI's Rotate90)."""
    key = (shape, str(dev))
    if key not in _MAPS:
        nd = len(shape)
        ident = torch.arange(int(np.prod(shape))).view(shape)
        out = []
        for k in range(4):
            for e in range(2 ** nd):
                t = ident
                for a in range(nd):
                    t = t.flip(a) if (e >> a) & 1 else t
                out.append(torch.rot90(t, k, (nd - 2, nd - 1)).reshape(-1))
        _MAPS[key] = torch.stack(out).to(dev)
    return _MAPS[key]


def _permute(t: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``t`` (B, C, *spatial) with each sample's voxels gathered by ``maps`` (B, N)."""
    b, c = t.shape[:2]
    flat = t.reshape(b, c, -1)
    return torch.gather(flat, 2, maps[:, None].expand(b, c, flat.shape[2])).view(t.shape)


def _bits(c: int, dev, nd: int) -> torch.Tensor:
    """(1, c, 1, ...) powers of two: binary channels -> one integer code."""
    return (2 ** torch.arange(c, device=dev, dtype=torch.float32)).view(1, c, *[1] * nd)


def resample(t: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, mode: str) -> torch.Tensor:
    """``t`` (m, C, *spatial) through the affine of ``angle`` (m,) / ``scale`` (m, nd), border padding,
    ``align_corners=False`` (as MONAI's RandAffine). Single-channel cubes take the separable route
    (the affine maps z alone and (y, x) alone): a 1-D resampling along z, then one 2-D
    ``grid_sample`` over all (sample, z) slices: the same values as the 3-D ``grid_sample``
    (trilinear = linear in z of bilinear in (y, x)) at about half the cost."""
    m, nd, dev = len(t), scale.shape[1], t.device
    if nd == 2 or t.shape[1] != 1:
        theta = _theta(angle, scale, nd).to(dev)
        grid = F.affine_grid(theta, list(t.shape), align_corners=False)
        return F.grid_sample(t, grid, mode=mode, padding_mode="border", align_corners=False)
    _, _, z, y, x = t.shape
    zo = (2 * torch.arange(z, dtype=torch.float32) + 1) / z - 1  # normalized output z
    zi = (((scale[:, :1] * zo + 1) * z - 1) / 2).clamp(0, z - 1).to(dev)  # (m, Z) input voxel z

    def take(i):
        return torch.gather(t, 2, i.view(m, 1, z, 1, 1).expand(m, 1, z, y, x))
    if mode == "nearest":
        t = take(torch.round(zi).long())
    else:
        z0 = zi.floor().long()
        w = (zi - z0).view(m, 1, z, 1, 1)
        t = torch.lerp(take(z0), take((z0 + 1).clamp(max=z - 1)), w)
    theta = _theta(angle, scale[:, 1:], 2).to(dev)
    grid = F.affine_grid(theta, [m, 1, y, x], align_corners=False)
    grid = grid[:, None].expand(m, z, y, x, 2).reshape(m * z, y, x, 2)
    out = F.grid_sample(t.reshape(m * z, 1, y, x), grid, mode=mode, padding_mode="border", align_corners=False)
    return out.view(m, 1, z, y, x)


def _theta(angle: torch.Tensor, scale: torch.Tensor, nd: int) -> torch.Tensor:
    """``affine_grid`` matrices (m, nd, nd + 1): rotation by ``angle`` in the axial plane times the
    per-axis ``scale``. Grid coordinates are ordered (x, y[, z]) = reversed array axes, so the axial
    plane (last two array axes) is grid components 0 and 1."""
    m = len(angle)
    c, s = torch.cos(angle), torch.sin(angle)
    rot = torch.eye(nd).repeat(m, 1, 1)
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = c, -s, s, c
    theta = rot @ torch.diag_embed(scale.flip(1))  # scale given in array order -> grid order
    return torch.cat([theta, torch.zeros(m, nd, 1)], dim=2)
