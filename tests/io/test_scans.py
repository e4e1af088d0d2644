"""Reading/writing scans: round trips across formats, bad files, the real DICOM slabs."""
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import DataError
from pipeline.io.dicom import write_dicom_series
from pipeline.io.geometry import Geometry
from pipeline.io.scans import find_scans, read_scan, scan_format, write_scan

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real_ct"
UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.123456789012345678901234567890"


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    arr = rng.integers(-1000, 1500, size=(7, 24, 20)).astype(np.int16)
    geom = Geometry((-120.5, 33.25, -310.0), (0.68, 0.68, 1.25),
                    direction=np.diag([-1.0, 1.0, 1.0]), shape_zyx=arr.shape)
    return arr, geom


@pytest.mark.parametrize("suffix", [".mhd", ".mha", ".nii.gz", ".nii", ".nrrd"])
def test_roundtrip_volume_formats(tmp_path, volume, suffix):
    arr, geom = volume
    path = write_scan(arr, geom, tmp_path / f"{UID}{suffix}")
    scan = read_scan(path)
    np.testing.assert_array_equal(scan.array_zyx, arr)
    assert scan.array_zyx.dtype == np.int16
    assert scan.seriesuid == UID
    np.testing.assert_allclose(scan.geometry.origin_xyz_mm, geom.origin_xyz_mm, atol=1e-4)
    np.testing.assert_allclose(scan.geometry.spacing_xyz_mm, geom.spacing_xyz_mm, atol=1e-5)
    np.testing.assert_allclose(scan.geometry.direction_matrix, geom.direction_matrix, atol=1e-6)
    assert not list(tmp_path.glob(".tmp-*")), "atomic write left temp files"


def test_mhd_header_like_luna16(tmp_path, volume):
    arr, geom = volume
    write_scan(arr, geom, tmp_path / f"{UID}.mhd")
    header = (tmp_path / f"{UID}.mhd").read_text(encoding="utf-8")
    assert "TransformMatrix = -1 0 0 0 1 0 0 0 1" in header
    assert "Offset = -120.5 33.25 -310" in header
    assert "ElementType = MET_SHORT" in header
    assert f"ElementDataFile = {UID}.raw" in header


def _assert_same_physical_volume(scan, arr, geom):
    """Every voxel of ``scan`` sits at a world point where ``arr``/``geom`` holds the same value."""
    idx = np.argwhere(np.ones(scan.array_zyx.shape, bool))
    world = scan.geometry.voxel_zyx_to_world(idx)
    back = geom.world_to_voxel_zyx(world)
    np.testing.assert_allclose(back, np.rint(back), atol=1e-3)
    b = np.rint(back).astype(int)
    np.testing.assert_array_equal(scan.array_zyx[tuple(idx.T)], arr[tuple(b.T)])


def test_roundtrip_dicom_series_identity(tmp_path, volume):
    arr, geom = volume
    geom = Geometry(geom.origin_xyz_mm, geom.spacing_xyz_mm, shape_zyx=geom.shape_zyx)
    folder = write_dicom_series(arr, geom, tmp_path / "series", seriesuid=UID)
    scan = read_scan(folder)
    np.testing.assert_array_equal(scan.array_zyx, arr)
    assert scan.seriesuid == UID
    np.testing.assert_allclose(scan.geometry.origin_xyz_mm, geom.origin_xyz_mm, atol=1e-4)
    np.testing.assert_allclose(scan.geometry.spacing_xyz_mm, geom.spacing_xyz_mm, atol=1e-4)
    np.testing.assert_allclose(scan.geometry.direction_matrix, geom.direction_matrix, atol=1e-5)


def test_roundtrip_dicom_series_flipped_direction(tmp_path, volume):
    """A left-handed direction (x flipped) cannot be stored in DICOM (the slice normal is
    row x column), so the reader returns the same physical volume with z reversed."""
    arr, geom = volume
    folder = write_dicom_series(arr, geom, tmp_path / "series", seriesuid=UID)
    scan = read_scan(folder)
    np.testing.assert_allclose(scan.geometry.spacing_xyz_mm, geom.spacing_xyz_mm, atol=1e-4)
    _assert_same_physical_volume(scan, arr, geom)


def test_dicom_rescale_slope_intercept_applied(tmp_path, volume):
    """Stored values are HU + 1024 with RescaleIntercept -1024, as scanners write them."""
    import pydicom

    arr, geom = volume
    geom = Geometry(geom.origin_xyz_mm, geom.spacing_xyz_mm, shape_zyx=geom.shape_zyx)
    folder = write_dicom_series(arr, geom, tmp_path / "s", seriesuid=UID)
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        stored = ds.pixel_array.astype(np.int32) + 1024
        ds.PixelRepresentation = 0
        ds.PixelData = stored.astype(np.uint16).tobytes()
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.save_as(f)
    scan = read_scan(folder)
    np.testing.assert_array_equal(scan.array_zyx, arr)


def _write_slices(tmp_path, arr, geom, uid, **kw):
    return write_dicom_series(arr, geom, tmp_path / uid[-6:], seriesuid=uid, **kw)


