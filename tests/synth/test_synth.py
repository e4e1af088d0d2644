"""Synthetic LUNA16 generator: layout, determinism, geometry of annotations, HU, candidates, figure."""
from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import from_dict
from pipeline.errors import ConfigError
from pipeline.io.luna16 import index_root, read_annotations, read_candidates, read_seriesuids
from pipeline.io.scans import read_scan
from pipeline.synth import SynthConfig, generate, make_scan, plan_scans
from pipeline.synth.generate import make_planned_scan
from pipeline.utils import sha256_file

COORDS = ["coordX", "coordY", "coordZ"]


def _cfg(root) -> SynthConfig:
    return from_dict(SynthConfig, json.loads((root / "synth_summary.json").read_text(encoding="utf-8"))["params"], "synth")


@pytest.fixture(scope="module")
def tiny_scans(tiny_luna):
    """The tiny_luna scans regenerated in memory (with label maps), keyed by seriesuid."""
    cfg = _cfg(tiny_luna)
    return {p.seriesuid: make_planned_scan(p, cfg) for p in plan_scans(cfg)}


def test_layout_and_luna16_columns(tiny_luna):
    idx = index_root(tiny_luna)
    assert len(idx) == 4 and sorted(idx["subset"].unique()) == [0, 1]
    uids = read_seriesuids(tiny_luna / "seriesuids.csv")
    assert sorted(uids) == sorted(idx["seriesuid"])
    assert not (tiny_luna / "seriesuids.csv").read_text(encoding="utf-8").startswith("seriesuid")
    for u in uids:
        assert re.fullmatch(r"1\.3\.6\.1\.4\.1\.14519\.5\.2\.1\.6279\.6001\.[1-9][0-9]+", u) and 55 <= len(u) <= 64
    ann = read_annotations(tiny_luna / "annotations.csv")
    cand = read_candidates(tiny_luna / "candidates.csv")
    exc = read_annotations(tiny_luna / "annotations_excluded.csv")
    assert list(pd.read_csv(tiny_luna / "candidates.csv").columns) == ["seriesuid", *COORDS, "class"]
    assert list(pd.read_csv(tiny_luna / "annotations.csv").columns) == ["seriesuid", *COORDS, "diameter_mm"]
    assert set(ann["seriesuid"]) | set(cand["seriesuid"]) | set(exc["seriesuid"]) <= set(uids)
    assert (ann["diameter_mm"] > 3).all() and (ann["diameter_mm"] <= 30).all()
    small = (exc["diameter_mm"] < 3) | (exc["diameter_mm"] == -1)
    assert len(exc) > 0 and (small | (exc["diameter_mm"] >= 30)).all()  # < 3 mm / unknown, or a mass
    assert (~small).sum() == 1  # round(0.25 * 4) scans hold a mass
    for path in idx["path"]:
        header = dict(ln.split(" = ", 1) for ln in Path(path).read_text(encoding="utf-8").splitlines())
        assert header["ElementType"] == "MET_SHORT" and header["NDims"] == "3"
        assert {"Offset", "ElementSpacing", "TransformMatrix", "DimSize", "ElementDataFile"} <= set(header)
        scan = read_scan(path)
        assert scan.array_zyx.dtype == np.int16
        sx, sy, sz = scan.geometry.spacing_xyz_mm
        assert sx == sy and 0.5 <= sx <= 0.9 and sz in (0.625, 1.0, 1.25, 2.0, 2.5)
        assert scan.geometry.origin_xyz_mm[2] < 0
    summary = json.loads((tiny_luna / "synth_summary.json").read_text(encoding="utf-8"))
    assert summary["counts"]["scans"] == 4 and summary["bytes_per_scan"] > 0
    assert "seconds" not in json.dumps(summary)  # timings go to the run log, not into the DVC output


def test_deterministic_bytes(tiny_luna, tmp_path, caplog):
    cfg = _cfg(tiny_luna)
    with caplog.at_level(logging.INFO):
        res = generate(tmp_path / "a", cfg, progress=False, run_log=tmp_path / "logs" / "synth.json")
    files = sorted(p.relative_to(tiny_luna) for p in tiny_luna.rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix in (".raw", ".mhd")]) == 4 * 2
    assert "synth_summary.json" in {str(f) for f in files}
    assert files == sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    for f in files:  # every file, synth_summary.json included: a rerun changes no DVC hash
        assert sha256_file(tiny_luna / f) == sha256_file(tmp_path / "a" / f), f
    # progress lines without a progress bar (dvc repro passes --no-progress), timings in the run log
    assert any(re.match(r"synth: 4/4 \(100%\) elapsed \d+s, ETA 0s, ", r.getMessage()) for r in caplog.records)
    run_log = json.loads((tmp_path / "logs" / "synth.json").read_text(encoding="utf-8"))
    assert run_log["stage"] == "synth" and run_log["scans"] == 4 and run_log["seconds"] > 0
    assert run_log["seconds_per_scan"] == res.seconds_per_scan and len(res.seconds_per_scan) == 4
    other = generate(tmp_path / "b", from_dict(SynthConfig, {**json.loads(
        (tiny_luna / "synth_summary.json").read_text(encoding="utf-8"))["params"], "seed": 3, "scans": 1}), progress=False)
    assert other.scans[0].seriesuid != plan_scans(cfg)[0].seriesuid
    assert sha256_file(tmp_path / "b" / "candidates.csv") != sha256_file(tiny_luna / "candidates.csv")


