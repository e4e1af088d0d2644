"""Detection outputs: per-scan result JSON (the resume marker), NIfTI maps on the original grid,
the aggregated ``findings.csv`` / ``errors.csv`` and ``run.json``. Every file is written atomically.
They hold results only, no timings or device/host details (those go to the run log), so the same
scans and models give the same bytes on every run.

Reuse: ``scans/<id>.json`` holds the scan's content ``identity`` (:mod:`pipeline.detect.identity`)
and the ``run_key`` of the models + params; a rerun reuses it only when both match, and a scan
whose name clashes with a different scan's result writes to ``<id>-<content hash prefix>``.

Privacy: only the SeriesInstanceUID (the LUNA16 scan key), the input path given by the user,
non-identifying geometry and a sha256 of the scan's bytes go into these files; no other DICOM
header value is ever read.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.detect.findings import MEASURE_COLUMNS
from pipeline.detect.scan import FINDING_COLUMNS, ScanFindings
from pipeline.io.geometry import Geometry
from pipeline.utils import atomic_path, read_json, write_csv, write_json

OUTPUT_COLUMNS = FINDING_COLUMNS + MEASURE_COLUMNS + ["scan"]
ERROR_COLUMNS = ["scan", "reason"]


MAX_ID_CHARS = 120  # per-scan files are ``<id>.error.json``, crops ``<id>_<k>.png``: far below 255 bytes


def safe_id(name: str) -> str:
    """File-name-safe scan id (letters, digits, ``.-_``), at most :data:`MAX_ID_CHARS` characters (a
    longer name is cut and a hash of the whole name appended, so distinct names stay distinct)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "scan"
    if len(s) > MAX_ID_CHARS:
        digest = hashlib.sha1(os.fsencode(name)).hexdigest()[:10]
        s = s[:MAX_ID_CHARS - 11].rstrip("._") + "-" + digest
    return s


def result_path(out_dir: Path, scan_id: str) -> Path:
    return Path(out_dir) / "scans" / f"{scan_id}.json"


def error_path(out_dir: Path, scan_id: str) -> Path:
    return Path(out_dir) / "scans" / f"{scan_id}.error.json"


def read_result(out_dir: Path, scan_id: str) -> dict | None:
    """The per-scan result ``scans/<id>.json``, or None when absent or unreadable (a damaged file
    is redone, never trusted)."""
    p = result_path(out_dir, scan_id)
    try:
        rec = read_json(p)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("status") == "ok" and "findings" in rec else None


def claim_id(out_dir: Path, base_id: str, identity: str) -> str:
    """The id a scan of content ``identity`` writes its result under: ``base_id`` unless that slot
    holds the result of a different scan (same file name, other content), then
    ``<base_id>-<identity prefix>``, so results of different scans never overwrite each other."""
    alt = f"{base_id}-{identity.split(':', 1)[-1][:12]}"
    for sid in (base_id, alt):
        rec = read_result(out_dir, sid)
        if rec is None or rec.get("identity") in (None, identity):
            return sid
    return alt


def identity_index(out_dir: Path, run_key: str) -> dict[str, str]:
    """``{identity: id}`` of the per-scan results in ``scans/`` made under ``run_key``: an identical
    scan met under another name (or another id after a name clash) reuses its result."""
    index: dict[str, str] = {}
    for p in sorted(Path(out_dir, "scans").glob("*.json")):
        if p.name.endswith(".error.json"):
            continue
        rec = read_result(out_dir, p.stem)
        if rec is not None and rec.get("run_key") == run_key and rec.get("identity") and rec.get("id") == p.stem:
            index.setdefault(rec["identity"], p.stem)
    return index


def reusable(out_dir: Path, scan_id: str, identity: str, run_key: str, save_maps: bool) -> bool:
    """True when ``scans/<id>.json`` is the result of this very content under these models and
    params (``run_key``) and the files it refers to (crops, and maps when asked for) exist."""
    rec = read_result(out_dir, scan_id)
    if rec is None or rec.get("identity") != identity or rec.get("run_key") != run_key:
        return False
    out = Path(out_dir)
    if not all((out / c).is_file() for c in rec.get("crops", [])):
        return False
    dicom = rec.get("dicom") or {}
    if not all((out / dicom[k]).is_file() for k in ("seg", "sr") if k in dicom):
        return False
    return not save_maps or all((out / "maps" / f"{scan_id}_{k}.nii.gz").is_file() for k in ("prob", "findings"))


