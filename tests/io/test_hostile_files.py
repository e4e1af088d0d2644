"""Careless-researcher files: a byte-order flag that contradicts the data, a .zraw cut short with no
CompressedDataSize, NIfTI lengths in metres or microns, a lung cut by the field of view, CSVs with a
byte-order mark / a repeated row / a coordinate at inf or 5 m away, numbers YAML 1.1 reads as strings,
NaN params, a preprocessed mask edited by hand, and ``synth --out`` aimed at a user's LUNA16 folder.
Each case asserts the correct result or a one-line refusal naming the file and the reason."""
from __future__ import annotations

import logging
import re

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pipeline.errors import ConfigError, DataError
from pipeline.io.geometry import Geometry
from pipeline.io.scans import read_scan, write_scan

UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.100225287222365663678666836860"


@pytest.fixture
def ct():
    rng = np.random.default_rng(3)
    arr = rng.integers(-1000, 300, size=(6, 20, 18)).astype(np.int16)
    return arr, Geometry((-101.5, 12.25, -250.0), (0.7, 0.74, 1.25), shape_zyx=arr.shape)


def _refused(path, match, fn=read_scan):
    with pytest.raises(DataError) as exc:
        fn(path)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ") and re.search(match, msg), msg
    return msg


def test_mhd_byte_order_flag_contradicting_the_data(tmp_path, ct):
    arr, g = ct
    p = write_scan(arr, g, tmp_path / "s.mhd")
    text = p.read_text(encoding="utf-8")
    assert "BinaryDataByteOrderMSB = False" in text
    p.write_text(text.replace("BinaryDataByteOrderMSB = False", "BinaryDataByteOrderMSB = True"))
    _refused(p, r"voxel bytes are in the other byte order: as read \d+% of voxels are plausible HU, swapped 100%")
    p.write_text(text)
    np.testing.assert_array_equal(read_scan(p).array_zyx, arr)


def test_zraw_truncated_without_compressed_size(tmp_path, ct):
    arr, g = ct
    p = write_scan(arr, g, tmp_path / "z.mhd", compress=True)
    z = tmp_path / "z.zraw"
    np.testing.assert_array_equal(read_scan(p).array_zyx, arr)
    p.write_text("".join(ln for ln in p.read_text(encoding="utf-8").splitlines(True) if not ln.startswith("CompressedDataSize")))
    np.testing.assert_array_equal(read_scan(p).array_zyx, arr)  # no size line: still read when whole
    z.write_bytes(z.read_bytes()[: z.stat().st_size // 2])
    _refused(p, r"truncated compressed data file 'z\.zraw': it decompresses to \d+ bytes, the header's size "
                r"needs 4320")


@pytest.mark.parametrize(("unit", "factor"), [("meter", 1000.0), ("micron", 0.001)])
def test_nifti_units_metres_and_microns_converted(tmp_path, ct, unit, factor, caplog):
    arr, _ = ct
    aff = np.diag([0.7, 0.74, 1.25, 1.0])
    aff[:3, 3] = (10.0, -20.0, 30.0)
    ref = nib.Nifti1Image(arr.transpose(2, 1, 0), aff)
    nib.save(ref, str(tmp_path / "mm.nii.gz"))
    scaled = aff.copy()
    scaled[:3] /= factor
    img = nib.Nifti1Image(arr.transpose(2, 1, 0), scaled)
    img.header.set_xyzt_units(xyz=unit)
    nib.save(img, str(tmp_path / f"{unit}.nii.gz"))
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        got = read_scan(tmp_path / f"{unit}.nii.gz")
    want = read_scan(tmp_path / "mm.nii.gz")
    np.testing.assert_array_equal(got.array_zyx, want.array_zyx)
    np.testing.assert_allclose(got.geometry.spacing_xyz_mm, want.geometry.spacing_xyz_mm, rtol=1e-5)
    np.testing.assert_allclose(got.geometry.origin_xyz_mm, want.geometry.origin_xyz_mm, rtol=1e-5, atol=1e-4)
    assert any(f"spatial unit is {unit}" in r.getMessage() for r in caplog.records)


def test_lungs_cut_by_the_field_of_view(caplog):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "preprocess"))
    from phantom_data import make_phantom

    from pipeline.preprocess.lungmask import lung_mask

    arr, labels, g = make_phantom()
    full = lung_mask(arr, g.spacing_zyx_mm, dilate_radius_mm=0.0)
    x = g.voxel_zyx_to_world(np.stack([np.zeros(arr.shape[2]), np.zeros(arr.shape[2]),
                                       np.arange(arr.shape[2])], axis=1))[:, 0]
    keep = np.abs(x) <= 30.0  # the lungs reach |x| = 37 mm: cut through both at the left and right edges
    cut_arr, cut_lab = arr[:, :, keep], labels[:, :, keep]
    assert np.isin(cut_lab[:, :, 0], (2, 3)).any() and np.isin(cut_lab[:, :, -1], (2, 3)).any()
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        cut = lung_mask(cut_arr, g.spacing_zyx_mm, dilate_radius_mm=0.0, path="cut.mhd")
    assert any("field of view cuts the lungs" in r.getMessage() for r in caplog.records)
    truth = np.isin(cut_lab, (2, 3, 6))
    dice = 2 * (cut.astype(bool) & truth).sum() / (cut.astype(bool).sum() + truth.sum())
    assert dice > 0.9, dice
    assert np.array_equal(cut.astype(bool), full[:, :, keep].astype(bool)) or dice > 0.95
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        lung_mask(arr, g.spacing_zyx_mm, dilate_radius_mm=0.0)  # a whole field of view: no warning
    assert not any("field of view" in r.getMessage() for r in caplog.records)