def test_annotations_land_on_nodules_also_in_flipped_scans(tiny_luna, tiny_scans):
    ann = read_annotations(tiny_luna / "annotations.csv")
    idx = index_root(tiny_luna).set_index("seriesuid")
    flipped_hits = 0
    for uid, rows in ann.groupby("seriesuid"):
        scan = read_scan(idx.loc[uid, "path"])
        syn = tiny_scans[uid]
        assert np.array_equal(scan.array_zyx, syn.array_zyx)
        kinds = syn.nodules.set_index(syn.nodules[COORDS].round(4).apply(tuple, axis=1))["kind"]
        for row in rows.itertuples():
            c = np.array([row.coordX, row.coordY, row.coordZ])
            assert scan.geometry.contains_world(c)
            k = tuple(scan.geometry.world_to_nearest_voxel_zyx(c))
            kind = kinds[tuple(np.round(c, 4))]
            hu = scan.array_zyx[k]
            assert syn.labels_zyx[k] == 6, (uid, kind)
            if kind == "ggo":
                assert -800 < hu < -150, (uid, kind, hu)
            else:
                assert hu > -300, (uid, kind, hu)
            flipped_hits += not scan.geometry.is_identity_direction
    assert flipped_hits >= 1


def test_masses(tiny_luna, tiny_scans):
    """A mass: over 30 mm, irregular solid tissue in the lung, listed as excluded with its diameter,
    class-0 candidates on its edge; a plan without masses leaves every other scan byte-identical."""
    from scipy import ndimage as ndi

    cfg = _cfg(tiny_luna)
    plans = plan_scans(cfg)
    with_mass = [p for p in plans if p.mass_seed]
    assert len(with_mass) == 1
    sc = tiny_scans[with_mass[0].seriesuid]
    row = sc.excluded[sc.excluded["kind"] == "mass"].iloc[0]
    assert 30 <= row.diameter_mm <= 70
    c = np.array([row.coordX, row.coordY, row.coordZ])
    lab, _ = ndi.label(sc.labels_zyx == 6)
    k = lab[tuple(np.rint(sc.geometry.world_to_voxel_zyx(c)).astype(int).reshape(3))]
    assert k > 0
    vol = (lab == k).sum() * np.prod(sc.geometry.spacing_zyx_mm)
    assert vol > np.pi / 6 * 30 ** 3 * 0.5  # clipped by the pleura at most by half of a 30 mm ball
    assert 0 < np.median(sc.array_zyx[lab == k]) < 100
    mc = sc.candidates[sc.candidates["kind"] == "mass"]
    assert len(mc) == 8 and (mc["class"] == 0).all()
    dist = np.linalg.norm(mc[COORDS].to_numpy(float) - c, axis=1)
    assert dist[0] < 1e-6 and ((dist[1:] > 0) & (dist[1:] <= 0.9 * row.diameter_mm / 2)).all()
    vox = sc.geometry.voxel_zyx_to_world(np.argwhere(lab == k))  # the excluded sphere holds all of the mass
    assert np.linalg.norm(vox - c, axis=1).max() <= row.diameter_mm / 2 + 0.01
    no_mass = SynthConfig(**{**cfg.__dict__, "mass_fraction": 0.0})
    for p, q in zip(plans, plan_scans(no_mass)):
        assert q.mass_seed is None and (p.seriesuid, p.seed, p.spacing_xyz_mm) == (q.seriesuid, q.seed,
                                                                                   q.spacing_xyz_mm)
        if not p.mass_seed:
            assert np.array_equal(make_planned_scan(q, no_mass).array_zyx, tiny_scans[p.seriesuid].array_zyx)


def test_tissue_hu_plausible(tiny_scans):
    for syn in tiny_scans.values():
        a, lab = syn.array_zyx.astype(float), syn.labels_zyx
        assert abs(a[lab == 2].mean() + 850) < 60
        assert a[lab == 4].mean() > 300
        assert abs(a[lab == 0].mean() + 1000) < 30
        assert a[lab == 3].mean() > a[lab == 2].mean() + 300
        assert -60 < a[lab == 5].mean() < 100
        lung = np.isin(lab, (2, 3, 6)).mean()
        assert 0.08 < lung < 0.5, lung