def write_scan_result(out_dir: Path, scan_id: str, rel: str, res: ScanFindings,
                      extra: dict | None = None) -> Path:
    """``scans/<id>.json``: the findings of one scan, with the ``identity`` of its content and the
    ``run_key`` of the models + params in ``extra``: the pair under which it is reused."""
    err = error_path(out_dir, scan_id)
    if err.exists():
        err.unlink()
    rec = {"id": scan_id, "scan": rel, "status": "ok", "seriesuid": res.seriesuid,
           "n_candidates": int(res.n_candidates),
           "geometry": res.geometry.to_dict() if res.geometry else None,
           "original_geometry": res.original_geometry.to_dict() if res.original_geometry else None,
           "findings": res.findings.astype(object).where(res.findings.notna(), None).to_dict("records"),
           "lungrads_highest": _highest(res.findings),
           **(extra or {})}
    return write_json(result_path(out_dir, scan_id), rec)


def _highest(findings: pd.DataFrame) -> str:
    from pipeline.measure.lungrads import highest

    return highest(findings["lungrads"].dropna()) if "lungrads" in findings else ""


def write_scan_error(out_dir: Path, scan_id: str, rel: str, reason: str) -> Path:
    """``scans/<id>.error.json`` (not a done marker: failed scans are retried on the next run)."""
    return write_json(error_path(out_dir, scan_id), {"id": scan_id, "scan": rel, "status": "failed",
                                                     "reason": reason})


def _reference(geometry: Geometry, pixel_id):
    import SimpleITK as sitk

    z, y, x = (int(v) for v in geometry.shape_zyx)
    return geometry.apply_to_sitk(sitk.Image([x, y, z], pixel_id))


def finding_mask(findings: pd.DataFrame, geometry: Geometry, masks: list | None = None) -> np.ndarray:
    """uint8 (z, y, x) on ``geometry``: finding k (rank, 1-based) = label k: its lesion mask when
    measured (``masks[k - 1]``, a :class:`~pipeline.measure.segment.LesionMask` on this grid), else a
    sphere of its diameter. Higher-ranked findings win where they overlap. Distances in mm."""
    mask = np.zeros(tuple(geometry.shape_zyx), np.uint8)
    sp = np.asarray(geometry.spacing_zyx_mm, float)
    shape = np.asarray(geometry.shape_zyx)
    for k in range(min(len(findings), 255) - 1, -1, -1):  # lowest rank first, rank 1 painted last
        les = masks[k] if masks and k < len(masks) else None
        if les is not None and not les.empty:
            box = tuple(slice(s, s + n) for s, n in zip(les.start_zyx, les.mask_zyx.shape))
            mask[box][les.mask_zyx] = k + 1
            continue
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
    and ``<id>_findings.nii.gz`` (uint8: label k = finding k's lesion mask), both opening aligned with
    the scan in Slicer."""
    import SimpleITK as sitk

    from pipeline.io.scans import to_sitk

    orig = res.original_geometry
    prob_img = to_sitk(res.prob_zyx.astype(np.float32), res.geometry)
    prob_orig = sitk.Resample(prob_img, _reference(orig, sitk.sitkFloat32), sitk.Transform(), sitk.sitkLinear,
                              0.0, sitk.sitkFloat32)
    mask_img = to_sitk(finding_mask(res.findings, orig, res.masks), orig)
    out = []
    for name, img in (("prob", prob_orig), ("findings", mask_img)):
        p = Path(maps_dir) / f"{scan_id}_{name}.nii.gz"
        with atomic_path(p, suffix=".nii.gz") as tmp:
            sitk.WriteImage(img, str(tmp), useCompression=True)
        out.append(p)
    return out[0], out[1]


def collect(out_dir: Path, done: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(findings, errors, per-scan records) of the scans of this run, in the order given.

    ``done``: one ``{id, scan, status, reason}`` per scan (``status`` ok / reused / failed); the
    ``scan`` column shows the path given in this run (a reused result may come from a copy)."""
    rows, errs, recs = [], [], []
    for d in done:
        rec = read_result(out_dir, d["id"]) if d["status"] != "failed" else None
        if rec is None:
            reason = d.get("reason") or f"{d['scan']}: result file scans/{d['id']}.json unreadable"
            errs.append({"scan": d["scan"], "reason": reason})
            continue
        rec = {**rec, "scan": d["scan"]}
        recs.append(rec)
        rows += [{**f, "scan": rec["scan"]} for f in rec["findings"]]
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
