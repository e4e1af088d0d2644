"""Lung-RADS v2022 category of a finding at a baseline screening CT, from its type and sizes.

A research aid, not a clinical category: the ACR table also weighs prior scans (new, growing,
stable), perifissural and airway findings, and the reader's judgement, none of which is known here.
Sizes are mean diameters (long + short axis) / 2 rounded to 0.1 mm, as the table asks.

Baseline rules (ACR Lung-RADS v2022, summary table):

=============  ===========================================================================
category       finding
=============  ===========================================================================
1              calcified nodule (benign calcification)
2              solid < 6 mm; part-solid < 6 mm total; ground-glass < 30 mm
3              solid 6 to < 8 mm; part-solid >= 6 mm total with solid component < 6 mm;
               ground-glass >= 30 mm
4A             solid 8 to < 15 mm; part-solid with solid component 6 to < 8 mm
4B             solid >= 15 mm; part-solid with solid component >= 8 mm; a mass (> 30 mm)
=============  ===========================================================================
"""
from __future__ import annotations

ORDER = ("0", "1", "2", "3", "4A", "4B", "4X")
DISCLAIMER = "Lung-RADS v2022 category: a research aid computed from size and type, not a clinical category"


def category(nodule_type: str, mean_diameter_mm: float, solid_mean_diameter_mm: float = 0.0) -> str:
    """Baseline Lung-RADS v2022 category (see the module table). ``nodule_type``: solid | part-solid |
    ground-glass | calcified | mass."""
    d, s = float(mean_diameter_mm), float(solid_mean_diameter_mm)
    if nodule_type == "calcified":
        return "1"
    if nodule_type == "mass":
        return "4B"
    if nodule_type == "solid":
        return "2" if d < 6 else "3" if d < 8 else "4A" if d < 15 else "4B"
    if nodule_type == "part-solid":
        if d < 6:
            return "2"
        return "3" if s < 6 else "4A" if s < 8 else "4B"
    if nodule_type == "ground-glass":
        return "2" if d < 30 else "3"
    raise ValueError(f"nodule_type must be one of solid, part-solid, ground-glass, calcified, mass; "
                     f"got {nodule_type!r}")


def highest(categories) -> str:
    """The highest of several categories ("" when there are none)."""
    cats = [c for c in categories if c in ORDER]
    return max(cats, key=ORDER.index) if cats else ""
