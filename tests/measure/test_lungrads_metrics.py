"""Lung-RADS v2022 baseline table at every boundary, and the measurement rules on shapes whose
answers are known analytically (disc, ellipse, sphere, a nodule with a solid core)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.measure.lungrads import category, highest
from pipeline.measure.metrics import axial_axes, max_diameter_3d, measure_mask, nodule_type

TABLE = [  # (type, mean diameter mm, solid component mean diameter mm, category)
    ("calcified", 20.0, 20.0, "1"),
    ("solid", 5.9, 5.9, "2"), ("solid", 6.0, 6.0, "3"), ("solid", 7.9, 7.9, "3"), ("solid", 8.0, 8.0, "4A"),
    ("solid", 14.9, 14.9, "4A"), ("solid", 15.0, 15.0, "4B"), ("solid", 29.9, 29.9, "4B"),
    ("part-solid", 5.9, 3.0, "2"), ("part-solid", 6.0, 0.0, "3"), ("part-solid", 6.0, 5.9, "3"),
    ("part-solid", 12.0, 6.0, "4A"), ("part-solid", 12.0, 7.9, "4A"), ("part-solid", 12.0, 8.0, "4B"),
    ("ground-glass", 29.9, 0.0, "2"), ("ground-glass", 30.0, 0.0, "3"),
    ("mass", 31.0, 31.0, "4B"), ("mass", 70.0, 0.0, "4B"),
]


@pytest.mark.parametrize(("kind", "d", "solid", "cat"), TABLE)
def test_lungrads_v2022_boundaries(kind, d, solid, cat):
    assert category(kind, d, solid) == cat


def test_lungrads_rejects_unknown_type_and_orders_categories():
    with pytest.raises(ValueError, match="nodule_type must be one of solid, part-solid"):
        category("spiculated", 10.0)
    assert highest(["2", "4A", "3"]) == "4A" and highest(["4B", "4A"]) == "4B" and highest([]) == ""


def _grid(shape=(21, 101, 101)):
    return np.ogrid[tuple(slice(0, n) for n in shape)]


def test_axes_of_an_ellipse_and_a_sphere():
    sp = (1.0, 0.5, 0.5)
    z, y, x = _grid()
    ell = (((x - 50) * 0.5 / 15.0) ** 2 + ((y - 50) * 0.5 / 8.0) ** 2 <= 1) & (abs(z - 10) <= 2)
    ax = axial_axes(ell, sp)
    assert ax.long_mm == pytest.approx(30.0, abs=0.6) and ax.short_mm == pytest.approx(16.0, abs=0.6)
    assert ax.mean_mm == pytest.approx(23.0, abs=0.5)
    ball = ((x - 50) * 0.5) ** 2 + ((y - 50) * 0.5) ** 2 + ((z - 10) * 1.0) ** 2 <= 8.0 ** 2
    m = measure_mask(ball, np.where(ball, 40, -850).astype(np.int16), sp)
    assert m["volume_mm3"] == pytest.approx(4 / 3 * np.pi * 8 ** 3, rel=0.03)
    assert m["long_axis_mm"] == pytest.approx(16.0, abs=0.6) and m["short_axis_mm"] == pytest.approx(16.0, abs=0.8)
    assert max_diameter_3d(ball, sp) == pytest.approx(16.5, abs=0.8)
    assert m["type"] == "solid" and m["mean_hu"] == 40.0


def test_solid_component_and_types():
    sp = (0.5, 0.5, 0.5)
    z, y, x = np.ogrid[0:61, 0:61, 0:61]
    r = np.sqrt((z - 30) ** 2 + (y - 30) ** 2 + (x - 30) ** 2) * 0.5
    mask = r <= 7.0
    hu = np.where(r <= 3.0, 30, np.where(mask, -450, -850)).astype(np.int16)
    m = measure_mask(mask, hu, sp)
    assert m["type"] == "part-solid"
    assert m["solid_mean_diameter_mm"] == pytest.approx(6.0, abs=0.8)
    assert m["solid_volume_mm3"] == pytest.approx(4 / 3 * np.pi * 27, rel=0.15)
    assert nodule_type(100.0, 0.0, 8.0, -400.0) == "ground-glass"
    assert nodule_type(100.0, 60.0, 8.0, 60.0) == "solid"
    assert nodule_type(100.0, 60.0, 8.0, 350.0) == "calcified"
    assert nodule_type(30000.0, 20000.0, 42.0, 60.0) == "mass"
