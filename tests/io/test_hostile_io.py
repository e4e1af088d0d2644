"""Hostile inputs for the readers (issue 10): every case ends in a correct result, a logged warning,
or a one-line DataError that names the file and the reason. Real files written by SimpleITK,
nibabel, pydicom and the project's own writers; SimpleITK's reader is the reference geometry.
"""
from __future__ import annotations

import ast
import gzip
import logging
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from pipeline.errors import DataError
from pipeline.io.dicom import write_dicom_series
from pipeline.io.geometry import Geometry
from pipeline.io.scans import find_scans, read_scan, write_scan

UID = "1.2.826.0.1.3680043.8.498.1001"
SHAPE = (6, 20, 18)


def _rot(ax: float, ay: float, az: float) -> np.ndarray:
    a, b, c = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


DIRECTIONS = {
    "identity": np.eye(3),
    "flipped": np.diag([-1.0, 1.0, -1.0]),
    "left_handed": np.diag([-1.0, 1.0, 1.0]),
    "oblique": _rot(12, -20, 31),
    "oblique_flipped": _rot(-7, 15, 40) @ np.diag([1.0, -1.0, 1.0]),
}


@pytest.fixture
def hu():
    """(array int16 HU (z, y, x), Geometry) of a small scan with air and tissue."""
    rng = np.random.default_rng(7)
    arr = rng.integers(-1000, 400, size=SHAPE).astype(np.int16)
    geom = Geometry((-101.5, 12.25, -250.0), (0.7, 0.74, 1.25), shape_zyx=SHAPE)
    return arr, geom


def _one_line_error(path, match: str, **kw) -> str:
    """read_scan(path) raises DataError: one line, starts with the path, reason matches."""
    with pytest.raises(DataError) as exc:
        read_scan(path, **kw)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: "), msg
    assert re.search(match, msg), msg
    assert "ITK ERROR" not in msg and "itk::" not in msg and ".cxx" not in msg, msg
    return msg


def _warned(caplog, match: str) -> str:
    hits = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and re.search(match, r.getMessage())]
    assert hits, f"no warning matching {match!r} in {[r.getMessage() for r in caplog.records]}"
    return hits[0]


def _nifti(arr_zyx: np.ndarray, path: Path, affine_ras: np.ndarray | None = None, **kw) -> Path:
    """Write a NIfTI with nibabel from a (z, y, x) array (stored as [i, j, k] = [x, y, z])."""
    aff = np.diag([0.7, 0.74, 1.25, 1.0]) if affine_ras is None else affine_ras
    img = nib.Nifti1Image(np.asarray(arr_zyx).transpose(2, 1, 0) if arr_zyx.ndim == 3 else arr_zyx, aff, **kw)
    nib.save(img, str(path))
    return path


# ------------------------------------------------------------------ non-finite and non-HU values
@pytest.mark.parametrize("suffix,bad", [(".nii.gz", np.nan), (".nii", np.inf), (".mhd", np.nan),
                                        (".mha", -np.inf), (".nrrd", np.inf)])
def test_non_finite_voxels_rejected_in_every_format(tmp_path, hu, suffix, bad):
    arr, geom = hu
    f = arr.astype(np.float32)
    f[2, 3, 4] = bad
    f[4, 5, 6] = bad
    p = write_scan(f, geom, tmp_path / f"scan{suffix}")
    _one_line_error(p, r"NaN or infinite values \(2 of 2160 voxels\)")


def test_nifti_nan_written_by_nibabel_rejected_where_simpleitk_reads_zero(tmp_path, hu):
    arr, _ = hu
    f = arr.astype(np.float32)
    f[1, 1, 1] = np.nan
    p = _nifti(f, tmp_path / "nan.nii.gz")
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(p)))[1, 1, 1] == 0  # why nibabel reads NIfTI
    _one_line_error(p, "NaN or infinite")


