"""Detection on one scan: preprocess as in training -> segmenter (sliding window) -> components
-> NMS -> classifier -> combined probability, mapped back to the original scan's voxels."""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from pipeline.detect.candidates import CANDIDATE_COLUMNS, top_candidates
from pipeline.detect.config import DetectConfig
from pipeline.detect.score import classify, combine, cut_patches, patch_params
from pipeline.io.geometry import Geometry
from pipeline.io.scans import Scan
from pipeline.runtime import resolve_precision

log = logging.getLogger(__name__)
FINDING_COLUMNS = ["seriesuid", "coordX", "coordY", "coordZ", "probability", "diameter_mm",
                   "index_z", "index_y", "index_x", "seg_score", "cls_score"]
"""``coordX/Y/Z`` world LPS mm (the centre of the finding's mask when measured); ``index_z/y/x`` nearest
voxel of the ORIGINAL scan grid; ``diameter_mm`` the Lung-RADS mean diameter when measured, else the
segmenter component's equivalent-sphere diameter. Measured findings add
:data:`pipeline.detect.findings.MEASURE_COLUMNS`."""
STEPS = ("io", "preprocess", "segmenter", "candidates", "classifier", "measure")


@dataclass
class ScanFindings:
    """Result of :func:`detect_scan`.

    Attributes:
        seriesuid: scan key (LUNA16 / DICOM SeriesInstanceUID, or the file stem).
        findings: DataFrame with :data:`FINDING_COLUMNS`, sorted by probability (descending).
        n_candidates: candidates scored by the classifier (after NMS and ``max_candidates``).
        seconds: per step (``preprocess``, ``segmenter``, ``candidates``, ``classifier``).
        geometry: preprocessed grid of ``prob_zyx``; ``original_geometry`` the scan's own grid.
        prob_zyx: float32 segmenter probability map (z, y, x) on ``geometry`` (None unless kept).
    """

    seriesuid: str
    findings: pd.DataFrame
    n_candidates: int
    seconds: dict[str, float] = field(default_factory=dict)
    geometry: Geometry | None = None
    original_geometry: Geometry | None = None
    prob_zyx: np.ndarray | None = None
    masks: list = field(default_factory=list)  # per finding: LesionMask on the original grid (or None)


def preprocess_config(model_config: dict):
    """The PreprocessConfig a model was trained with (from its config.json ``preprocess.params``)."""
    from pipeline.config import from_dict
    from pipeline.preprocess import PreprocessConfig

    params = dict((model_config.get("preprocess") or {}).get("params") or {})
    fields = {f.name for f in dataclasses.fields(PreprocessConfig)}
    params = {k: v for k, v in params.items() if k in fields}
    if not params:
        log.warning("model config.json has no preprocess params; using the preprocess defaults")
        if model_config.get("spacing_xyz_mm"):
            params["spacing_xyz_mm"] = model_config["spacing_xyz_mm"]
    return from_dict(PreprocessConfig, params, "preprocess (from model config.json)")


