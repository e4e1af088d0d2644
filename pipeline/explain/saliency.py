"""Saliency maps of the nodule classifier with MONAI ``monai.visualize``.

Inputs are the classifier's own HU patches: planes ``(N, 3, P, P)`` (2D / 2.5D; the three planes
are the input channels, so one spatial map covers all three) or cubes ``(N, 1, S, S, S)`` (z, y, x).
Maps come back as float32 ``(N, P, P)`` or ``(N, S, S, S)``, same pixel grid as the input:

* ``gradcam`` / ``gradcampp``: :class:`monai.visualize.GradCAM` / ``GradCAMpp`` of the nodule
  logit at one encoder layer, upsampled (bi/trilinear) and min-max normalised to [0, 1] per sample;
* ``occlusion``: :class:`monai.visualize.OcclusionSensitivity`; the map is the DROP of the nodule
  LOGIT when a square / cube around the pixel is set to ``fill_hu`` (logit units, positive = the
  region supports "nodule"). Logits, not probabilities: a confident positive has p ~ 1 whatever
  is occluded (the sigmoid saturates), which would leave a flat map whose maximum means nothing.

The model is put in eval mode (no dropout, BatchNorm running stats), so maps are deterministic.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from pipeline.errors import ConfigError


class LogitAsClass(nn.Module):
    """``(B,)`` nodule logit -> ``(B, 1)`` (MONAI's CAMs index ``logits[:, class_idx]``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).reshape(-1, 1)


def stage_layer_names(model: nn.Module) -> list[str]:
    """Module names (in ``model``) of the last module of each encoder stage, shallow -> deep."""
    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for st in getattr(model, "stages", []):
        last = st[-1] if isinstance(st, (nn.ModuleList, nn.Sequential)) and len(st) else st
        if id(last) in names:
            out.append(names[id(last)])
    return out


def resolve_layer(model: nn.Module, layer: str | int) -> str:
    """A Grad-CAM target: stage index (int or digits, negative from the deepest) or a module name."""
    stages = stage_layer_names(model)
    if isinstance(layer, int) or str(layer).lstrip("-").isdigit():
        k = int(layer)
        if not -len(stages) <= k < len(stages):
            raise ConfigError(f"explain.layer {k}: the encoder has {len(stages)} stages ({', '.join(stages)})")
        return stages[k]
    if str(layer) not in dict(model.named_modules()):
        raise ConfigError(f"explain.layer {layer!r} is not a module of the classifier; stages: {', '.join(stages)}")
    return str(layer)


def _batches(x: np.ndarray, n: int):
    for i in range(0, len(x), n):
        yield torch.from_numpy(np.ascontiguousarray(x[i:i + n])).float()


def cam_maps(model: nn.Module, patches: np.ndarray, layer: str | int = -1, method: str = "gradcampp",
             batch_size: int = 32, device: str | torch.device = "cpu") -> np.ndarray:
    """Grad-CAM(++) maps float32 ``(N, *spatial)`` in [0, 1] of the nodule logit at ``layer``."""
    from monai.visualize import GradCAM, GradCAMpp

    if method not in ("gradcam", "gradcampp"):
        raise ConfigError(f"CAM method must be gradcam or gradcampp; got {method!r}")
    name = resolve_layer(model, layer)
    wrapped = LogitAsClass(model).to(device).eval()
    cam = (GradCAMpp if method == "gradcampp" else GradCAM)(wrapped, target_layers=f"model.{name}")
    ones = (1,) * (patches.ndim - 1)
    # the class score shaped (B, 1, ...) so GradCAM++'s ``score.exp() * grad`` broadcasts per sample
    # (MONAI squeezes it to (B,), which only broadcasts for batch size 1)
    cam.nn_module.class_score = lambda logits, idx: logits[:, idx].reshape(-1, *ones)
    out = []
    with torch.enable_grad():
        for x in _batches(patches, batch_size):
            m = cam(x=x.to(device), class_idx=0)
            out.append(m[:, 0].detach().float().cpu().numpy())
    model.zero_grad(set_to_none=True)
    spatial = patches.shape[2:]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, *spatial), np.float32)


