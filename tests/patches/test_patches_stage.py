"""The patches stage on phantom scans: index, centre voxels, padding, splits, sampling, store."""
import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from pipeline.patches import PatchesConfig, PatchStore
from pipeline.patches.sampling import INDEX_COLUMNS
from pipeline.patches.stage import run
from pipeline.preprocess import load_preprocessed

COORDS = ["coordX", "coordY", "coordZ"]


@pytest.fixture(scope="module")
def patches(phantom_pre, tmp_path_factory):
    root, pre = phantom_pre
    out = tmp_path_factory.mktemp("patches")
    res = run(root, pre, out, PatchesConfig(workers=2, shard_size=4), progress=False)
    return root, pre, out, res


def test_index_and_centre_voxels(patches):
    root, pre, out, _ = patches
    store = PatchStore(out)
    idx = store.index
    assert list(idx.columns) == INDEX_COLUMNS
    cands = pd.read_csv(root / "candidates.csv", dtype={"seriesuid": str})
    assert len(idx) == len(cands)  # every candidate
    np.testing.assert_allclose(idx.sort_values("candidate")[COORDS].to_numpy(), cands[COORDS].to_numpy())
    assert (idx["shard"].max() + 1) == int(np.ceil(len(idx) / 4))
    cubes, planes = store.cubes(idx["sample"]), store.planes(idx["sample"])
    assert cubes.shape[1:] == (48, 48, 48) and planes.shape[1:] == (3, 64, 64)
    for row, cube, plane in zip(idx.itertuples(), cubes, planes):
        vol, _, geom, _ = load_preprocessed(pre, row.seriesuid)
        c = tuple(geom.world_to_nearest_voxel_zyx([row.coordX, row.coordY, row.coordZ]))
        assert (row.vox_z, row.vox_y, row.vox_x) == tuple(int(v) for v in c)
        assert cube[24, 24, 24] == vol[c]
        assert (plane[:, 32, 32] == vol[c]).all()
        if row.label == 1:
            assert row.diameter_mm == 10.0 and vol[c] > 0  # nodule HU at the centre
    corner = idx[(idx["label"] == 0)].iloc[0]  # first negative of a scan = 1 voxel from the corner
    cube = store.cubes([corner["sample"]])[0]
    assert (cube[:20, :20, :20] == -1000).all()


def test_splits_by_subset_no_leakage(patches):
    idx = patches[3].index
    split_of = idx.groupby("seriesuid")["split"].nunique()
    assert (split_of == 1).all()
    assert set(idx.loc[idx["subset"] == 0, "split"]) == {"test"}
    assert set(idx.loc[idx["subset"] == 1, "split"]) == {"val"}
    assert set(idx.loc[idx["subset"] >= 2, "split"]) == {"train"}


def test_every_candidate_stored_shifts_in_every_subset(phantom_pre, tmp_path):
    """No extraction-time subsampling: each subset holds all its candidates (so any CV fold can
    score it); shifted positives exist for every subset and are flagged, within shift_mm."""
    root, pre = phantom_pre
    res = run(root, pre, tmp_path / "p", PatchesConfig(workers=1, pos_shifts=2, shift_mm=2.0), progress=False)
    idx = res.index
    cands = pd.read_csv(root / "candidates.csv", dtype={"seriesuid": str})
    base = idx[idx["shifted"] == 0]
    assert len(base) == len(cands) == res.summary["n_candidates"] == res.summary["candidates_csv_rows"]
    assert sorted(base["candidate"]) == list(range(len(cands)))
    for subset, g in idx.groupby("subset"):
        n_pos = int(((g["label"] == 1) & (g["shifted"] == 0)).sum())
        assert (g["shifted"] == 1).sum() == 2 * n_pos
    sh = idx[idx["shifted"] == 1].merge(base, on="candidate", suffixes=("", "_0"))
    d = np.abs(sh[COORDS].to_numpy() - sh[[c + "_0" for c in COORDS]].to_numpy())
    assert (d <= 2.0 + 1e-9).all() and (d > 0).any()
    again = run(root, pre, tmp_path / "q", PatchesConfig(workers=1, pos_shifts=2), progress=False)
    pd.testing.assert_frame_equal(idx, again.index)  # seeded