@pytest.mark.parametrize("suffix", [".mhd", ".nii.gz", ".nrrd"])
def test_unsigned_values_without_rescale_rejected(tmp_path, hu, suffix):
    arr, geom = hu
    raw = (arr.astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16)
    p = write_scan(raw, geom, tmp_path / f"u16{suffix}")
    _one_line_error(p, r"voxel values span \d+\.\.\d+ \(uint16\) with none below 0: not Hounsfield units.*-1024")


def test_values_far_beyond_hu_rejected(tmp_path, hu):
    arr, geom = hu
    f = arr.astype(np.float64)
    f[0, 0, 0] = 1e300  # would become inf as float32
    p = write_scan(f, geom, tmp_path / "huge.mha")
    _one_line_error(p, r"voxel values span -?\d+\.\.1e\+300 \(float64\): beyond \+-100000, not Hounsfield units")


def test_nifti_scl_slope_inter_applied(tmp_path, hu):
    arr, _ = hu
    stored = ((arr.astype(np.int32) + 1024) // 2).astype(np.uint16)
    img = nib.Nifti1Image(stored.transpose(2, 1, 0), np.diag([0.7, 0.74, 1.25, 1.0]))
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, str(tmp_path / "scaled.nii"))
    scan = read_scan(tmp_path / "scaled.nii")
    np.testing.assert_array_equal(scan.array_zyx, stored.astype(np.int32) * 2 - 1024)
    assert scan.array_zyx.dtype == np.int16
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "scaled.nii")))
    np.testing.assert_array_equal(scan.array_zyx, ref)
    # a fractional slope gives float32 HU, as SimpleITK's reader does
    img.header.set_slope_inter(0.5, -1000.25)
    nib.save(img, str(tmp_path / "frac.nii.gz"))
    scan = read_scan(tmp_path / "frac.nii.gz")
    assert scan.array_zyx.dtype == np.float32
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "frac.nii.gz")))
    np.testing.assert_allclose(scan.array_zyx, ref, rtol=1e-6)


def test_dicom_unsigned_without_rescale_rejected(tmp_path, hu):
    arr, geom = hu
    folder = write_dicom_series(arr, geom, tmp_path / "u16", seriesuid=UID)
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        ds.PixelRepresentation = 0
        ds.PixelData = (ds.pixel_array.astype(np.int32) + 1024).astype(np.uint16).tobytes()
        ds.RescaleIntercept = "0"
        ds.save_as(f)
    _one_line_error(folder, "none below 0: not Hounsfield units")


# ------------------------------------------------------------------------------------- spacing
@pytest.mark.parametrize("spacing,match", [
    ("0 0 0", r"\(0, 0, 0\) mm: every spacing must be a positive number"),
    ("-0.7 0.74 1.25", r"\(-0.7, 0.74, 1.25\) mm: every spacing must be a positive number"),
    ("0.7 0.74 25", r"\(0.7, 0.74, 25\) mm is outside 0.1 to 10 mm"),
    ("0.0007 0.00074 0.00125", r"is outside 0.1 to 10 mm: not a CT grid \(wrong units"),
    ("nan 1 1", "every spacing must be a positive number"),
])
def test_implausible_spacing_rejected(tmp_path, hu, spacing, match):
    arr, geom = hu
    p = write_scan(arr, geom, tmp_path / "s.mhd")
    p.write_text(re.sub(r"ElementSpacing = .*", f"ElementSpacing = {spacing}", p.read_text(encoding="utf-8")))
    _one_line_error(p, match)


def test_nifti_zero_and_huge_spacing_rejected(tmp_path, hu):
    arr, _ = hu
    raw = bytearray(_nifti(arr, tmp_path / "zero.nii").read_bytes())
    raw[84:88] = np.float32(0.0).tobytes()  # pixdim[2] (y spacing); nibabel would "fix" it to 1 on load
    (tmp_path / "zero.nii.gz").write_bytes(gzip.compress(bytes(raw)))
    _one_line_error(tmp_path / "zero.nii.gz", r"pixdim x, y, z\) = \(0.7, 0, 1.25\) mm: every spacing must be")
    _one_line_error(_nifti(arr, tmp_path / "cm.nii.gz", np.diag([0.07, 0.074, 0.125, 1.0])),
                    "outside 0.1 to 10 mm")


