"""Hospital DICOM as it really comes: gantry tilt, rounded positions, mixed pixel spacing, a series
split over folders, DICOMDIR CD layouts, enhanced multi-frame CT, file names that are not UTF-8, FIFOs.

Every volume here is a smooth phantom with a bright 'nodule' at a known world position, written as
DICOM with pydicom/SimpleITK; each case asserts the correct result (values and world positions) or
a one-line refusal naming the folder and the reason.
"""
from __future__ import annotations

import logging
import os
import re
import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from pipeline.errors import DataError
from pipeline.io.dicom import write_dicom_series
from pipeline.io.dicom_multiframe import write_multiframe
from pipeline.io.geometry import Geometry
from pipeline.io.image import to_sitk
from pipeline.io.scans import find_scans, read_scan

UID = "1.2.826.0.1.3680043.8.498.2001"
NODULE_XYZ_MM = np.array([4.0, 10.0, -230.0])


@pytest.fixture(scope="module")
def phantom():
    """(int16 HU (z, y, x), Geometry): soft tissue, an air ellipse, a 10 mm ball at NODULE_XYZ_MM."""
    shape = (24, 48, 44)
    g = Geometry((-15.0, -8.0, -245.0), (0.8, 0.8, 1.25), shape_zyx=shape)
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    w = g.voxel_zyx_to_world(np.stack([z.ravel(), y.ravel(), x.ravel()], axis=1)).reshape(*shape, 3)
    arr = np.full(shape, 40.0)
    arr[((w[..., 0] - 2) / 14) ** 2 + ((w[..., 1] - 8) / 12) ** 2 < 1] = -850.0
    d = np.linalg.norm(w - NODULE_XYZ_MM, axis=-1)
    arr = np.where(d < 5.0, 60.0, arr)
    img = sitk.SmoothingRecursiveGaussian(to_sitk(arr.astype(np.float32), g), 0.8)
    return np.rint(sitk.GetArrayFromImage(img)).astype(np.int16), g


def _one_line(path, match, **kw) -> str:
    with pytest.raises(DataError) as exc:
        read_scan(path, **kw)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and re.search(match, msg), msg
    return msg


def _blob_xyz(scan) -> np.ndarray:
    """World centre (x, y, z mm) of the voxels above 30 HU near the nodule (its centroid)."""
    arr = scan.array_zyx
    idx = np.argwhere(arr > 30)
    w = scan.geometry.voxel_zyx_to_world(idx)
    near = np.linalg.norm(w - NODULE_XYZ_MM, axis=1) < 9
    return w[near].mean(axis=0)


def _acquire_tilted(arr, g, tilt_deg):
    """The phantom sampled on planes tilted by ``tilt_deg`` about x while the table steps along z:
    (sheared int16 stack (z, y, x), slice origins (z, 3), orientation cosines)."""
    th = np.radians(tilt_deg)
    row, col = np.array([1.0, 0, 0]), np.array([0, np.cos(th), np.sin(th)])
    dx, dy, dz = g.spacing_xyz_mm
    nz, ny, nx = arr.shape
    p0 = np.asarray(g.origin_xyz_mm) + np.array([0, -ny * dy * (1 - np.cos(th)) / 2, 0])
    A = np.column_stack([row * dx, col * dy, [0, 0, dz]])
    tf = sitk.AffineTransform(3)
    tf.SetMatrix(A.ravel().tolist())
    tf.SetTranslation(p0.tolist())
    out = sitk.Resample(to_sitk(arr.astype(np.float32), g), [nx, ny, nz], tf, sitk.sitkLinear,
                        (0, 0, 0), (1, 1, 1), np.eye(3).ravel().tolist(), 40.0, sitk.sitkFloat32)
    positions = p0 + np.outer(np.arange(nz), [0, 0, dz])
    return np.rint(sitk.GetArrayFromImage(out)).astype(np.int16), positions, (*row, *col)