def occlusion_maps(model: nn.Module, patches: np.ndarray, mask_px: int, *, overlap: float = 0.5,
                   fill_hu: float = -800.0, batch_size: int = 64,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """Occlusion sensitivity float32 ``(N, *spatial)``: nodule logit of the intact patch minus
    the logit with a ``mask_px`` square (cube) around each pixel (voxel) set to ``fill_hu``."""
    from monai.visualize import OcclusionSensitivity

    wrapped = LogitAsClass(model).to(device).eval()
    occ = OcclusionSensitivity(wrapped, mask_size=int(mask_px), n_batch=int(batch_size), verbose=False,
                               mode=float(fill_hu), overlap=float(overlap), activate=False)
    out = []
    with torch.inference_mode(), warnings.catch_warnings():
        # MONAI indexes with a list of slices (a torch deprecation warning per window): not ours to fix
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
        for x in _batches(patches, 1):
            x = x.to(device)
            p0 = wrapped(x).reshape(())
            sens, _ = occ(x)  # (1, 1, *spatial, 1): occluded logit
            out.append((p0 - sens.reshape(x.shape[2:])).float().cpu().numpy())
    return np.stack(out).astype(np.float32) if out else np.zeros((0, *patches.shape[2:]), np.float32)


def saliency_maps(model: nn.Module, patches: np.ndarray, method: str, *, layer: str | int = -1,
                  mask_px: int = 8, overlap: float = 0.5, fill_hu: float = -800.0, batch_size: int = 32,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """Maps of ``method`` (gradcampp | gradcam | occlusion) for HU ``patches``; see the module doc."""
    if method == "occlusion":
        return occlusion_maps(model, patches, mask_px, overlap=overlap, fill_hu=fill_hu,
                              batch_size=max(batch_size, 16), device=device)
    return cam_maps(model, patches, layer, method, batch_size, device)


def argmax_distance_px(maps: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """Distance (pixels / voxels) from each map's maximum to ``center`` (default: the patch centre
    ``(n - 1) / 2`` per axis, where the candidate lies in a plane patch). ``maps``: ``(N, *spatial)``."""
    spatial = np.asarray(maps.shape[1:])
    c = (spatial - 1) / 2.0 if center is None else np.asarray(center, float)
    flat = maps.reshape(len(maps), -1).argmax(1)
    pos = np.stack(np.unravel_index(flat, tuple(spatial)), 1).astype(float)
    return np.linalg.norm(pos - c, axis=1)


def inside_share(maps: np.ndarray, radius_px: np.ndarray, center: np.ndarray | None = None) -> float:
    """Share of maps whose maximum lies within the nodule radius (+ half a pixel) of the centre."""
    if not len(maps):
        return float("nan")
    d = argmax_distance_px(maps, center)
    return float(np.mean(d <= np.asarray(radius_px, float) + 0.5))


def nodule_area_share(radius_px: np.ndarray, spatial: tuple[int, ...]) -> float:
    """Mean share of the patch area (2D) / volume (3D) inside the nodule disc (ball): the inside
    share a map maximum placed uniformly at random would reach."""
    r = np.asarray(radius_px, float) + 0.5
    if len(spatial) == 2:
        part = np.pi * r ** 2 / float(np.prod(spatial))
    else:
        part = 4.0 / 3.0 * np.pi * r ** 3 / float(np.prod(spatial))
    return float(np.mean(np.clip(part, 0.0, 1.0))) if len(r) else float("nan")


def radius_px(diameter_mm: np.ndarray, config: dict, kind: str) -> np.ndarray:
    """Nodule radius in input pixels (2D: ``plane_px / plane_mm``) or voxels (3D: the spacing)."""
    p = config.get("patches") or {}
    if kind == "2d":
        scale = float(p.get("plane_px", 64)) / float(p.get("plane_mm", 48.0))
    else:
        scale = 1.0 / float(min(config.get("spacing_xyz_mm") or [1.0]))
    return np.asarray(diameter_mm, float) / 2.0 * scale


def occlusion_px(config: dict, kind: str, mm: float) -> int:
    """Occlusion edge in input pixels / voxels for ``mm`` millimetres (at least 2)."""
    return max(2, round(2 * float(radius_px(np.array([mm]), config, kind)[0])))


def explain_patches(model: nn.Module, config: dict, patches: np.ndarray, cfg, device="cpu") -> dict:
    """``{method: maps (N, *spatial)}`` for every method of ``cfg`` (an ExplainConfig) on HU ``patches``
    of the classifier described by ``config`` (its config.json)."""
    kind = config.get("kind", "2d")
    mask = occlusion_px(config, kind, cfg.occlusion_mm)
    return {m: saliency_maps(model, patches, m, layer=cfg.layer, mask_px=mask, overlap=cfg.occlusion_overlap,
                             fill_hu=cfg.occlusion_hu, batch_size=cfg.batch_size, device=device)
            for m in cfg.methods}