def test_coarse_spacing_warns(tmp_path, hu, caplog):
    arr, _ = hu
    coarse = Geometry((0, 0, 0), (5.0, 5.0, 6.0), shape_zyx=SHAPE)
    p = write_scan(arr, coarse, tmp_path / "coarse.nrrd")
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        scan = read_scan(p)
    assert scan.geometry.spacing_xyz_mm == (5.0, 5.0, 6.0)
    assert str(p) in _warned(caplog, r"in-plane spacing \(5, 5\) mm is coarser than 2 mm")
    _warned(caplog, r"slice spacing 6 mm is coarser than 5 mm")


# ------------------------------------------------------------------------- MetaImage file faults
def test_mhd_truncated_raw(tmp_path, hu):
    arr, geom = hu
    p = write_scan(arr, geom, tmp_path / "t.mhd")
    raw = tmp_path / "t.raw"
    raw.write_bytes(raw.read_bytes()[:1000])
    _one_line_error(p, r"truncated data file 't.raw': expected 4320 bytes, found 1000")


def test_mhd_truncated_headers(tmp_path, hu):
    arr, geom = hu
    p = write_scan(arr, geom, tmp_path / "h.mhd")
    text = p.read_text(encoding="utf-8")
    cut = tmp_path / "cut.mhd"
    cut.write_text(text[: text.index("DimSize")])
    _one_line_error(cut, r"no DimSize or ElementDataFile line|no ElementDataFile")
    mid = tmp_path / "mid.mhd"
    mid.write_text(text.replace("DimSize = 18 20 6", "DimSize = 18 20"))
    _one_line_error(mid, "truncated or inconsistent header: DimSize has 2 values, dimension is 3")
    noraw = tmp_path / "noraw.mhd"
    noraw.write_text(text[: text.index("ElementDataFile")])
    _one_line_error(noraw, r"no ElementDataFile \(truncated header\?\)")
    empty = tmp_path / "empty.mhd"
    empty.write_bytes(b"")
    _one_line_error(empty, r"empty file \(0 bytes\)")


def test_mhd_garbage_and_oversized_headers(tmp_path, hu):
    arr, geom = hu
    p = write_scan(arr, geom, tmp_path / "g.mhd")
    binary = tmp_path / "binary.mhd"
    binary.write_bytes(bytes(range(256)) * 4)
    _one_line_error(binary, r"not a readable MetaImage header \(binary data")
    prose = tmp_path / "prose.mhd"
    prose.write_text("this is not an image\n" * 10)
    _one_line_error(prose, "not a readable MetaImage header")
    huge = tmp_path / "huge.mhd"
    huge.write_bytes(b"x" * (2 << 20))
    _one_line_error(huge, r"header is 2097152 bytes; a MetaImage \.mhd header is a short text file")
    big = tmp_path / "bigdims.mhd"
    big.write_text(p.read_text(encoding="utf-8").replace("DimSize = 18 20 6", "DimSize = 100000 100000 100000"))
    _one_line_error(big, "implausibly large")
    etype = tmp_path / "etype.mhd"
    etype.write_text(p.read_text(encoding="utf-8").replace("MET_SHORT", "MET_BANANA"))
    _one_line_error(etype, "unsupported or missing ElementType 'MET_BANANA'")
    missing = tmp_path / "missing.mhd"
    missing.write_text(p.read_text(encoding="utf-8").replace("g.raw", "gone.raw"))
    _one_line_error(missing, "header points to missing data file 'gone.raw'")


