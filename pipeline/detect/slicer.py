"""3D Slicer markups of a scan's findings: ``markups/<id>.mrk.json``, one control point per finding.

The file follows Slicer's markups JSON format (schema ``markups-schema-v1.0.3``): one ``Fiducial``
markup whose control points sit at the findings' centres in **LPS** world mm (``coordinateSystem``
``LPS``, as in ``findings.csv``), so that loading it beside the scan in Slicer (drag and drop, or
``slicer.util.loadMarkups``) puts each point on its finding. The label is ``F<rank>``; the
description carries the type, size, volume, Lung-RADS category (a research aid) and score.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pipeline.utils import write_json

SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/"
          "Schema/markups-schema-v1.0.3.json#")


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def describe(f: dict) -> str:
    """One line about finding ``f`` (a ``findings.csv`` row as a dict)."""
    parts = [str(f.get("type") or "finding")]
    if (d := _num(f.get("mean_diameter_mm"))) is not None:
        parts.append(f"mean {d:.1f} mm")
    if (v := _num(f.get("volume_mm3"))) is not None:
        parts.append(f"{v:.0f} mm3")
    if f.get("lungrads"):
        parts.append(f"Lung-RADS {f['lungrads']} (research aid)")
    if (p := _num(f.get("probability"))) is not None:
        parts.append(f"score {p:.3f}")
    return ", ".join(parts)


def markups(findings: list[dict], name: str = "findings") -> dict:
    """The markups document for ``findings`` (dicts with ``coordX/Y/Z`` in LPS mm, ranked)."""
    points = []
    for k, f in enumerate(findings, start=1):
        xyz = [_num(f.get(c)) for c in ("coordX", "coordY", "coordZ")]
        if any(v is None for v in xyz):
            continue
        points.append({"id": str(k), "label": f"F{k}", "description": describe(f), "associatedNodeID": "",
                       "position": xyz, "orientation": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
                       "selected": True, "locked": True, "visibility": True, "positionStatus": "defined"})
    return {"@schema": SCHEMA, "markups": [{
        "type": "Fiducial", "name": name, "coordinateSystem": "LPS", "coordinateUnits": "mm",
        "locked": True, "fixedNumberOfControlPoints": False, "labelFormat": "F%d",
        "controlPoints": points, "measurements": [],
        "display": {"visibility": True, "opacity": 1.0, "color": [0.9, 0.7, 0.1],
                    "selectedColor": [1.0, 0.5, 0.1], "textScale": 3.0, "glyphType": "Sphere3D",
                    "glyphScale": 3.0, "pointLabelsVisibility": True}}]}


def write_markups(out_dir: str | Path, records: list[dict]) -> list[Path]:
    """``markups/<id>.mrk.json`` for every per-scan record (``scans/<id>.json`` content)."""
    out = Path(out_dir) / "markups"
    return [write_json(out / f"{rec['id']}.mrk.json", markups(rec.get("findings") or [], name=f"{rec['id']} findings"),
                       sort_keys=False)
            for rec in records]
