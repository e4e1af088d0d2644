"""DICOM SEG + SR of a scan's findings (``detect --dicom-out``), read back with highdicom: the SEG's
frames sit on the source slices, its pixels equal the label map, it references the source series and
frame of reference; the SR's measurements equal the findings. On a synthetic DICOM series, an enhanced
multi-frame one, and the real LIDC-IDRI-0003 slab (when ``../shared`` is present)."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from detect_helpers import make_phantom

hd = pytest.importorskip("highdicom")

from pipeline.detect.dicom_export import export_scan
from pipeline.io.scans import read_scan

NODULE_XYZ = (72.287, 76.900, -190.459)  # LIDC-IDRI-0003's 21 mm nodule (world LPS mm)


def _labels(scan, centres_xyz, radius_mm=6.0):
    g = scan.geometry
    zz, yy, xx = np.indices(tuple(g.shape_zyx))
    world = g.voxel_zyx_to_world(np.c_[zz.ravel(), yy.ravel(), xx.ravel()])
    lab = np.zeros(tuple(g.shape_zyx), np.uint8)
    for k, c in enumerate(centres_xyz, start=1):
        inside = (np.linalg.norm(world - np.asarray(c), axis=1) <= radius_mm).reshape(lab.shape)
        lab[inside & (lab == 0)] = k
    return lab


def _findings(centres_xyz):
    return [{"coordX": c[0], "coordY": c[1], "coordZ": c[2], "probability": 0.9 - 0.1 * k, "type": t,
             "lungrads": cat, "volume_mm3": 900.0 + k, "long_axis_mm": 14.0, "short_axis_mm": 11.0,
             "mean_diameter_mm": 12.5, "solid_volume_mm3": 800.0, "mean_hu": 20.0}
            for k, (c, t, cat) in enumerate(zip(centres_xyz, ("solid", "mass"), ("4B", "4B")))]


def _check(tmp_path, scan, centres):
    import pydicom

    labels = _labels(scan, centres)
    findings = _findings(centres)
    got = export_scan(tmp_path / "dicom", "s1", scan, findings, labels, {"classifier_sha256": "ab" * 32})
    assert set(got) == {"seg", "sr"}, got
    seg = hd.seg.segread(tmp_path / got["seg"])
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in scan.meta["source_files"]]
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert [seg.get_segment_description(n).segment_label.split()[0] for n in seg.get_segment_numbers()] == \
        [f"F{k}" for k in range(1, len(centres) + 1)]
    if scan.meta.get("multiframe"):
        uid = sources[0].SOPInstanceUID
        frames = seg.get_pixels_by_source_frame(uid, source_frame_numbers=list(range(1, labels.shape[0] + 1)),
                                                combine_segments=True, assert_missing_frames_are_empty=True)
        order = [int(n) - 1 for n in scan.meta["instance_numbers"]]
        np.testing.assert_array_equal(frames[order], labels)
    else:
        uids = [ds.SOPInstanceUID for ds in sources]
        pix = seg.get_pixels_by_source_instance(uids, combine_segments=True)  # (slices, rows, cols) labels
        np.testing.assert_array_equal(pix, labels)
        ipp = {tuple(np.round([float(v) for v in ds.ImagePositionPatient], 3)) for ds in sources}
        for fr in seg.PerFrameFunctionalGroupsSequence:  # every frame on a source slice
            assert tuple(np.round([float(v) for v in fr.PlanePositionSequence[0].ImagePositionPatient], 3)) in ipp
    if shutil.which("dciodvfy"):  # dicom3tools' IOD checker, when installed (.ci/run installs it)
        for name in (got["seg"], got["sr"]):
            res = subprocess.run(["dciodvfy", str(tmp_path / name)], capture_output=True, text=True, encoding="utf-8", errors="replace", check=False)
            errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
            assert not errors, (name, errors[:5])
    sr = hd.sr.srread(tmp_path / got["sr"])
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(centres)
    for g, f in zip(groups, findings):
        vals = {m.name.meaning: m.value for m in g.get_measurements()}
        assert vals["Volume"] == pytest.approx(f["volume_mm3"]) and vals["Long Axis"] == pytest.approx(14.0)
        assert vals["Detection score"] == pytest.approx(f["probability"])
        assert g.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        quals = {q.name.meaning: q.value.value for q in g.get_qualitative_evaluations()}
        assert quals["Lung-RADS v2022 category (research aid)"] == "4B" and quals["Nodule type"] == f["type"]
    return seg, sr


@pytest.mark.parametrize("multiframe", [False, True])
def test_synthetic_series_seg_and_sr_read_back(tmp_path, multiframe):
    from pipeline.io.dicom import write_dicom_series
    from pipeline.io.dicom_multiframe import write_multiframe

    arr, geom = make_phantom(shape_zyx=(20, 64, 72), spacing_xyz_mm=(1.0, 1.0, 2.5), seed=4)
    folder = tmp_path / "series"
    if multiframe:
        folder.mkdir()
        write_multiframe(arr, geom, folder / "ct.dcm", seriesuid="1.2.826.0.1.3680043.8.498.901")
    else:
        write_dicom_series(arr, geom, folder, seriesuid="1.2.826.0.1.3680043.8.498.900")
    scan = read_scan(folder)
    c = scan.geometry.voxel_zyx_to_world([10, 30, 30])
    c2 = scan.geometry.voxel_zyx_to_world([5, 40, 50])
    _check(tmp_path, scan, [tuple(c), tuple(c2)])


def test_lidc_slab_seg_and_sr_read_back(tmp_path, shared_dir):
    folder = shared_dir / "data" / "real_ct" / "LIDC-IDRI-0003"
    if not folder.is_dir():
        pytest.skip("LIDC-IDRI-0003 slab not in ../shared")
    scan = read_scan(folder)
    seg, sr = _check(tmp_path, scan, [NODULE_XYZ])
    # objects for a PACS: the source's patient / study identity is carried (opt-in export)
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == scan.meta["study_uid"]


def test_not_exported_without_dicom_source(tmp_path):
    from pipeline.io.scans import write_scan

    arr, geom = make_phantom(shape_zyx=(12, 40, 40), seed=5)
    write_scan(arr, geom, tmp_path / "a.nii.gz")
    scan = read_scan(tmp_path / "a.nii.gz")
    got = export_scan(tmp_path / "dicom", "a", scan, [], np.zeros(tuple(scan.geometry.shape_zyx), np.uint8), {})
    assert got == {"skipped": "not a DICOM series"} and not (tmp_path / "dicom").exists()