def test_mha_truncated_local_data(tmp_path, hu):
    arr, geom = hu
    p = write_scan(arr, geom, tmp_path / "local.mha")
    p.write_bytes(p.read_bytes()[:-100])
    _one_line_error(p, r"truncated data file \(data inside the header file\): expected 4320 bytes, found 4220")


def test_mhd_data_file_outside_folder_warns(tmp_path, hu, caplog):
    arr, geom = hu
    write_scan(arr, geom, tmp_path / "elsewhere" / "data.mhd")
    hdr = tmp_path / "in" / "scan.mhd"
    hdr.parent.mkdir()
    hdr.write_text((tmp_path / "elsewhere" / "data.mhd").read_text(encoding="utf-8")
                   .replace("ElementDataFile = data.raw", "ElementDataFile = ../elsewhere/data.raw"))
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        scan = read_scan(hdr)
    np.testing.assert_array_equal(scan.array_zyx, arr)
    assert str(hdr) in _warned(caplog, "data file '../elsewhere/data.raw' lies outside the header's folder")


# ----------------------------------------------------------------------------- NRRD file faults
def test_nrrd_garbage_and_truncated(tmp_path, hu):
    arr, geom = hu
    junk = tmp_path / "junk.nrrd"
    junk.write_bytes(b"\x89PNG\r\n" + b"\x00" * 500)
    _one_line_error(junk, r"not a readable NRRD header \(the file does not start with 'NRRD000'\)")
    p = write_scan(arr, geom, tmp_path / "t.nrrd")
    assert p.read_bytes().startswith(b"NRRD000")
    p.write_bytes(p.read_bytes()[:-500])
    _one_line_error(p, r"truncated data file \(data inside the NRRD file\): expected 4320 bytes, found 3820")


# ---------------------------------------------------------------------------- NIfTI file faults
def test_nifti_file_faults(tmp_path, hu):
    arr, geom = hu
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    _one_line_error(empty, r"empty file \(0 bytes\)")
    garbage = tmp_path / "garbage.nii"
    garbage.write_bytes(b"\x00" * 50)
    _one_line_error(garbage, "unreadable NIfTI file: not a valid NIfTI header")
    notgz = tmp_path / "notgz.nii.gz"
    notgz.write_bytes(b"hello world, not gzip" * 30)
    _one_line_error(notgz, "unreadable NIfTI file")
    p = write_scan(arr, geom, tmp_path / "t.nii")
    p.write_bytes(p.read_bytes()[:-1000])
    _one_line_error(p, r"truncated data file: expected 4672 bytes, found 3672")
    pz = write_scan(arr, geom, tmp_path / "t.nii.gz")
    raw = gzip.decompress(pz.read_bytes())
    pz.write_bytes(gzip.compress(raw[:-1000]))
    _one_line_error(pz, "truncated or corrupt NIfTI data")
    pz.write_bytes(gzip.compress(raw)[:-200])
    _one_line_error(pz, "truncated or corrupt")


def test_nifti_2d_4d_and_single_slice(tmp_path, hu, caplog):
    arr, _ = hu
    aff = np.diag([0.7, 0.74, 1.25, 1.0])
    nib.save(nib.Nifti1Image(arr[0].T, aff), str(tmp_path / "flat.nii.gz"))
    _one_line_error(tmp_path / "flat.nii.gz", r"2D image \(shape \(18, 20\)\); a CT scan is a 3D volume")
    vol4 = arr.transpose(2, 1, 0)[..., None]
    nib.save(nib.Nifti1Image(vol4, aff), str(tmp_path / "t1.nii.gz"))
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        scan = read_scan(tmp_path / "t1.nii.gz")
    np.testing.assert_array_equal(scan.array_zyx, arr)
    _warned(caplog, r"4D NIfTI with one time point \(shape \(18, 20, 6, 1\)\), read as the 3D volume")
    nib.save(nib.Nifti1Image(np.repeat(vol4, 3, axis=3), aff), str(tmp_path / "t3.nii.gz"))
    _one_line_error(tmp_path / "t3.nii.gz", r"4D image with 3 time points \(shape \(18, 20, 6, 3\)\)")
    _one_line_error(_nifti(arr[:1], tmp_path / "one.nii.gz"), r"shape \(z, y, x\) \(1, 20, 18\): fewer than 2")
    rgb = np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, aff), str(tmp_path / "rgb.nii"))
    _one_line_error(tmp_path / "rgb.nii", "not a scalar number")


