"""Segmenter sliding-window inference over a preprocessed volume (MONAI gaussian blending).

* :func:`roi_mode` picks where the segmenter runs: the lung mask's bounding box (``lung``) or the
  whole volume (``whole``). ``auto``: the whole volume on CUDA (measured faster on an H100: 0.7 s vs
  1.07 s for the box, ``../shared/GPU.md``; fewer, larger copies), the lung box on CPU (the
  windows are the cost there).
* :func:`segment` runs ``monai.inferers.sliding_window_inference``; given a ``mask_zyx`` it skips
  the windows that hold no mask voxel (their batch slots get a logit of -30). The probability of a
  voxel inside the mask is a gaussian-weighted mean over the windows that contain it, and each of
  those contains a mask voxel (that one), so probabilities inside the mask are unchanged; outside
  the mask they may differ (candidates are only taken inside the lung mask). It saves time only
  where the lung-box grid has windows without lung (on the synthetic LUNA16-like scans every
  window of the box holds lung voxels: 240 of 240 on a 512x512x300 scan, 18 of 18 on the default
  test scans, so nothing is saved there).
* On CPU the fp32 model runs in the fused inference form of :mod:`pipeline.models.segmenter_fused`
  (same logits to float round-off, about 2x faster per window on this project's 2-core CPU);
  models it does not know run with channels-last 3D weights. For bf16 it runs as a full-bf16
  copy (AMX/oneDNN: about 1.9x the unfused fp32 speed per window on this project's AMX Xeon, but
  no faster than the fused fp32 model: 22.0 s vs 22.7 s for a 512x512x300 scan's segmenter).
  Probabilities differ from fp32 (up to 0.29 on one of the 6 default test scans), so
  ``precision: auto`` stays fp32 on CPU.
"""
from __future__ import annotations

import functools
import logging

import numpy as np
import torch

from pipeline.runtime import autocast

log = logging.getLogger(__name__)
ROI_MODES = ("auto", "lung", "whole")
SKIPPED_LOGIT = -30.0  # sigmoid(-30) ~ 1e-13: skipped windows only reach voxels outside the mask


def roi_mode(mode: str, device: torch.device) -> str:
    """``lung`` or ``whole`` for ``mode`` (``auto``: whole on CUDA, lung box elsewhere)."""
    if mode != "auto":
        return mode
    return "whole" if torch.device(device).type == "cuda" else "lung"


def cpu_bf16_fast() -> bool:
    """True when this CPU has native bf16 matrix units (AMX-BF16) that oneDNN uses."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch
        return False


def segmenter_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The segmenter's compute dtype (None = fp32): :func:`pipeline.runtime.resolve_precision`
    (``auto`` = fp32 on CPU). ``bf16`` on CPU runs a full-bf16 copy of the model: 1.9x the unfused
    fp32 speed per window where :func:`cpu_bf16_fast` (no faster than the fused fp32 model), and
    on 1 of 6 default test scans the findings' order changed (probabilities up to 0.29 apart), so
    it is not chosen by ``auto``."""
    from pipeline.runtime import resolve_precision

    return resolve_precision(precision, torch.device(device))


@functools.lru_cache(maxsize=4)
def _cpu_variant(model: torch.nn.Module, bf16: bool, fuse: bool = True) -> torch.nn.Module:
    """The model for CPU inference: fp32 -> :func:`pipeline.models.segmenter_fused.fuse_for_inference`
    (BatchNorms folded, upsample+conv as transposed convs, sliced head; logits equal to round-off,
    about 2x faster per window) when the structure allows it; otherwise (and for bf16) a copy with
    channels-last 3D conv weights (all weights in bf16 if asked)."""
    import copy

    if fuse and not bf16 and isinstance(model, torch.nn.Module) and hasattr(model, "net"):
        from pipeline.models.segmenter_fused import fuse_for_inference

        fused = fuse_for_inference(model.eval())
        if fused is not None:
            return fused
    m = copy.deepcopy(model).eval()
    if bf16:
        m = m.to(torch.bfloat16)
    for mod in m.modules():
        if isinstance(mod, torch.nn.Conv3d):
            mod.weight.data = mod.weight.data.contiguous(memory_format=torch.channels_last_3d)
    return m


