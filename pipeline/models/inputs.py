"""The one place where HU patches become network inputs.

2D (``family='imagenet'``): ``(B, 3, H, W)`` or ``(B, 1, H, W)`` HU (1 channel is repeated to
3) -> clip to ``window_hu`` -> linear map to [0, 1] -> per-channel ``(x - mean) / std``
(ImageNet mean/std by default; EfficientNet-Lite0 passes its own 127/128 normalisation).

3D (``family='medicalnet'``): ``(B, 1, D, H, W)`` HU -> clip to ``window_hu`` -> z-score per
volume, mean/std over the NON-AIR voxels (HU above the window minimum), as MedicalNet
normalises over non-background (> 0) voxels. Differences from MedicalNet, chosen for
determinism: background voxels are z-scored with the same mean/std (MedicalNet replaces
them with Gaussian noise); a volume with fewer than 2 non-air voxels uses all voxels;
std is floored at 1e-6 relative units (constant volumes map to 0).

3D (``family='ct'``, the chest-CT I3ResNet of Merlin / Astra): ``(B, 1, D, H, W)`` HU (z, y, x,
LPS world axes) -> clip to ``window_hu`` (Merlin: [-1000, 1000]) -> linear map to [0, 1] ->
trilinear resampling from ``input_spacing_zyx_mm`` to ``spacing_zyx_mm`` (Merlin: 3 x 1.5 x 1.5 mm)
-> axes as Merlin's RAS loader presents them (y and x flipped, then in-plane axes swapped:
``(z, x_RAS, y_RAS)``) -> the one CT channel repeated to 3: ``(B, 3, D', H', W')``.
"""
from __future__ import annotations

import torch
from torch import nn

from pipeline.errors import ConfigError

FAMILIES = ("imagenet", "medicalnet", "ct")
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class InputAdapter(nn.Module):
    """HU tensor -> normalised network input (no trainable parameters)."""

    def __init__(self, family: str, window_hu: tuple[float, float] = (-1000.0, 400.0),
                 mean_std: tuple | None = None, *, spacing_zyx_mm: tuple | None = None,
                 input_spacing_zyx_mm: tuple = (1.0, 1.0, 1.0)):
        super().__init__()
        if family not in FAMILIES:
            raise ConfigError(f"unknown encoder family '{family}'; valid: {', '.join(FAMILIES)}")
        lo, hi = float(window_hu[0]), float(window_hu[1])
        if not hi > lo:
            raise ConfigError(f"window_hu must be (low, high) with high > low, got {window_hu}")
        self.family, self.window_hu = family, (lo, hi)
        self.spacing_zyx_mm = tuple(float(v) for v in spacing_zyx_mm) if spacing_zyx_mm else None
        self.input_spacing_zyx_mm = tuple(float(v) for v in input_spacing_zyx_mm)
        mean, std = mean_std if mean_std is not None else IMAGENET_MEAN_STD
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x_hu: torch.Tensor) -> torch.Tensor:
        lo, hi = self.window_hu
        x = x_hu.float().clamp(lo, hi)
        if self.family == "imagenet":
            if x.ndim != 4 or x.shape[1] not in (1, 3):
                raise ValueError(f"2D input must be (B, 1|3, H, W) HU, got {tuple(x.shape)}")
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            x = (x - lo) / (hi - lo)
            return (x - self.mean) / self.std
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(f"3D input must be (B, 1, D, H, W) HU, got {tuple(x.shape)}")
        if self.family == "ct":
            return self._ct(x)
        flat = x.flatten(1)
        fg = (flat > lo).float()
        use_all = fg.sum(1, keepdim=True) < 2
        w = torch.where(use_all, torch.ones_like(fg), fg)
        n = w.sum(1, keepdim=True)
        mean = (flat * w).sum(1, keepdim=True) / n
        var = (((flat - mean) ** 2) * w).sum(1, keepdim=True) / n
        std = var.sqrt().clamp_min(1e-6)
        return ((flat - mean) / std).view_as(x)

    def _ct(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.window_hu
        x = (x - lo) / (hi - lo)
        if self.spacing_zyx_mm is not None and self.spacing_zyx_mm != self.input_spacing_zyx_mm:
            size = [max(1, round(n * a / b)) for n, a, b in
                    zip(x.shape[2:], self.input_spacing_zyx_mm, self.spacing_zyx_mm)]
            x = torch.nn.functional.interpolate(x, size=size, mode="trilinear", align_corners=False)
        x = x.flip(-1, -2).transpose(-1, -2)  # (z, y_LPS, x_LPS) -> (z, x_RAS, y_RAS)
        return x.expand(-1, 3, -1, -1, -1).contiguous()
