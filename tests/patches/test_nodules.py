"""Segmenter targets from annotations: two planted nodules (one off-centre), an excluded finding."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from pipeline.io.geometry import Geometry
from pipeline.patches.nodules import draw_targets, nodule_table

COLS = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]


def _geometry() -> Geometry:
    # flipped x and z axes, anisotropic voxels: the mask must still land on the world positions
    return Geometry((150.0, -40.0, 80.0), (0.8, 0.8, 1.25), np.diag([-1.0, 1.0, -1.0]), (120, 300, 300))


def test_two_nodules_one_off_centre_and_an_excluded_finding():
    geom = _geometry()
    centre_xyz = geom.voxel_zyx_to_world((60, 150, 150))           # the cube's candidate
    a = centre_xyz + (1.5, -1.0, 0.5)                                # nodule A near the centre, 8 mm
    b = centre_xyz + (-12.0, 9.0, 4.0)                               # nodule B off-centre, 6 mm
    c = centre_xyz + (3.0, 14.0, -6.0)                               # excluded finding, diameter unknown
    far = centre_xyz + (80.0, 0.0, 0.0)                              # a nodule outside the cube
    ann = pd.DataFrame([("s", *a, 8.0), ("s", *b, 6.0), ("s", *far, 10.0)], columns=COLS)
    exc = pd.DataFrame([("s", *c, -1.0)], columns=COLS)
    table = nodule_table(ann, exc, {"s": geom, "other": geom})
    assert list(table["kind"]) == ["nodule", "nodule", "nodule", "excluded"]
    size = (38, 60, 60)                                              # 48 mm at (1.25, 0.8, 0.8) mm
    start = np.array([60, 150, 150]) - np.array(size) // 2
    mask, ignore = draw_targets(table, start, size)
    lab, n = ndi.label(mask)
    assert n == 2                                                    # A and B, not the far one
    voxel_ml = 0.8 * 0.8 * 1.25
    for world, d in ((a, 8.0), (b, 6.0)):
        v = np.rint(geom.world_to_voxel_zyx(world)).astype(int) - start
        assert mask[tuple(v)] == 1
        vol = (lab == lab[tuple(v)]).sum() * voxel_ml
        assert abs(vol - np.pi / 6 * d ** 3) < 0.2 * np.pi / 6 * d ** 3
        com = np.array(ndi.center_of_mass(lab == lab[tuple(v)])) + start
        np.testing.assert_allclose(geom.voxel_zyx_to_world(com), world, atol=0.5)  # centred on the annotation
    vc = np.rint(geom.world_to_voxel_zyx(c)).astype(int) - start
    assert ignore[tuple(vc)] == 1 and not (ignore & mask).any()
    assert abs(ignore.sum() * voxel_ml - np.pi / 6 * 10.0 ** 3) < 0.2 * np.pi / 6 * 10.0 ** 3  # unknown = 10 mm


def test_excluded_overlapping_a_nodule_keeps_the_nodule():
    geom = _geometry()
    p = geom.voxel_zyx_to_world((60, 150, 150))
    ann = pd.DataFrame([("s", *p, 8.0)], columns=COLS)
    exc = pd.DataFrame([("s", *p, 12.0)], columns=COLS)
    mask, ignore = draw_targets(nodule_table(ann, exc, {"s": geom}), (40, 130, 130), (40, 40, 40))
    assert mask[20, 20, 20] == 1 and ignore[20, 20, 20] == 0
    assert ignore.sum() > 0 and not (ignore & mask).any()


def test_a_mass_is_a_target_not_an_ignore_region():
    """An excluded finding of patches.mass_min_mm (30 mm) or more is a mass: drawn into the mask (the
    segmenter learns it), and store rows inside it count as positives for the segmenter's sampling."""
    from pipeline.patches.nodules import in_masses

    geom = _geometry()
    p = geom.voxel_zyx_to_world((60, 150, 150))
    q = geom.voxel_zyx_to_world((60, 100, 100))
    exc = pd.DataFrame([("s", *p, 36.0), ("s", *q, 12.0)], columns=COLS)
    ann = pd.DataFrame(columns=COLS)
    table = nodule_table(ann, exc, {"s": geom}, mass_min_mm=30.0)
    assert list(table["kind"]) == ["mass", "excluded"]
    assert list(nodule_table(ann, exc, {"s": geom})["kind"]) == ["excluded", "excluded"]  # off: both ignored
    mask, ignore = draw_targets(table, (30, 100, 100), (60, 100, 100))
    vol = mask.sum() * 0.8 * 0.8 * 1.25
    assert abs(vol - np.pi / 6 * 36.0 ** 3) < 0.1 * np.pi / 6 * 36.0 ** 3 and mask[30, 50, 50] == 1
    assert ignore[30, 0, 0] == 1 and not (ignore & mask).any()
    index = pd.DataFrame({"seriesuid": ["s", "s", "t"], "vox_z": [60, 60, 60], "vox_y": [160, 100, 150],
                          "vox_x": [150, 150, 150]})
    assert in_masses(index, table).tolist() == [True, False, False]