def _predictor(model: torch.nn.Module, device: torch.device, amp_dtype: torch.dtype | None, fuse: bool = True):
    """``f(windows (B, 1, z, y, x) float32) -> logits (B, 1, z, y, x) float32`` for ``device``."""
    if device.type != "cpu":
        def run(x):
            with autocast(device, amp_dtype):
                return model(x).float()
        return run
    bf16 = amp_dtype == torch.bfloat16
    m = _cpu_variant(model, bf16, fuse)
    adapter = getattr(m, "adapter", None)
    if not bf16 or adapter is None or not hasattr(m, "net"):
        def run(x):
            with autocast(device, amp_dtype):
                return m(x.contiguous(memory_format=torch.channels_last_3d)).float()
        return run

    def run_bf16(x):  # NoduleSegmenter.forward with a bf16 net (the adapter's HU scaling in fp32)
        from pipeline.models.segmenter import pad_to_stride

        size = x.shape[2:]
        h = adapter.float()(pad_to_stride(x, adapter.window_hu[0])).to(torch.bfloat16).contiguous(memory_format=torch.channels_last_3d)
        y = m.net(h).float()
        return y[..., : size[0], : size[1], : size[2]]
    return run_bf16


def _window_has_mask(mask: torch.Tensor):
    """Per window of a MONAI ``unravel_slice`` list: does it hold a mask voxel."""
    def has(win_slice) -> bool:
        return bool(mask[tuple(win_slice[2:])].any())
    return has


@torch.inference_mode()
def segment(array_zyx: np.ndarray, model: torch.nn.Module, roi_size, sw_batch_size: int, overlap: float,
            device: torch.device, amp_dtype: torch.dtype | None = None, cval: float = -1000.0,
            mask_zyx: np.ndarray | None = None, fuse: bool = True) -> np.ndarray:
    """Segmenter probability map float32 (z, y, x) of an HU volume (z, y, x) by MONAI gaussian
    sliding-window inference (``roi_size`` voxels (z, y, x), ``overlap`` fraction, padding with
    ``cval``). ``mask_zyx`` (same shape, bool/uint8): windows without a mask voxel are skipped
    (probabilities inside the mask unchanged, see the module docstring). ``fuse=False`` runs the
    unfused channels-last model on CPU (the baseline of ``benchmarks/bench_detect.py``)."""
    from monai.inferers import sliding_window_inference

    device = torch.device(device)
    x = torch.from_numpy(np.ascontiguousarray(array_zyx)).float()[None, None].to(device)
    predict = _predictor(model, device, amp_dtype, fuse)
    kw = {}
    if mask_zyx is not None:
        m = torch.from_numpy(np.ascontiguousarray(mask_zyx).astype(bool, copy=False))
        pads = []  # the padding MONAI applies to inputs smaller than the window
        for k in range(2, -1, -1):
            diff = max(int(roi_size[k]) - m.shape[k], 0)
            pads += [diff // 2, diff - diff // 2]
        if any(pads):
            m = torch.nn.functional.pad(m[None, None].float(), pads)[0, 0].bool()
        has = _window_has_mask(m)

        def predict_masked(win, slices):
            keep = [i for i, s in enumerate(slices) if has(s)]
            out = torch.full(win.shape, SKIPPED_LOGIT, dtype=torch.float32, device=win.device)
            if keep:
                idx = torch.tensor(keep, device=win.device)
                out[idx] = predict(win[idx])
            return out
        kw = {"with_coord": True}
        fn = predict_masked
    else:
        fn = predict
    logits = sliding_window_inference(x, tuple(int(r) for r in roi_size), int(sw_batch_size), fn,
                                      overlap=float(overlap), mode="gaussian", padding_mode="constant",
                                      cval=float(cval), **kw)
    return torch.sigmoid(logits.float())[0, 0].cpu().numpy().astype(np.float32)
