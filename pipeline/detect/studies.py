"""Per-study summary of a detection run: ``studies.csv`` (and the top of ``report.html``).

A study is a DICOM StudyInstanceUID; a scan without one (a NIfTI / MetaImage / NRRD file) is its own
study, keyed by its scan id. Per study: the scans, the findings, the largest finding (mean diameter,
mm) and the highest Lung-RADS category (a research aid). No patient identifiers.
"""
from __future__ import annotations

import math

import pandas as pd

COLUMNS = ["study", "study_uid", "scans", "findings", "largest_mean_diameter_mm", "largest_type",
           "highest_lungrads"]


def studies_table(records: list[dict]) -> pd.DataFrame:
    """One row per study over per-scan records (``scans/<id>.json`` content), in first-seen order."""
    from pipeline.measure.lungrads import highest

    groups: dict[str, list[dict]] = {}
    for rec in records:
        groups.setdefault(rec.get("study_uid") or f"scan:{rec['id']}", []).append(rec)
    rows = []
    for key, recs in groups.items():
        found = [f for r in recs for f in (r.get("findings") or [])]
        sized = [f for f in found if _num(f.get("mean_diameter_mm")) is not None]
        big = max(sized, key=lambda f: _num(f["mean_diameter_mm"])) if sized else None
        cats = [f["lungrads"] for f in found if f.get("lungrads")]
        rows.append({"study": key if not key.startswith("scan:") else recs[0]["id"],
                     "study_uid": "" if key.startswith("scan:") else key,
                     "scans": len(recs), "findings": len(found),
                     "largest_mean_diameter_mm": round(_num(big["mean_diameter_mm"]), 1) if big else None,
                     "largest_type": (big.get("type") or "") if big else "",
                     "highest_lungrads": highest(cats) if cats else ""})
    return pd.DataFrame(rows, columns=COLUMNS)


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