def test_nodules_csv_in_voxel_frame(patches):
    """nodules.csv holds each annotation at its preprocessed voxel position (geometry module)."""
    root, pre, out, _ = patches
    nod = pd.read_csv(out / "nodules.csv", dtype={"seriesuid": str})
    ann = pd.read_csv(root / "annotations.csv", dtype={"seriesuid": str})
    assert len(nod) == len(ann) and set(nod["kind"]) == {"nodule"}
    for row in nod.merge(ann, on="seriesuid").itertuples():
        _, _, geom, _ = load_preprocessed(pre, row.seriesuid)
        want = geom.world_to_voxel_zyx([row.coordX, row.coordY, row.coordZ])
        np.testing.assert_allclose([row.z, row.y, row.x], want, atol=1e-6)
        np.testing.assert_allclose([row.rz, row.ry, row.rx], 5.0 / np.asarray(geom.spacing_zyx_mm))


def test_failed_preprocess_scans_skipped_with_warning(phantom_pre, tmp_path, caplog):
    root, pre = phantom_pre
    pre2 = tmp_path / "pre"
    shutil.copytree(pre, pre2)
    man = pd.read_csv(pre2 / "manifest.csv", dtype={"seriesuid": str, "reason": object})
    bad = man["seriesuid"].iloc[-1]
    man.loc[man["seriesuid"] == bad, ["status", "reason"]] = ["failed", "test"]
    man.to_csv(pre2 / "manifest.csv", index=False)
    (pre2 / f"{bad}.json").unlink()
    with caplog.at_level(logging.WARNING):
        res = run(root, pre2, tmp_path / "p", PatchesConfig(workers=1), progress=False)
    assert bad not in set(res.index["seriesuid"]) and bad in res.summary["skipped_scans"]
    assert any("not preprocessed" in r.message for r in caplog.records)


def test_plot_patches(patches, tmp_path):
    from pipeline.patches.figure import plot_patches

    png = plot_patches(patches[2], tmp_path / "p.png", n=4)
    assert png.stat().st_size > 5000


def test_tiny_luna_end_to_end(tiny_luna, tmp_path):
    """Synthetic LUNA16 root -> preprocess (2 workers) -> patches: every annotated nodule's
    positive candidate has soft-tissue HU at the centre of its cube, flipped scans included."""
    from pipeline.preprocess import PreprocessConfig
    from pipeline.preprocess.stage import run as preprocess

    pre = preprocess(tiny_luna, tmp_path / "pre", PreprocessConfig(workers=2), progress=False)
    assert pre.n_failed == 0
    res = run(tiny_luna, tmp_path / "pre", tmp_path / "p", PatchesConfig(workers=2), progress=False)
    idx = res.index
    assert (idx.groupby("seriesuid")["split"].nunique() == 1).all()
    store = PatchStore(tmp_path / "p")
    pos = idx[(idx["label"] == 1) & (idx["diameter_mm"] >= 6)]
    assert len(pos) >= 3
    centre = store.cubes(pos["sample"])[:, 24, 24, 24]
    assert (centre > -500).all(), centre
    for row in pos.itertuples():
        _, lung, geom, _ = load_preprocessed(tmp_path / "pre", row.seriesuid)
        assert lung[tuple(geom.world_to_nearest_voxel_zyx([row.coordX, row.coordY, row.coordZ]))] == 1


def test_negative_cube_next_to_a_nodule_has_it_in_its_mask(patches):
    """The negative 15.6 mm from a phantom nodule: its cube's target holds the whole nodule where
    the annotation puts it (not an empty mask, as a centre-ball target would give)."""
    from pipeline.train.data import PatchDataset

    root, pre, out, _ = patches
    store = PatchStore(out)
    idx = store.index
    ds = PatchDataset(store, idx["sample"].to_numpy(), "3d", masks=True)
    ann = pd.read_csv(root / "annotations.csv", dtype={"seriesuid": str}).set_index("seriesuid")
    hits = 0
    for i, row in enumerate(idx.itertuples()):
        mask, ignore = ds.targets(i, 48)
        _, _, geom, _ = load_preprocessed(pre, row.seriesuid)
        nod = ann.loc[row.seriesuid, COORDS].to_numpy(float)
        v = np.rint(geom.world_to_voxel_zyx(nod)).astype(int) - (np.array([row.vox_z, row.vox_y, row.vox_x]) - 24)
        dist = np.linalg.norm(nod - np.array([row.coordX, row.coordY, row.coordZ]))
        if row.label == 1:
            assert mask[24, 24, 24] == 1
        if dist < 20 and row.label == 0:
            assert mask[tuple(v)] == 1 and abs(mask.sum() - np.pi / 6 * 1000) < 0.25 * np.pi / 6 * 1000
            hits += 1
        assert ignore.sum() == 0
    assert hits >= 1