def test_gantry_tilt_is_resampled_not_read_as_oblique(tmp_path, phantom, caplog):
    arr, g = phantom
    truth = _blob_xyz(read_scan(write_dicom_series(arr, g, tmp_path / "straight", seriesuid=UID)))
    assert np.linalg.norm(truth - NODULE_XYZ_MM) < 0.3
    for tilt in (15.0, -25.0):
        sheared, pos, ori = _acquire_tilted(arr, g, tilt)
        folder = write_dicom_series(sheared, g, tmp_path / f"tilt{tilt:g}", seriesuid=UID,
                                    positions_xyz_mm=pos, orientation=ori)
        with caplog.at_level(logging.WARNING, logger="pipeline"):
            scan = read_scan(folder)
        assert any(re.search(rf"gantry tilt of {abs(tilt):.1f} degrees", r.getMessage()) for r in caplog.records)
        assert scan.meta["gantry_tilt_deg"] == pytest.approx(abs(tilt), abs=0.05)
        err = np.linalg.norm(_blob_xyz(scan) - truth)
        assert err < 0.8, (tilt, err)
        # the sheared stack read as an oblique grid (what was done before) puts the nodule far off
        naive = Geometry(tuple(pos[0]), (*g.spacing_xyz_mm[:2], g.spacing_xyz_mm[2] * np.cos(np.radians(tilt))),
                         direction=np.column_stack([ori[:3], ori[3:], np.cross(ori[:3], ori[3:])]),
                         shape_zyx=sheared.shape)
        naive_err = np.linalg.norm(_blob_xyz(type(scan)(sheared, naive, UID)) - truth)
        assert naive_err > 3 * err + 2, (tilt, naive_err, err)


def test_true_oblique_series_is_not_called_tilted(tmp_path, phantom, caplog):
    arr, _ = phantom
    th = np.radians(20)
    d = np.array([[1, 0, 0], [0, np.cos(th), -np.sin(th)], [0, np.sin(th), np.cos(th)]])
    g = Geometry((-15.0, -8.0, -245.0), (0.8, 0.8, 1.25), direction=d, shape_zyx=arr.shape)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        scan = read_scan(write_dicom_series(arr, g, tmp_path / "obl", seriesuid=UID))
    assert "gantry_tilt_deg" not in scan.meta
    assert not any("tilt" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(scan.array_zyx, arr)
    np.testing.assert_allclose(scan.geometry.direction_matrix, d, atol=1e-5)


@pytest.mark.parametrize("dz", [1.25, 0.625])
def test_positions_rounded_to_0_1_mm_are_read(tmp_path, phantom, dz):
    arr, _ = phantom
    g = Geometry((-15.03, -8.01, -245.017), (0.8, 0.8, dz), shape_zyx=arr.shape)
    scan = read_scan(write_dicom_series(arr, g, tmp_path / "r", seriesuid=UID, position_decimals=1))
    np.testing.assert_array_equal(scan.array_zyx, arr)
    assert scan.geometry.spacing_xyz_mm[2] == pytest.approx(dz, abs=0.01)
    ref = sitk.ReadImage(sorted(str(p) for p in (tmp_path / "r").iterdir()))  # SimpleITK reads it too
    assert np.allclose(scan.geometry.origin_xyz_mm, ref.GetOrigin(), atol=1e-6)


def test_rounded_positions_still_refuse_a_missing_slice(tmp_path, phantom):
    arr, _ = phantom
    g = Geometry((-15.03, -8.01, -245.017), (0.8, 0.8, 0.625), shape_zyx=arr.shape)
    folder = write_dicom_series(arr, g, tmp_path / "r", seriesuid=UID, position_decimals=1)
    (folder / "slice0007.dcm").unlink()
    _one_line(folder, r"missing slice: gap of 1\.[23]00 mm where the series' spacing is 0\.6")


def test_mixed_pixel_spacing_refused(tmp_path, phantom):
    arr, g = phantom
    folder = write_dicom_series(arr, g, tmp_path / "ps", seriesuid=UID)
    f = folder / "slice0010.dcm"
    ds = pydicom.dcmread(f)
    ds.PixelSpacing = [0.9, 0.9]
    ds.save_as(f)
    _one_line(folder, r"slices of one series have different PixelSpacing \(mm\) \(0\.8, 0\.8 and 0\.9, 0\.9\)")


def test_series_split_over_folders_is_one_scan(tmp_path, phantom):
    arr, g = phantom
    src = write_dicom_series(arr, g, tmp_path / "src", seriesuid=UID)
    root = tmp_path / "export" / "PAT1"
    for k, f in enumerate(sorted(src.iterdir())):
        part = root / f"SE0{k // 10}"
        part.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, part / f"IM{k:04d}")
    assert find_scans(tmp_path / "export") == [root]
    scan = read_scan(root)
    np.testing.assert_array_equal(scan.array_zyx, arr)
    assert scan.geometry == read_scan(src).geometry


def test_dicomdir_cd_layout(tmp_path, phantom):
    from pydicom.fileset import FileSet

    arr, g = phantom
    src = write_dicom_series(arr, g, tmp_path / "src", seriesuid=UID)
    fs = FileSet()
    for f in sorted(src.iterdir()):
        ds = pydicom.dcmread(f)
        ds.PatientID, ds.PatientName, ds.StudyDate, ds.StudyTime = "ANON", "ANON", "20260101", "120000"
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 2, int(ds.InstanceNumber)
        fs.add(ds)
    cd = tmp_path / "CD"
    fs.write(cd)
    assert (cd / "DICOMDIR").is_file()
    scans = find_scans(cd)
    assert len(scans) == 1 and scans[0] != cd, scans  # the DICOMDIR root is not a scan
    np.testing.assert_array_equal(read_scan(scans[0]).array_zyx, arr)
    np.testing.assert_array_equal(read_scan(cd).array_zyx, arr)  # the CD root read as a whole