def amp_dtype_for(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype (:func:`pipeline.runtime.resolve_precision`): ``auto`` = bf16 on a CUDA GPU with
    native bf16, fp16 on other CUDA GPUs, fp32 (None) on CPU."""
    return resolve_precision(precision, device)


def lung_box(lung_zyx: np.ndarray, geometry: Geometry, margin_mm: float | None) -> tuple[slice, ...] | None:
    """Slices (z, y, x) of the lung mask's bounding box grown by ``margin_mm`` (None = whole volume;
    returns None when the mask is empty and a margin is set)."""
    if margin_mm is None:
        return tuple(slice(0, n) for n in lung_zyx.shape)
    from scipy import ndimage as ndi

    objs = ndi.find_objects(lung_zyx.astype(np.uint8))
    if not objs or objs[0] is None:
        return None
    m = np.ceil(float(margin_mm) / np.asarray(geometry.spacing_zyx_mm)).astype(int)
    return tuple(slice(max(s.start - k, 0), min(s.stop + k, n)) for s, k, n in zip(objs[0], m, lung_zyx.shape))


def segment(array_zyx: np.ndarray, model: torch.nn.Module, cfg: DetectConfig, device: torch.device,
            amp_dtype: torch.dtype | None = None, cval: float = -1000.0,
            mask_zyx: np.ndarray | None = None) -> np.ndarray:
    """Segmenter probability map float32 (z, y, x) by MONAI gaussian sliding-window inference with
    ``cfg``'s roi / overlap / sw_batch_size (:func:`pipeline.detect.segment.segment`; windows without
    a ``mask_zyx`` voxel are skipped)."""
    from pipeline.detect.segment import segment as run

    return run(array_zyx, model, cfg.roi_size, cfg.sw_batch_size, cfg.overlap, device, amp_dtype, cval, mask_zyx)


def _overlaps(a, b, margin_vox: int = 1) -> bool:
    """Whether two lesion masks (boxes of the same scan grid) touch: ``b`` dilated by ``margin_vox``."""
    from scipy import ndimage as ndi

    lo = np.maximum(np.asarray(a.start_zyx), np.asarray(b.start_zyx) - margin_vox)
    hi = np.minimum(np.asarray(a.start_zyx) + a.mask_zyx.shape, np.asarray(b.start_zyx) + b.mask_zyx.shape + margin_vox)
    if np.any(hi <= lo):
        return False
    sa = tuple(slice(l - s, h - s) for l, h, s in zip(lo, hi, a.start_zyx))
    if not a.mask_zyx[sa].any():
        return False
    grown = np.pad(b.mask_zyx, [(margin_vox, margin_vox)] * 3)
    if margin_vox:
        grown = ndi.binary_dilation(grown, iterations=margin_vox)
    start_b = np.asarray(b.start_zyx) - margin_vox
    sb = tuple(slice(l - s, h - s) for l, h, s in zip(lo, hi, start_b))
    return bool((a.mask_zyx[sa] & grown[sb]).any())


def _settle_masses(found: pd.DataFrame, masks: list, searched: np.ndarray, mass: np.ndarray):
    """Keep a mass seed's finding only when it measured as a mass (a seed is a place to look, not a
    finding); then one finding per mass: a finding whose centre lies inside a mass's mask or whose own
    mask touches it (the same mass seen twice, its edge, a lobe cut off by the measurement) is dropped."""
    keep = ~searched | mass
    xyz = found[["coordX", "coordY", "coordZ"]].to_numpy(float)
    for i in np.flatnonzero(mass & keep):
        m = masks[i]
        if m is None or not keep[i]:
            continue
        v = np.rint(m.geometry.world_to_voxel_zyx(xyz)).reshape(-1, 3).astype(int)
        inside = np.all((v >= 0) & (v < np.asarray(m.mask_zyx.shape)), axis=1)
        hit = np.zeros(len(found), bool)
        hit[inside] = m.mask_zyx[tuple(v[inside].T)]
        for j in np.flatnonzero(keep & ~hit):
            hit[j] = j != i and masks[j] is not None and _overlaps(masks[j], m)
        hit[i] = False
        keep &= ~hit
    return found[keep], [m for m, k in zip(masks, keep) if k]


def detect_scan(scan: Scan, seg_model: torch.nn.Module, seg_cfg: dict, cls_model: torch.nn.Module | None,
                cls_cfg: dict | None, cfg: DetectConfig | None = None, device: str | torch.device = "cpu", *,
                keep_maps: bool = False, preprocess_fn=None) -> ScanFindings:
    """Find nodules in one scan.

    Args:
        scan: the CT (any geometry/direction); ``scan.array_zyx`` HU (z, y, x).
        seg_model / seg_cfg: segmenter and its config.json dict (preprocess params are read from it).
        cls_model / cls_cfg: classifier and its config.json (None, or ``cfg.combine == 'segmenter'``:
            no classifier; ``cls_score`` is then NaN).
        cfg: detection parameters.
        device: torch device of both models.
        keep_maps: keep the probability map in the result (for ``--save-maps``).
        preprocess_fn: ``f(scan, PreprocessConfig) -> (array, lung, geometry)``; default
            :func:`pipeline.preprocess.preprocess_scan` (the training preprocessing).

    Returns:
        :class:`ScanFindings` with at most ``cfg.max_findings`` findings.
    """
    cfg = cfg or DetectConfig()
    if preprocess_fn is None:
        from pipeline.preprocess import preprocess_scan as preprocess_fn
    device = torch.device(device)
    amp = amp_dtype_for(cfg.precision, device)
    sec: dict[str, float] = {}
    t = time.perf_counter()
    pcfg = preprocess_config(seg_cfg)
    array, lung, geom = preprocess_fn(scan, pcfg)
    sec["preprocess"] = time.perf_counter() - t

    t = time.perf_counter()
    from pipeline.detect.segment import roi_mode, segmenter_dtype

    box = lung_box(lung, geom, cfg.lung_margin_mm)
    whole = roi_mode(cfg.roi_mode, device) == "whole" or cfg.lung_margin_mm is None
    prob = np.zeros(array.shape, np.float32)
    if box is not None:
        run_box = tuple(slice(0, n) for n in array.shape) if whole else box
        prob[run_box] = segment(array[run_box], seg_model, cfg, device, segmenter_dtype(cfg.precision, device),
                                cval=pcfg.window_hu[0], mask_zyx=lung[run_box])
    sec["segmenter"] = time.perf_counter() - t

    t = time.perf_counter()
    if box is None:  # empty lung mask: nothing to look at
        cands = pd.DataFrame(columns=CANDIDATE_COLUMNS)
    else:
        start = [sl.start for sl in box]
        box_geom = Geometry(tuple(geom.voxel_zyx_to_world(start).tolist()), geom.spacing_xyz_mm, geom.direction,
                            prob[box].shape)  # the crop's own grid: world positions stay exact
        cands = top_candidates(prob[box], lung[box], box_geom, threshold=cfg.seg_threshold, nms_mm=cfg.nms_mm,
                               max_candidates=cfg.max_candidates, min_size_mm=cfg.min_size_mm,
                               max_size_mm=None if cfg.measure else cfg.max_size_mm)
    searched = np.zeros(len(cands), bool)
    filled = None
    if cfg.measure and box is not None:  # masses the segmenter may leave out: looked for by CT values
        from pipeline.measure.masses import filled_lungs, mass_seeds

        filled = filled_lungs(lung, geom)
        seeds = mass_seeds(array, lung, geom, filled=filled)
        if len(seeds):
            idx = np.clip(np.rint(geom.world_to_voxel_zyx(seeds)).reshape(-1, 3).astype(int), 0,
                          np.asarray(array.shape) - 1)
            extra = pd.DataFrame({"coordX": seeds[:, 0], "coordY": seeds[:, 1], "coordZ": seeds[:, 2],
                                  "seg_score": prob[tuple(idx.T)].astype(float), "diameter_mm": np.nan})
            cands = pd.concat([cands, extra], ignore_index=True)[list(cands.columns)]
            searched = np.r_[searched, np.ones(len(seeds), bool)]
    sec["candidates"] = time.perf_counter() - t

    t = time.perf_counter()
    use_cls = cls_model is not None and cfg.combine != "segmenter" and len(cands) > 0
    cls_score = np.full(len(cands), np.nan)
    rescore = None
    if use_cls:
        c_array, c_geom = array, geom
        ccfg = preprocess_config(cls_cfg or {})
        if ccfg.output_params() != pcfg.output_params():  # trained on other preprocessing: redo it
            c_array, _, c_geom = preprocess_fn(scan, ccfg)

        def rescore(xyz: np.ndarray) -> np.ndarray:
            centers = c_geom.world_to_nearest_voxel_zyx(xyz).reshape(-1, 3)
            patches = cut_patches(c_array, c_geom, centers, getattr(cls_model, "kind", "2d"),
                                  patch_params(cls_cfg or {}))
            return classify(cls_model, patches, batch_size=cfg.batch_size, device=device, amp_dtype=amp)

        cls_score = rescore(cands[["coordX", "coordY", "coordZ"]].to_numpy(float))
    sec["classifier"] = time.perf_counter() - t

    how = cfg.combine if use_cls else "segmenter"
    prob_final = combine(cands["seg_score"].to_numpy(float), cls_score if use_cls else None, how)
    xyz = cands[["coordX", "coordY", "coordZ"]].to_numpy(float).reshape(-1, 3)
    idx = scan.geometry.world_to_nearest_voxel_zyx(xyz).reshape(-1, 3)
    found = pd.DataFrame({"seriesuid": scan.seriesuid, "coordX": xyz[:, 0], "coordY": xyz[:, 1],
                          "coordZ": xyz[:, 2], "probability": prob_final,
                          "diameter_mm": cands["diameter_mm"].to_numpy(float),
                          "index_z": idx[:, 0], "index_y": idx[:, 1], "index_x": idx[:, 2],
                          "seg_score": cands["seg_score"].to_numpy(float), "cls_score": cls_score},
                         columns=FINDING_COLUMNS)
    big = (cands["diameter_mm"].to_numpy(float) > float(cfg.max_size_mm)) if len(cands) else np.zeros(0, bool)
    found.loc[big, "probability"] = found.loc[big, "seg_score"]  # beyond what the classifier saw: a mass
    found.loc[searched, "probability"] = found.loc[searched, "seg_score"]
    found = found.sort_values("probability", ascending=False, kind="stable")
    searched = searched[found.index.to_numpy()]
    keep = np.arange(len(found)) < int(cfg.max_findings)
    if cfg.measure:
        keep |= big[found.index.to_numpy()] | searched  # large components and mass seeds are never cut off
    found, searched = found[keep], searched[keep]
    masks: list = []
    if cfg.measure and len(found):
        from pipeline.detect.findings import measure_findings

        t = time.perf_counter()
        found, masks = measure_findings(scan, found, prob, lung, geom, cfg.seg_threshold,
                                        rescore if use_cls else None, filled=filled)
        if use_cls:
            found["probability"] = combine(found["seg_score"].to_numpy(float), found["cls_score"].to_numpy(float),
                                           how)
        mass = (found["type"] == "mass").to_numpy()
        found.loc[mass, "probability"] = found.loc[mass, "seg_score"]
        found, masks = _settle_masses(found, masks, searched, mass)
        order = np.argsort(-found["probability"].to_numpy(float), kind="stable")
        found, masks = found.iloc[order], [masks[i] for i in order]
        sec["measure"] = time.perf_counter() - t
    return ScanFindings(scan.seriesuid, found.reset_index(drop=True), len(cands), sec, geom, scan.geometry,
                        prob if keep_maps else None, masks)