def test_csvs_with_bom_repeats_and_impossible_coordinates(tmp_path, caplog):
    from pipeline.evaluate.stage import read_scored_uids
    from pipeline.io.luna16 import read_annotations, read_candidates, read_seriesuids

    s = tmp_path / "seriesuids.csv"
    s.write_bytes(b"\xef\xbb\xbf" + f"{UID}\n{UID[:-1]}1\n".encode())
    assert read_seriesuids(s) == [UID, UID[:-1] + "1"]
    assert read_scored_uids([s]) == [UID, UID[:-1] + "1"]
    a = tmp_path / "annotations.csv"
    rows = f"seriesuid,coordX,coordY,coordZ,diameter_mm\n{UID},1,2,3,6.5\n{UID},4,5,6,8\n{UID},1,2,3,6.5\n"
    a.write_bytes(b"\xef\xbb\xbf" + rows.encode())
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        ann = read_annotations(a)
    assert len(ann) == 2 and ann.columns[0] == "seriesuid"
    assert any(re.search(r"1 row\(s\) repeat an earlier row exactly \(first: row 4 repeats row 2\)", r.getMessage())
               for r in caplog.records)
    c = tmp_path / "candidates.csv"
    c.write_text(f"seriesuid,coordX,coordY,coordZ,class\n{UID},1,2,3,0\n{UID},inf,2,3,1\n")
    _refused(c, r"row 3: column coordX is not a finite number", read_candidates)


def test_candidate_far_outside_its_scan_is_refused(tmp_path):
    from pipeline.patches.stage import check_inside

    g = Geometry((0.0, 0.0, 0.0), (1.0, 1.0, 2.0), shape_zyx=(10, 50, 50))
    c = pd.DataFrame({"seriesuid": [UID] * 3, "coordX": [10.0, 51.0, 10.0], "coordY": [10.0, 10.0, 5000.0],
                      "coordZ": [4.0, 4.0, 4.0], "class": [0, 0, 1]})
    check_inside(c.iloc[:2], {UID: g}, tmp_path / "candidates.csv")  # 2 mm past the edge: cut as usual
    with pytest.raises(DataError, match=r"row 4: candidate at \(10, 5000, 4\) mm lies 4951 mm outside scan"):
        check_inside(c, {UID: g}, tmp_path / "candidates.csv")


def test_params_yaml11_numbers_and_nan(tmp_path):
    import yaml

    from pipeline.config import from_dict
    from pipeline.detect.config import DetectConfig
    from pipeline.train.config import TrainConfig

    values = yaml.safe_load("lr: 1e-3\nepochs: 2\n")
    assert values["lr"] == "1e-3"  # what PyYAML (YAML 1.1) gives
    assert from_dict(TrainConfig, values, "train").lr == pytest.approx(0.001)
    with pytest.raises(ConfigError, match=r"params key infer\.nms_mm: nan is not a finite number"):
        from_dict(DetectConfig, yaml.safe_load("nms_mm: .nan\n"), "infer")
    with pytest.raises(ConfigError, match=r"params key train\.lr: 'fast' is not a number"):
        from_dict(TrainConfig, {"lr": "fast"}, "train")


def test_synth_never_overwrites_a_users_folder(tmp_path):
    from pipeline.synth.config import SynthConfig
    from pipeline.synth.generate import generate

    real = tmp_path / "LUNA16"
    (real / "subset0").mkdir(parents=True)
    (real / "subset0" / f"{UID}.mhd").write_text("my real scan header\n")
    (real / "annotations.csv").write_text("my annotations\n")
    before = {p: p.read_bytes() for p in real.rglob("*") if p.is_file()}
    cfg = SynthConfig(scans=2, subsets=1)
    with pytest.raises(DataError, match=r"holds files this stage did not write \(e\.g\. 'annotations\.csv'"):
        generate(real, cfg, progress=False)
    assert {p: p.read_bytes() for p in real.rglob("*") if p.is_file()} == before
    out = tmp_path / "synthetic"
    generate(out, cfg, progress=False)
    generate(out, cfg, progress=False)  # its own folder: written again


def test_preprocessed_mask_edited_by_hand(tmp_path):
    from pipeline.preprocess.storage import is_done, load_preprocessed, paths_for, write_outputs

    arr = np.full((4, 8, 8), -800, np.int16)
    lung = np.ones((4, 8, 8), np.uint8)
    g = Geometry((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), shape_zyx=arr.shape)
    write_outputs(tmp_path, UID, arr, lung, {"geometry": g.to_dict(), "params_hash": "h", "seriesuid": UID})
    assert is_done(tmp_path, UID, "h")
    load_preprocessed(tmp_path, UID)
    np.save(paths_for(tmp_path, UID)["lung"], np.zeros_like(lung))  # a valid array, other content
    assert not is_done(tmp_path, UID, "h")
    _refused(paths_for(tmp_path, UID)["lung"], r"content changed since preprocess wrote it",
             lambda _: load_preprocessed(tmp_path, UID))


def test_luna16_root_with_a_name_that_is_not_utf8(tmp_path, ct, caplog):
    import os

    from pipeline.io.luna16 import index_root

    arr, g = ct
    write_scan(arr, g, tmp_path / "subset0" / f"{UID}.mhd")
    write_scan(arr, g, tmp_path / "subset0" / "x.mhd")
    os.rename(tmp_path / "subset0" / "x.mhd", os.fsencode(tmp_path / "subset0") + b"/caf\xe9.mhd")
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        idx = index_root(tmp_path)
    assert list(idx["seriesuid"]) == [UID]  # preprocess never hands SimpleITK the odd name (it aborted)
    assert any("caf\\xe9.mhd: file name is not valid UTF-8" in r.getMessage() for r in caplog.records)
