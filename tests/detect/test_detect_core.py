"""Candidate extraction, NMS, scoring and single-scan detection on planted nodules."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.detect.candidates import components, equivalent_diameter_mm, nms, top_candidates
from pipeline.detect.config import DetectConfig
from pipeline.detect.score import combine
from pipeline.errors import ConfigError
from pipeline.io.geometry import Geometry

FLIPPED = np.diag([1.0, -1.0, -1.0])


def _frame(rows):
    return pd.DataFrame(rows, columns=["coordX", "coordY", "coordZ", "seg_score"])


def test_nms_merges_duplicates_within_radius_and_keeps_the_higher():
    df = _frame([(0, 0, 0, 0.6), (3, 0, 0, 0.9), (0, 4, 0, 0.7), (30, 0, 0, 0.5), (30, 0, 9.9, 0.8)])
    kept = nms(df, nms_mm=5.0)
    assert kept[["coordX", "coordY", "coordZ"]].values.tolist() == [[3, 0, 0], [30, 0, 9.9], [30, 0, 0]]
    # (0,0,0) is 3 mm from the 0.9 one -> merged; (0,4,0) is 5 mm away -> kept at nms 4.9 only
    assert len(nms(df, nms_mm=4.9)) == 4
    assert len(nms(df, nms_mm=0)) == 5
    assert list(nms(df.iloc[:0], 5.0).columns) == list(df.columns)


@pytest.mark.parametrize("direction", [np.eye(3), FLIPPED])
def test_component_world_centre_and_diameter_exact_on_planted_sphere(direction):
    spacing = (0.8, 0.8, 1.5)
    geom = Geometry((12.5, -40.0, 100.0), spacing, direction, (50, 80, 90))
    centre_zyx = np.array([22.0, 41.0, 37.0])
    r_mm = 6.0
    zz, yy, xx = np.indices(geom.shape_zyx)
    d2 = ((zz - centre_zyx[0]) * 1.5) ** 2 + ((yy - centre_zyx[1]) * 0.8) ** 2 + ((xx - centre_zyx[2]) * 0.8) ** 2
    sphere = d2 <= r_mm ** 2
    prob = np.where(sphere, 0.9, 0.05).astype(np.float32)
    prob[5:8, 5:8, 5:8] = 0.95  # a second blob outside the lung mask: ignored
    lung = np.zeros(geom.shape_zyx, np.uint8)
    lung[10:, 10:, 10:] = 1
    df = components(prob, lung, geom, threshold=0.5)
    assert len(df) == 1
    want = geom.voxel_zyx_to_world(centre_zyx)
    got = df[["coordX", "coordY", "coordZ"]].to_numpy()[0]
    np.testing.assert_allclose(got, want, atol=1e-6)
    # the world position really is the flipped-grid position of the voxel, not origin + index*spacing
    if direction is FLIPPED:
        assert got[1] < -40.0 and got[2] < 100.0
    vol_voxels = int(sphere.sum())
    assert df["n_voxels"].iloc[0] == vol_voxels
    assert df["diameter_mm"].iloc[0] == pytest.approx(float(equivalent_diameter_mm(vol_voxels, spacing[::-1])))
    assert df["diameter_mm"].iloc[0] == pytest.approx(2 * r_mm, rel=0.05)
    assert df["seg_score"].iloc[0] == pytest.approx(0.9)
    # weighted centroid follows the probability mass
    prob2 = prob.copy()
    prob2[sphere & (xx > centre_zyx[2])] = 0.6
    c2 = components(prob2, lung, geom, 0.5)[["pz", "py", "px"]].to_numpy()[0]
    assert c2[2] < centre_zyx[2]


def test_top_candidates_nms_and_cap():
    geom = Geometry((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), np.eye(3), (40, 40, 40))
    prob = np.zeros(geom.shape_zyx, np.float32)
    for k, (z, y, x) in enumerate([(10, 10, 10), (10, 10, 14), (30, 30, 30), (10, 30, 30)]):
        prob[z, y, x] = prob[z, y, x + 1] = 0.6 + 0.1 * k
    got = top_candidates(prob, None, geom, threshold=0.5, nms_mm=6.0, max_candidates=2)
    assert len(got) == 2 and got["seg_score"].tolist() == pytest.approx([0.9, 0.8])
    assert len(top_candidates(prob, None, geom, threshold=0.5, nms_mm=6.0, max_candidates=10)) == 3


def test_combine_and_config_validation():
    s, c = np.array([0.9, 0.25]), np.array([0.4, 1.0])
    np.testing.assert_allclose(combine(s, c, "geomean"), [0.6, 0.5])
    np.testing.assert_allclose(combine(s, c, "classifier"), c)
    np.testing.assert_allclose(combine(s, c, "product"), s * c)
    np.testing.assert_allclose(combine(s, None, "geomean"), s)
    with pytest.raises(ConfigError, match="classifier, geomean"):
        DetectConfig(combine="max")
    with pytest.raises(ConfigError, match="roi_size"):
        DetectConfig(roi_size=(8, 64, 64))
    assert DetectConfig(roi_size=[32, 32, 32], subsets=[0, 1]).subsets == (0, 1)


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, 1.0, -1.0])])
def test_detect_scan_finds_planted_nodules_and_maps_to_original_voxels(direction):
    import torch
    from detect_helpers import BlobSegmenter, ContrastClassifier, make_phantom, preprocess_ctx

    from pipeline.detect.scan import detect_scan
    from pipeline.io.scans import Scan

    torch.set_num_threads(1)
    nods = (((-22.0, 3.0, 2.0), 10.0), ((20.0, -8.0, -10.0), 7.0))
    arr, geom = make_phantom(direction=direction, nodules=nods)
    scan = Scan(arr, geom, "1.2.3.4", "phantom")
    cfg = DetectConfig(roi_size=(32, 32, 32), max_findings=10, nms_mm=8.0)
    ctx = preprocess_ctx()
    res = detect_scan(scan, BlobSegmenter(), ctx, ContrastClassifier(), ctx, cfg, "cpu", keep_maps=True)
    f = res.findings
    assert 1 <= len(f) <= 10 and f["probability"].is_monotonic_decreasing
    assert set(res.seconds) == {"preprocess", "segmenter", "candidates", "classifier", "measure"}
    assert res.prob_zyx.shape == tuple(res.geometry.shape_zyx)
    xyz = f[["coordX", "coordY", "coordZ"]].to_numpy()
    for c, d in nods:
        dist = np.linalg.norm(xyz - np.asarray(c), axis=1)
        hit = np.flatnonzero(dist <= d / 2)
        assert hit.size, f"nodule at {c} not found: {f}"
        row = f.iloc[hit[0]]
        assert row["diameter_mm"] == pytest.approx(d, rel=0.15)  # the measured mean diameter
        assert row["type"] == "solid" and row["lungrads"] == ("4A" if d >= 8 else "3")
        assert np.linalg.norm(xyz[hit[0]] - np.asarray(c)) < 1.0  # the mask's centre
        # index columns = nearest voxel of the ORIGINAL grid
        np.testing.assert_array_equal(row[["index_z", "index_y", "index_x"]].to_numpy(int),
                                      geom.world_to_nearest_voxel_zyx(xyz[hit[0]]))
        assert arr[tuple(row[["index_z", "index_y", "index_x"]].to_numpy(int))] > -300
    # the true nodules outrank everything else (the phantom has no other bright blobs in the lungs)
    top2 = np.linalg.norm(xyz[:2, None] - np.array([c for c, _ in nods])[None], axis=2).min(axis=1)
    assert np.all(top2 <= 5.0)


def test_segmenter_on_lung_box_equals_whole_volume():
    """Running the segmenter only on the lung bounding box (+ margin) changes nothing inside the lungs."""
    import torch
    from detect_helpers import BlobSegmenter, ContrastClassifier, make_phantom, preprocess_ctx

    from pipeline.detect.scan import detect_scan
    from pipeline.io.scans import Scan

    torch.set_num_threads(1)
    arr, geom = make_phantom(shape_zyx=(50, 110, 120), direction=np.diag([1.0, -1.0, 1.0]),
                             nodules=(((-22.0, 3.0, 2.0), 10.0), ((20.0, -8.0, -10.0), 7.0)))
    scan, ctx = Scan(arr, geom, "9.9", "p"), preprocess_ctx()
    out = {}
    for margin in (None, 16.0):
        cfg = DetectConfig(roi_size=(32, 32, 32), nms_mm=8.0, lung_margin_mm=margin)
        out[margin] = detect_scan(scan, BlobSegmenter(), ctx, ContrastClassifier(), ctx, cfg, "cpu", keep_maps=True)
    a, b = out[None], out[16.0]
    # window tiling differs between the two runs (a window's border sees padding), so values agree
    # to blending precision, not bit for bit
    assert len(a.findings) == len(b.findings)
    cols = ["coordX", "coordY", "coordZ"]
    np.testing.assert_allclose(a.findings[cols].to_numpy(), b.findings[cols].to_numpy(), atol=0.05)
    np.testing.assert_allclose(a.findings["probability"], b.findings["probability"], atol=1e-3)
    assert np.count_nonzero(b.prob_zyx) < np.count_nonzero(a.prob_zyx)  # the body outside the box is skipped


def test_mask_overlap_across_boxes():
    """Two lesion masks on boxes of the same scan grid touch when one, grown by a voxel, meets the other
    (detect drops a finding that touches a mass's mask: the same mass, its edge, a lobe)."""
    from types import SimpleNamespace as NS

    from pipeline.detect.scan import _overlaps

    a = NS(start_zyx=(10, 10, 10), mask_zyx=np.ones((3, 3, 3), bool))
    b = NS(start_zyx=(13, 10, 10), mask_zyx=np.ones((3, 3, 3), bool))  # next slice
    c = NS(start_zyx=(15, 10, 10), mask_zyx=np.ones((3, 3, 3), bool))  # two empty slices between
    assert _overlaps(a, b) and _overlaps(b, a) and not _overlaps(a, c) and _overlaps(a, c, 3)
    d = NS(start_zyx=(12, 12, 12), mask_zyx=np.zeros((3, 3, 3), bool))
    assert not _overlaps(a, d) and not _overlaps(d, a)