def test_dicom_missing_slice_rejected(tmp_path, volume):
    arr, geom = volume
    folder = write_dicom_series(arr, geom, tmp_path / "s", seriesuid=UID)
    sorted(folder.iterdir())[3].unlink()
    with pytest.raises(DataError, match="missing slice"):
        read_scan(folder)


def test_dicom_non_ct_rejected(tmp_path, volume):
    arr, geom = volume
    folder = write_dicom_series(arr, geom, tmp_path / "mr", seriesuid=UID, modality="MR")
    with pytest.raises(DataError, match="not a CT series"):
        read_scan(folder)


def test_dicom_two_series_rejected(tmp_path, volume):
    arr, geom = volume
    a = write_dicom_series(arr, geom, tmp_path / "a", seriesuid=UID)
    b = write_dicom_series(arr, geom, tmp_path / "b", seriesuid=UID[:-1] + "9")
    for i, f in enumerate(sorted(b.iterdir())):
        f.rename(a / f"other{i}.dcm")
    with pytest.raises(DataError, match="2 DICOM series") as exc:
        read_scan(a)
    assert "\n" not in str(exc.value)
    assert read_scan(a, series_uid=UID).array_zyx.shape == arr.shape


def test_bad_files(tmp_path, volume):
    arr, geom = volume
    p = write_scan(arr, geom, tmp_path / f"{UID}.mhd")
    raw = tmp_path / f"{UID}.raw"
    raw.write_bytes(raw.read_bytes()[:100])
    with pytest.raises(DataError, match="truncated") as exc:
        read_scan(p)
    assert str(p) in str(exc.value)

    hdr = tmp_path / "nodata.mhd"
    hdr.write_text(p.read_text(encoding="utf-8").replace(f"{UID}.raw", "missing.raw"))
    with pytest.raises(DataError, match="missing data file"):
        read_scan(hdr)

    weird = tmp_path / "scan.xyz"
    weird.write_text("hello")
    with pytest.raises(DataError, match="unknown scan format"):
        read_scan(weird)
    with pytest.raises(DataError, match="no such file"):
        read_scan(tmp_path / "absent.nii.gz")
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"\x00" * 50)
    with pytest.raises(DataError, match="unreadable"):
        read_scan(garbage)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.dcm").write_bytes(b"not dicom")
    with pytest.raises(DataError, match="no DICOM series"):
        read_scan(empty)


def test_nan_volume_rejected(tmp_path, volume):
    arr, geom = volume
    f = arr.astype(np.float32)
    f[0, 0, 0] = np.nan
    p = write_scan(f, geom, tmp_path / "nan.mha")  # ITK's NIfTI reader turns NaN into 0
    with pytest.raises(DataError, match="NaN"):
        read_scan(p)


def test_find_scans_and_format(tmp_path, volume):
    arr, geom = volume
    write_scan(arr, geom, tmp_path / "a.mhd")
    write_scan(arr, geom, tmp_path / "sub" / "b.nii.gz")
    write_dicom_series(arr, geom, tmp_path / "sub" / "dcm", seriesuid=UID)
    found = find_scans(tmp_path)
    names = sorted(p.name for p in found)
    assert names == ["a.mhd", "b.nii.gz", "dcm"]
    assert scan_format(tmp_path / "sub" / "dcm") == "dicom"


needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/real_ct not present")


@needs_shared
def test_real_slab_lidc0003_geometry_and_nodule():
    folder = next((SHARED / "LIDC-IDRI-0003").iterdir())
    scan = read_scan(folder)
    assert scan.array_zyx.shape == (11, 512, 512)
    np.testing.assert_allclose(scan.geometry.spacing_xyz_mm[:2], (0.820312, 0.820312), atol=1e-6)
    assert scan.geometry.spacing_xyz_mm[2] == pytest.approx(2.5)
    assert scan.seriesuid == folder.name
    center = (72.287, 76.900, -190.459)
    assert scan.geometry.contains_world(center)
    z, y, x = scan.geometry.world_to_nearest_voxel_zyx(center)
    # soft tissue at the nodule centre, lung air a nodule radius away laterally
    patch = scan.array_zyx[z, y - 2:y + 3, x - 2:x + 3]
    assert -100 < float(np.median(patch)) < 150
    lung = scan.array_zyx[:, 150:350, 300:420]
    assert np.percentile(lung, 25) < -600
    # no identifying data in what we carry
    assert set(scan.meta) <= {"format", "modality", "n_slices", "instance_numbers", "study_uid", "source_files"}
    assert all(isinstance(n, int) for n in scan.meta["instance_numbers"])  # image numbers, nothing else
    assert re.fullmatch(r"[0-9.]+", scan.meta["study_uid"])  # a UID (groups studies), not a name or an ID
    assert len(scan.meta["source_files"]) == scan.array_zyx.shape[0]  # the slices' files, in z order
    assert all(Path(f).parent == folder for f in scan.meta["source_files"])


@needs_shared
def test_real_slab_lidc0002_reads():
    folder = next((SHARED / "LIDC-IDRI-0002").iterdir())
    scan = read_scan(folder)
    assert scan.array_zyx.shape == (12, 512, 512)
    assert scan.geometry.spacing_xyz_mm[2] == pytest.approx(1.25)