def test_mha_4d_one_and_several_time_points(tmp_path, hu, caplog):
    arr, _ = hu
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(arr)]), str(tmp_path / "t1.mha"))
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        np.testing.assert_array_equal(read_scan(tmp_path / "t1.mha").array_zyx, arr)
    _warned(caplog, "4D image with one time point")
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(arr)] * 3), str(tmp_path / "t3.mha"))
    _one_line_error(tmp_path / "t3.mha", r"4D image with 3 time points")
    sitk.WriteImage(sitk.GetImageFromArray(arr[0]), str(tmp_path / "flat.mha"))
    _one_line_error(tmp_path / "flat.mha", r"2D image")


# ------------------------------------------------ NIfTI geometry == SimpleITK's, incl. oblique/flipped
def _assert_matches_sitk(path: Path, atol_mm: float = 1e-4):
    scan = read_scan(path)
    ref = sitk.ReadImage(str(path))
    np.testing.assert_allclose(scan.geometry.origin_xyz_mm, ref.GetOrigin(), atol=atol_mm)
    np.testing.assert_allclose(scan.geometry.spacing_xyz_mm, ref.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(scan.geometry.direction_matrix, np.reshape(ref.GetDirection(), (3, 3)), atol=1e-5)
    np.testing.assert_array_equal(scan.array_zyx, sitk.GetArrayFromImage(ref))
    # world <-> voxel of a point agrees with ITK's transform
    rng = np.random.default_rng(1)
    for _ in range(5):
        idx_zyx = rng.uniform(0, np.asarray(scan.geometry.shape_zyx) - 1)
        world = scan.geometry.voxel_zyx_to_world(idx_zyx)
        np.testing.assert_allclose(world, ref.TransformContinuousIndexToPhysicalPoint(idx_zyx[::-1].tolist()),
                                   atol=atol_mm)
        assert tuple(scan.geometry.world_to_nearest_voxel_zyx(world)[::-1]) == \
            ref.TransformPhysicalPointToIndex(world.tolist())
    return scan


@pytest.mark.parametrize("name", list(DIRECTIONS))
@pytest.mark.parametrize("writer", ["simpleitk", "nibabel"])
def test_nifti_geometry_equals_simpleitk(tmp_path, hu, name, writer):
    arr, geom = hu
    g = Geometry(geom.origin_xyz_mm, geom.spacing_xyz_mm, DIRECTIONS[name], SHAPE)
    p = tmp_path / f"{name}.nii.gz"
    if writer == "simpleitk":
        write_scan(arr, g, p)
    else:  # nibabel affine in RAS from the LPS geometry
        aff = np.eye(4)
        aff[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ g.index_to_world_matrix
        aff[:3, 3] = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(g.origin_xyz_mm)
        _nifti(arr, p, aff)
    scan = _assert_matches_sitk(p)
    np.testing.assert_allclose(scan.geometry.direction_matrix, g.direction_matrix, atol=1e-5)
    np.testing.assert_allclose(scan.geometry.origin_xyz_mm, g.origin_xyz_mm, atol=1e-4)


@pytest.mark.parametrize("scode,qcode", [(1, 1), (2, 1), (4, 1), (2, 0), (0, 1), (0, 0)])
def test_nifti_qform_sform_choice_equals_simpleitk(tmp_path, hu, scode, qcode, caplog):
    arr, _ = hu
    s_aff = np.diag([0.7, 0.74, 1.25, 1.0])
    s_aff[:3, 3] = [1.0, 2.0, 3.0]
    q_aff = np.eye(4)
    q_aff[:3, :3] = _rot(0, 0, 25) @ np.diag([0.7, 0.74, 1.25])
    q_aff[:3, 3] = [5.0, 6.0, 7.0]
    img = nib.Nifti1Image(arr.transpose(2, 1, 0), None)
    img.header.set_zooms((0.7, 0.74, 1.25))
    img.set_sform(s_aff, code=scode)
    img.set_qform(q_aff, code=qcode)
    nib.save(img, str(tmp_path / "c.nii"))
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        _assert_matches_sitk(tmp_path / "c.nii")
    if scode == qcode == 0:
        _warned(caplog, "neither qform nor sform")


def test_nifti_sheared_sform(tmp_path, hu, caplog):
    arr, _ = hu
    aff = np.diag([0.7, 0.74, 1.25, 1.0])
    sheared = aff.copy()
    sheared[0, 1] = 0.3
    img = nib.Nifti1Image(arr.transpose(2, 1, 0), sheared)
    img.set_qform(aff, code=1)
    img.set_sform(sheared, code=1)
    nib.save(img, str(tmp_path / "with_q.nii"))
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        _assert_matches_sitk(tmp_path / "with_q.nii")  # both fall back to the qform
    _warned(caplog, "sform has non-orthogonal")
    img.set_qform(None, code=0)
    nib.save(img, str(tmp_path / "no_q.nii"))
    with pytest.raises(RuntimeError):
        sitk.ReadImage(str(tmp_path / "no_q.nii"))
    _one_line_error(tmp_path / "no_q.nii", "sform has non-orthogonal .* and there is no qform")


# ------------------------------------------------------------------------------------- DICOM
def _series(tmp_path, hu, name="s", **kw):
    arr, geom = hu
    return write_dicom_series(arr, geom, tmp_path / name, seriesuid=kw.pop("seriesuid", UID), **kw)


def test_dicom_duplicate_slice_rejected(tmp_path, hu):
    folder = _series(tmp_path, hu)
    (folder / "slice0099.dcm").write_bytes((folder / "slice0002.dcm").read_bytes())
    ds = pydicom.dcmread(folder / "slice0099.dcm")
    ds.SOPInstanceUID = UID + ".99"
    ds.save_as(folder / "slice0099.dcm")
    _one_line_error(folder, r"duplicate slice positions in series \(1 slice\(s\) repeat a position\)")


def test_dicom_missing_slice_rejected_not_stretched(tmp_path, hu):
    folder = _series(tmp_path, hu)
    (folder / "slice0003.dcm").unlink()
    _one_line_error(folder, r"missing slice: gap of 2\.500 mm where the series' spacing is 1\.250 mm")
    (folder / "slice0005.dcm").unlink()  # and the last one: the gap inside is still found
    _one_line_error(folder, "missing slice")


def test_dicom_two_series_mixed(tmp_path, hu):
    arr, geom = hu
    a = _series(tmp_path, hu, "a")
    other = UID[:-1] + "9"
    b = write_dicom_series(arr[::-1].copy(), geom, tmp_path / "b", seriesuid=other)
    for i, f in enumerate(sorted(b.iterdir())):
        f.rename(a / f"other{i}.dcm")
    msg = _one_line_error(a, r"folder holds 2 DICOM series \(.*\); choose one \(series_uid\) or split the folder")
    assert UID in msg and other in msg
    np.testing.assert_array_equal(read_scan(a, series_uid=UID).array_zyx, arr)
    np.testing.assert_array_equal(read_scan(a, series_uid=other).array_zyx, arr[::-1])
    _one_line_error(a, r"series 1\.2\.3 not found in folder \(2 series present\)", series_uid="1.2.3")


def test_dicom_modality(tmp_path, hu, caplog):
    arr, _ = hu
    _one_line_error(_series(tmp_path, hu, "mr", modality="MR"), r"not a CT series \(modality MR\)")
    folder = _series(tmp_path, hu, "nomod")
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        del ds.Modality
        ds.save_as(f)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        scan = read_scan(folder)
    np.testing.assert_array_equal(scan.array_zyx, arr)
    assert str(folder) in _warned(caplog, "DICOM series has no Modality tag; reading it as CT")


def test_dicom_damaged_slice_is_a_reason_not_itk_text(tmp_path, hu, caplog):
    arr, _ = hu
    folder = _series(tmp_path, hu)
    last = folder / "slice0005.dcm"
    last.write_bytes(last.read_bytes()[:-300])
    with caplog.at_level(logging.WARNING, logger="pipeline"):  # at the end: no gap, geometry stays right
        np.testing.assert_array_equal(read_scan(folder).array_zyx, arr[:5])
    assert str(folder) in _warned(caplog, r"1 DICOM file\(s\) in the folder belong to no readable series "
                                          r"\(damaged\?\), e\.g\. 'slice0005\.dcm'")
    f = folder / "slice0002.dcm"
    f.write_bytes(f.read_bytes()[:-300])
    _one_line_error(folder, r"missing slice: gap of 2\.500 mm .*; 2 DICOM file\(s\) in the folder could not be "
                            r"read \(damaged\?\), e\.g\. 'slice0002\.dcm'")


def test_dicom_without_preamble_is_found_and_read(tmp_path, hu):
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    arr, _ = hu
    folder = _series(tmp_path, hu, "raw")
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        out = DicomBytesIO()
        out.is_little_endian, out.is_implicit_VR = True, False
        write_dataset(out, ds)
        f.write_bytes(out.getvalue())
    assert (folder / "slice0000.dcm").read_bytes()[128:132] != b"DICM"
    assert find_scans(tmp_path) == [folder]
    np.testing.assert_array_equal(read_scan(folder).array_zyx, arr)


def test_folder_of_non_dicom_junk(tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes").write_text("hello")
    (junk / "image0001").write_bytes(os.urandom(400))
    (junk / "fake.dcm").write_bytes(b"\x08\x00\x05\x00" + b"not really" * 20)
    assert find_scans(tmp_path) == []
    _one_line_error(junk, r"no DICOM series found in folder \(no file in it is DICOM\)")


# ------------------------------------------------------------------ paths: unicode, spaces, links
@pytest.mark.parametrize("suffix", [".mhd", ".nii.gz", ".nrrd", "dicom"])
def test_unicode_and_spaces_in_paths(tmp_path, hu, suffix):
    arr, geom = hu
    folder = tmp_path / "Ünïcödé dir ✓" / "with  spaces"
    if suffix == "dicom":
        p = write_dicom_series(arr, geom, folder / "série DICOM ✓", seriesuid=UID)
    else:
        p = write_scan(arr, geom, folder / f"scan één ✓{suffix}")
    assert find_scans(tmp_path) == [p]
    scan = read_scan(p)
    np.testing.assert_array_equal(scan.array_zyx, arr)
    np.testing.assert_allclose(scan.geometry.origin_xyz_mm, geom.origin_xyz_mm, atol=1e-4)


def test_missing_paths_and_dangling_links(tmp_path):
    _one_line_error(tmp_path / "absent.mhd", "no such file or folder$")
    link = tmp_path / "dangling.nii.gz"
    link.symlink_to(tmp_path / "nowhere.nii.gz")
    _one_line_error(link, r"no such file or folder \(a link to a missing target\)")
    (tmp_path / "notes.xyz").write_text("x")
    _one_line_error(tmp_path / "notes.xyz", "unknown scan format")


# ------------------------------------------------------------------------------------ discovery
def test_discovery_ignores_what_is_not_a_scan(tmp_path, hu, caplog):
    arr, geom = hu
    case = tmp_path / "case"
    p = write_scan(arr, geom, case / "scan.nii.gz")
    (case / "README").write_text("read me")
    (case / "README.md").write_text("# notes")
    (case / "table.xlsx").write_bytes(b"PK\x03\x04" + os.urandom(300))
    (case / "results.csv").write_text("a,b\n1,2\n")
    (case / "link_to_readme").symlink_to(case / "README")
    (case / "dangling").symlink_to(case / "gone")
    (case / "dangling.mhd").symlink_to(case / "gone.mhd")
    (case / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (case / ".tmp-abc").mkdir()
    write_scan(arr, geom, case / ".tmp-abc" / "half.mhd")
    m = write_scan(arr, geom, tmp_path / "mhdcase" / "a.mhd")
    n = write_scan(arr, geom, tmp_path / "mhdcase" / "b.nrrd")
    (tmp_path / "mhdcase" / "notes.txt").write_text("x")
    (tmp_path / "mhdcase" / "a.nii.gz.bak").write_bytes(b"old")
    d = write_dicom_series(arr, geom, tmp_path / "dcm", seriesuid=UID)
    (d / "README.txt").write_text("series notes")
    (d / "DICOMDIR.xlsx").write_bytes(b"junk")
    with caplog.at_level(logging.DEBUG, logger="pipeline.io"):
        found = find_scans(tmp_path)
    assert sorted(found) == sorted([p, m, n, d])
    debug = caplog.text
    assert "table.xlsx: not a scan" in debug and "dangling.mhd: link to a missing file" in debug
    np.testing.assert_array_equal(read_scan(d).array_zyx, arr)  # README beside slices: still read


def test_discovery_excludes_the_runs_own_output_folder(tmp_path, hu, monkeypatch):
    arr, geom = hu
    inputs = tmp_path / "inputs"
    p = write_scan(arr, geom, inputs / "a.mhd")
    out = inputs / "out"
    write_scan(arr, geom, out / "maps" / "a_prob.nii.gz")      # --save-maps output inside the input folder
    write_dicom_series(arr, geom, out / "export", seriesuid=UID)
    (out / "scans").mkdir()
    (out / "scans" / "a.json").write_text("{}")
    assert len(find_scans(inputs)) == 3
    assert find_scans(inputs, exclude=[out]) == [p]
    monkeypatch.chdir(inputs)
    assert find_scans(inputs, exclude=["out"]) == [p]                # relative
    (tmp_path / "out_link").symlink_to(out)
    assert find_scans(inputs, exclude=[tmp_path / "out_link"]) == [p]  # through a link
    assert find_scans(out, exclude=[out]) == []
    assert len(find_scans(inputs, exclude=[inputs / "ou"])) == 3     # a name prefix is not a parent


# ------------------------------------------------------------------------ readers as a leaf
def test_no_import_circle_between_readers():
    """dicom.py and the scan type never import scans.py (no circle); no module reaches into
    another's private names."""
    io = Path(__file__).resolve().parents[2] / "pipeline" / "io"
    imports: dict[str, set[str]] = {}
    for f in io.glob("*.py"):
        tree = ast.parse(f.read_text(encoding="utf-8"))
        mods = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline.io."):
                mods.add(node.module.rsplit(".", 1)[1])
                assert not any(a.name.startswith("_") for a in node.names), f"{f.name} imports a private name"
        imports[f.stem] = mods

    def reaches(a: str, b: str, seen=()) -> bool:
        return any(m == b or (m not in seen and reaches(m, b, (*seen, m))) for m in imports.get(a, ()))

    for leaf in ("dicom", "image", "validate", "nifti", "itkfile", "formats", "discover"):
        assert not reaches(leaf, "scans"), f"{leaf} imports scans"
    for mod in imports:
        assert not reaches(mod, mod), f"import circle through {mod}"