def test_candidates_like_luna16(tiny_luna, tiny_scans):
    cand = read_candidates(tiny_luna / "candidates.csv")
    ann = read_annotations(tiny_luna / "annotations.csv")
    cfg = _cfg(tiny_luna)
    on_vessel = 0
    for uid, rows in cand.groupby("seriesuid"):
        syn = tiny_scans[uid]
        g = syn.geometry
        nod = ann[ann["seriesuid"] == uid]
        centres, radii = nod[COORDS].to_numpy(), nod["diameter_mm"].to_numpy() / 2
        pos, neg = rows[rows["class"] == 1], rows[rows["class"] == 0]
        n_mass = 8 * int(syn.meta["masses"])  # class-0 candidates on a mass come on top
        assert len(neg) == cfg.negatives_per_scan + n_mass and len(pos) >= len(nod)
        for p in pos[COORDS].to_numpy():
            d = np.linalg.norm(centres - p, axis=1)
            assert (d <= 0.25 * radii + 1e-6).any()
        for p in neg[COORDS].to_numpy():
            assert (np.linalg.norm(centres - p, axis=1) > radii).all()
            assert g.contains_world(p)
            k = g.world_to_nearest_voxel_zyx(p)
            r = np.ceil(2.0 / np.asarray(g.spacing_zyx_mm)).astype(int)
            lo = np.maximum(k - r, 0)
            on_vessel += bool((syn.labels_zyx[lo[0]:k[0] + r[0] + 1, lo[1]:k[1] + r[1] + 1,
                                              lo[2]:k[2] + r[2] + 1] == 3).any())
    assert on_vessel >= 0.25 * (cand["class"] == 0).sum()


def test_make_scan_explicit_grid_and_flip():
    cfg = SynthConfig(fov_mm=(120.0, 120.0, 60.0), nodules_per_scan=(2, 2))
    a = make_scan("1.2.3", 7, cfg, shape_zyx=(30, 96, 96), spacing_xyz_mm=(1.2, 1.2, 2.0),
                  direction=np.diag([-1.0, 1.0, 1.0]))
    assert a.array_zyx.shape == a.labels_zyx.shape == (30, 96, 96) and a.array_zyx.dtype == np.int16
    assert a.labels_zyx.dtype == np.uint8 and not a.geometry.is_identity_direction
    assert set(np.unique(a.labels_zyx)) >= {0, 1, 2, 4, 5}
    b = make_scan("1.2.3", 7, cfg, shape_zyx=(30, 96, 96), spacing_xyz_mm=(1.2, 1.2, 2.0),
                  direction=np.diag([-1.0, 1.0, 1.0]))
    assert np.array_equal(a.array_zyx, b.array_zyx)
    with pytest.raises(ConfigError, match="signed permutation"):
        make_scan("1.2.3", 7, cfg, shape_zyx=(8, 16, 16), spacing_xyz_mm=(1, 1, 1),
                  direction=[[0.6, 0.8, 0], [-0.8, 0.6, 0], [0, 0, 1]])


def test_config_errors():
    with pytest.raises(ConfigError, match="valid keys"):
        from_dict(SynthConfig, {"scanz": 3}, "synth")
    with pytest.raises(ConfigError, match="diameter_mm"):
        SynthConfig(diameter_mm=(1.0, 30.0))
    assert from_dict(SynthConfig, {"fov_mm": [200, 200, 100]}).fov_mm == (200, 200, 100)


def test_cli_flags_override_params(tmp_path):
    from pipeline.cli import main

    params = tmp_path / "params.yaml"
    params.write_text("synth:\n  scans: 9\n  fov_mm: [100, 100, 50]\n  negatives_per_scan: 10\n")
    out = tmp_path / "luna"
    assert main(["synth", "--out", str(out), "--scans", "2", "--seed", "4", "--subsets", "1",
                 "--params", str(params), "--no-progress"]) == 0
    idx = index_root(out)
    assert len(idx) == 2 and set(idx["subset"]) == {0}
    params.write_text("synth:\n  bogus: 1\n")
    assert main(["synth", "--out", str(out), "--params", str(params)]) == 1


def test_figure_written(tiny_luna, tmp_path):
    from pipeline.synth.figure import plot_scan

    png = plot_scan(tiny_luna, tmp_path / "scan.png")
    assert png.stat().st_size > 30_000
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    assert img.shape[0] > 600 and img.std() > 0.1  # 2 scans x (axial, coronal)


@pytest.mark.slow
def test_full_size_scan_benchmark():
    t = time.perf_counter()
    s = make_scan("1.2.3", 0, SynthConfig(), shape_zyx=(300, 512, 512), spacing_xyz_mm=(0.7, 0.7, 1.25),
                  direction=np.eye(3))
    seconds = time.perf_counter() - t
    assert s.array_zyx.shape == (300, 512, 512)
    assert abs(s.array_zyx[s.labels_zyx == 2].mean() + 850) < 60
    assert seconds < 60, seconds