def test_enhanced_multiframe_equals_single_frames(tmp_path, phantom):
    arr, g = phantom
    single = read_scan(write_dicom_series(arr, g, tmp_path / "single", seriesuid=UID + ".1"))
    folder = tmp_path / "mf"
    write_multiframe(arr[::-1].copy(), g.with_shape(arr.shape), folder / "ct.dcm", seriesuid=UID,
                     positions_xyz_mm=np.array([g.voxel_zyx_to_world((k, 0, 0)).ravel()
                                                for k in range(arr.shape[0])])[::-1])
    scan = read_scan(folder)
    np.testing.assert_array_equal(scan.array_zyx, single.array_zyx)
    assert scan.geometry == single.geometry
    assert scan.meta["multiframe"] is True
    assert find_scans(tmp_path) == [folder, tmp_path / "single"] or set(find_scans(tmp_path)) == {
        folder, tmp_path / "single"}


def test_non_utf8_file_names_are_read(tmp_path, phantom):
    arr, g = phantom
    src = write_dicom_series(arr, g, tmp_path / "src", seriesuid=UID)
    bad = os.fsencode(tmp_path) + b"/caf\xe9"  # Latin-1 bytes from a Windows share
    os.mkdir(bad)
    for f in sorted(src.iterdir()):
        shutil.copy(f, bad + b"/" + f.name.encode() + b"\xff.dcm")
    folder = os.fsdecode(bad)
    np.testing.assert_array_equal(read_scan(folder).array_zyx, arr)
    mhd = os.fsdecode(os.fsencode(tmp_path) + b"/scan\xe9.mhd")
    from pipeline.io.scans import write_scan

    write_scan(arr, g, tmp_path / "plain.mhd")
    os.rename(tmp_path / "plain.mhd", mhd)
    raw = (tmp_path / "plain.raw")
    assert raw.exists()
    np.testing.assert_array_equal(read_scan(mhd).array_zyx, arr)
    nrrd = os.fsdecode(os.fsencode(tmp_path) + b"/scan\xe9.nrrd")
    write_scan(arr, g, tmp_path / "p.nrrd")
    os.rename(tmp_path / "p.nrrd", nrrd)
    np.testing.assert_array_equal(read_scan(nrrd).array_zyx, arr)


def test_fifo_in_a_dicom_folder_is_skipped(tmp_path, phantom):
    arr, g = phantom
    folder = write_dicom_series(arr, g, tmp_path / "s", seriesuid=UID)
    os.mkfifo(folder / "pipe")
    os.mkfifo(tmp_path / "pipe.dcm")
    assert find_scans(tmp_path) == [folder]
    np.testing.assert_array_equal(read_scan(folder).array_zyx, arr)


def test_several_series_copies_and_a_localizer(tmp_path, phantom):
    from pipeline.io.discover import ScanInput, find_scan_inputs

    arr, g = phantom
    mixed = tmp_path / "mixed"
    a = write_dicom_series(arr, g, tmp_path / "a", seriesuid=UID + ".1")
    b = write_dicom_series(arr[::-1].copy(), g, tmp_path / "b", seriesuid=UID + ".2")
    scout = write_dicom_series(arr[:2], g.with_shape((2, *arr.shape[1:])), tmp_path / "c", seriesuid=UID + ".3",
                               extra_tags={"0008|0008": "ORIGINAL\\PRIMARY\\LOCALIZER"})
    mixed.mkdir()
    for src in (a, b, scout):
        for f in src.iterdir():
            shutil.move(f, mixed / f"{src.name}_{f.name}")
    assert find_scan_inputs(mixed) == [ScanInput(mixed, UID + ".1"), ScanInput(mixed, UID + ".2")]
    np.testing.assert_array_equal(read_scan(mixed, series_uid=UID + ".2").array_zyx, arr[::-1])
    _one_line(mixed, r"folder holds 3 DICOM series")  # read_scan without series_uid: which one?
    copies = tmp_path / "copies"
    for name in ("one", "two"):
        shutil.copytree(tmp_path / "src", copies / name) if (tmp_path / "src").exists() else \
            write_dicom_series(arr, g, copies / name, seriesuid=UID)
    assert sorted(find_scan_inputs(copies)) == [ScanInput(copies / "one"), ScanInput(copies / "two")]
