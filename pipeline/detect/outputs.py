"""Detection outputs: per-scan result JSON (the resume marker), NIfTI maps on the original grid,
the aggregated ``findings.csv`` / ``errors.csv`` and ``run.json``. Every file is written atomically.
They hold results only, no timings or device/host details (those go to the run log), so the same
scans and models give the same bytes on every run.

Privacy: only the SeriesInstanceUID (the LUNA16 scan key), the input path given by the user and
non-identifying geometry go into these files; no other DICOM header value is ever read.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.detect.scan import FINDING_COLUMNS, ScanFindings
from pipeline.io.geometry import Geometry
from pipeline.utils import atomic_path, read_json, write_csv, write_json

OUTPUT_COLUMNS = FINDING_COLUMNS + ["scan"]
ERROR_COLUMNS = ["scan", "reason"]


def safe_id(name: str) -> str:
    """File-name-safe scan id (letters, digits, ``.-_``)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return s or "scan"


def result_path(out_dir: Path, scan_id: str) -> Path:
    return Path(out_dir) / "scans" / f"{scan_id}.json"


def error_path(out_dir: Path, scan_id: str) -> Path:
    return Path(out_dir) / "scans" / f"{scan_id}.error.json"


def write_scan_result(out_dir: Path, scan_id: str, rel: str, res: ScanFindings,
                      extra: dict | None = None) -> Path:
    """``scans/<id>.json``: the findings of one scan; its presence marks the scan done."""
    err = error_path(out_dir, scan_id)
    if err.exists():
        err.unlink()
    rec = {"id": scan_id, "scan": rel, "status": "ok", "seriesuid": res.seriesuid,
           "n_candidates": int(res.n_candidates),
           "geometry": res.geometry.to_dict() if res.geometry else None,
           "original_geometry": res.original_geometry.to_dict() if res.original_geometry else None,
           "findings": res.findings.astype(object).where(res.findings.notna(), None).to_dict("records"),
           **(extra or {})}
    return write_json(result_path(out_dir, scan_id), rec)


def write_scan_error(out_dir: Path, scan_id: str, rel: str, reason: str) -> Path:
    """``scans/<id>.error.json`` (not a done marker: failed scans are retried on the next run)."""
    return write_json(error_path(out_dir, scan_id), {"id": scan_id, "scan": rel, "status": "failed",
                                                     "reason": reason})


def _reference(geometry: Geometry, pixel_id):
    import SimpleITK as sitk

    z, y, x = (int(v) for v in geometry.shape_zyx)
    return geometry.apply_to_sitk(sitk.Image([x, y, z], pixel_id))


def finding_mask(findings: pd.DataFrame, geometry: Geometry) -> np.ndarray:
    """uint8 (z, y, x) on ``geometry``: finding k (rank, 1-based) painted as a sphere of its diameter.

    Higher-ranked findings win where spheres overlap. Distances are in mm (orthonormal directions).
    """
    mask = np.zeros(tuple(geometry.shape_zyx), np.uint8)
    sp = np.asarray(geometry.spacing_zyx_mm, float)
    shape = np.asarray(geometry.shape_zyx)
    for k in range(min(len(findings), 255) - 1, -1, -1):  # lowest rank first, rank 1 painted last
        row = findings.iloc[k]
        c = geometry.world_to_voxel_zyx([row["coordX"], row["coordY"], row["coordZ"]])
        r_mm = max(float(row["diameter_mm"]) / 2.0, float(sp.max()) / 2.0)
        lo = np.maximum(np.floor(c - r_mm / sp).astype(int), 0)
        hi = np.minimum(np.ceil(c + r_mm / sp).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        zz, yy, xx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        d2 = ((zz - c[0]) * sp[0]) ** 2 + ((yy - c[1]) * sp[1]) ** 2 + ((xx - c[2]) * sp[2]) ** 2
        box = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        box[d2 <= r_mm * r_mm] = k + 1
    return mask


def write_maps(maps_dir: Path, scan_id: str, res: ScanFindings) -> tuple[Path, Path]:
    """``<id>_prob.nii.gz`` (float32 probability, resampled linearly onto the ORIGINAL scan grid)
    and ``<id>_findings.nii.gz`` (uint8 finding ranks), both opening aligned with the scan in Slicer."""
    import SimpleITK as sitk

    from pipeline.io.scans import to_sitk

    orig = res.original_geometry
    prob_img = to_sitk(res.prob_zyx.astype(np.float32), res.geometry)
    prob_orig = sitk.Resample(prob_img, _reference(orig, sitk.sitkFloat32), sitk.Transform(), sitk.sitkLinear,
                              0.0, sitk.sitkFloat32)
    mask_img = to_sitk(finding_mask(res.findings, orig), orig)
    out = []
    for name, img in (("prob", prob_orig), ("findings", mask_img)):
        p = Path(maps_dir) / f"{scan_id}_{name}.nii.gz"
        with atomic_path(p, suffix=".nii.gz") as tmp:
            sitk.WriteImage(img, str(tmp), useCompression=True)
        out.append(p)
    return out[0], out[1]


def collect(out_dir: Path, scan_ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(findings, errors, per-scan records) of ``scan_ids`` from the per-scan files."""
    rows, errs, recs = [], [], []
    for sid in scan_ids:
        rp, ep = result_path(out_dir, sid), error_path(out_dir, sid)
        if rp.is_file():
            rec = read_json(rp)
            recs.append(rec)
            rows += [{**f, "scan": rec["scan"]} for f in rec["findings"]]
        elif ep.is_file():
            e = read_json(ep)
            errs.append({"scan": e["scan"], "reason": e["reason"]})
    findings = pd.DataFrame(rows, columns=OUTPUT_COLUMNS)
    if len(findings):
        findings = findings.sort_values(["scan", "probability"], ascending=[True, False], kind="stable")
    return findings.reset_index(drop=True), pd.DataFrame(errs, columns=ERROR_COLUMNS), recs


def write_tables(out_dir: Path, findings: pd.DataFrame, errors: pd.DataFrame) -> None:
    """``findings.csv`` (first five columns = a LUNA16 submission) and ``errors.csv``."""
    write_csv(Path(out_dir) / "findings.csv", findings, float_format="%.6g")
    write_csv(Path(out_dir) / "errors.csv", errors)


def model_provenance(model_dir: Path | None) -> dict | None:
    """What identifies a model folder: path, sha256 of model.pt, its provenance.json and task/encoder."""
    if model_dir is None:
        return None
    from pipeline.utils import sha256_file

    d = Path(model_dir)
    cfg = read_json(d / "config.json") if (d / "config.json").is_file() else {}
    return {"dir": str(d), "model_sha256": sha256_file(d / "model.pt") if (d / "model.pt").is_file() else None,
            "task": cfg.get("task"), "encoder": (cfg.get("model") or {}).get("encoder"),
            "provenance": read_json(d / "provenance.json") if (d / "provenance.json").is_file() else None}


def timing_summary(seconds: list[dict]) -> dict:
    """Mean / median / total seconds per step over per-scan ``{step: seconds}`` dicts (for the run log)."""
    seconds = [s for s in seconds if s]
    if not seconds:
        return {}
    df = pd.DataFrame(seconds).astype(float)
    return {c: {"mean": round(float(df[c].mean()), 3), "median": round(float(df[c].median()), 3),
                "total": round(float(df[c].sum()), 3)} for c in df.columns}
