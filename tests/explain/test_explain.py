"""Saliency, feature space and the explain stage on a tiny classifier fine-tuned on blob/line patches.

Shares reached here (seeded, 2 threads): the occlusion-sensitivity maximum lies inside the blob radius
for 8 of the 10 test positives (0.80) while the blob discs cover 12.4 % of the patch area (asserted:
share >= 0.6 and >= 5x the area share); Grad-CAM++ at the /16 stage (2x2 map for 32 px) reaches 0."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.explain import saliency as S
from pipeline.explain.config import ExplainConfig
from pipeline.explain.stage import read_inputs, split_of


@pytest.fixture(scope="module")
def positives(blob_model, blob_patches):
    from pipeline.patches.dataset import PatchStore
    from pipeline.runtime import load_model

    model, config = load_model(blob_model)
    store = PatchStore(blob_patches)
    rows = split_of(store, config, "test")
    pos = rows[store.index.iloc[rows]["label"].to_numpy() == 1]
    nod = store.nodules  # blob centre offsets and radii (voxels; planes are 2x nearest-upsampled)
    return model, config, read_inputs(store, pos, "2d"), nod.iloc[: 0], store, pos


def _blob_radius_px(store, rows, config):
    # radius of each positive's blob (nodules.csv, voxel frame) in plane pixels
    nod = store.nodules
    idx = store.index.iloc[rows]
    r = []
    for _, row in idx.iterrows():
        hit = nod[(nod["seriesuid"] == row["seriesuid"]) & (np.abs(nod["z"] - row["vox_z"]) < 2)]
        r.append(float(hit["rx"].iloc[0]))
    return np.asarray(r) * float(config["patches"]["plane_px"]) / float(config["patches"]["plane_mm"])


def test_saliency_maximum_inside_nodule(positives):
    model, config, x, _, store, rows = positives
    r = _blob_radius_px(store, rows, config)
    occ = S.occlusion_maps(model, x, mask_px=6, overlap=0.5, fill_hu=-800.0)
    share = S.inside_share(occ, r)
    area = S.nodule_area_share(r, x.shape[2:])
    cam = S.inside_share(S.cam_maps(model, x, -2, "gradcampp"), r)
    print(f"occlusion inside share {share:.2f} (n={len(x)}), Grad-CAM++ (stage -2) {cam:.2f}, nodule area {area:.3f}")
    assert len(x) >= 8
    assert share >= 0.6 and share >= 5 * area


def test_occluding_the_nodule_lowers_the_score(positives):
    model, config, x, _, store, rows = positives
    r = _blob_radius_px(store, rows, config)
    yy, xx = np.mgrid[: x.shape[2], : x.shape[3]]
    d = np.hypot(yy - (x.shape[2] - 1) / 2, xx - (x.shape[3] - 1) / 2)
    xo = x.copy()
    for i in range(len(x)):
        xo[i][:, d <= r[i] + 3] = -800.0  # the blob (offset <= 1 voxel = 2 px) replaced by lung
    with torch.no_grad():
        p0 = torch.sigmoid(model(torch.from_numpy(x))).numpy()
        p1 = torch.sigmoid(model(torch.from_numpy(xo))).numpy()
    called = p0 > 0.5  # the positives the model calls nodules: removing the blob must lower every score
    assert called.sum() >= 0.6 * len(p0) and (p1[called] < p0[called]).all(), (p0.round(2), p1.round(2))
    assert (p0 - p1)[called].mean() > 0.1, (p0.round(2), p1.round(2))


def test_maps_are_deterministic(positives):
    model, _config, x, *_ = positives
    model.train()  # dropout on: the maps must still come out in eval mode
    a = S.cam_maps(model, x[:4], -1, "gradcampp")
    b = S.cam_maps(model, x[:4], -1, "gradcampp")
    c = S.occlusion_maps(model, x[:2], mask_px=6, overlap=0.5)
    d = S.occlusion_maps(model, x[:2], mask_px=6, overlap=0.5)
    model.eval()
    assert a.shape == (4, 32, 32) and np.array_equal(a, b) and np.array_equal(c, d)
    assert np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1


def test_stage_writes_figures_and_held_out_probe_metrics(blob_model, blob_patches, tmp_path):
    from pipeline.explain.stage import run_explain
    from pipeline.patches.dataset import PatchStore

    cfg = ExplainConfig(n_sheet=4, occlusion_mm=3.0, max_embed=80, layer=-2)
    m = run_explain(blob_model, blob_patches, tmp_path / "ex", cfg)
    out = tmp_path / "ex"
    for name in ("saliency_sheet.png", "feature_space.png", "filters.png", "metrics.json"):
        assert (out / name).stat().st_size > 1000 or name == "metrics.json"
    assert len(list((out / "samples").glob("*.png"))) == 4
    arr = np.load(min((out / "samples").glob("*_occlusion.npy")))
    assert arr.shape == (32, 32) and arr.dtype == np.float32
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(m))
    idx = PatchStore(blob_patches).index
    assert saved["linear_probe_fit_split"] == "val" and saved["linear_probe_eval_split"] == "test"
    assert saved["linear_probe_n_fit"] == int((idx["split"] == "val").sum())
    assert saved["linear_probe_n_eval"] == int((idx["split"] == "test").sum())
    for k in ("linear_probe_auc_before", "linear_probe_auc_after"):
        assert 0.5 < saved[k] <= 1.0
    assert saved["linear_probe_auc_after"] >= 0.9  # the fine-tuned features separate blobs from lines
    assert saved["first_conv_max_abs_change"] > 0  # strategy full: the stem was trained
    assert 0 <= saved["saliency_inside_share"] <= 1 and saved["nodule_area_share"] < 0.2


def test_linear_probe_is_held_out():
    from pipeline.explain.features import linear_probe_auc

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 50)), rng.integers(0, 2, 200)
    # pure noise: a probe fit on one half and scored on the other is at chance (in-sample it would not be)
    assert abs(linear_probe_auc(x[:100], y[:100], x[100:], y[100:], c=1.0) - 0.5) < 0.15
    assert linear_probe_auc(x[:100], y[:100], x[:100], y[:100], c=1.0) > 0.9


def test_config_and_cli_errors(blob_model, tmp_path, capsys):
    from pipeline.cli import main

    with pytest.raises(ConfigError, match="methods"):
        ExplainConfig(methods=("saliency",))
    with pytest.raises(ConfigError, match="must differ"):
        ExplainConfig(probe_fit_split="test")
    assert main(["explain", "--model", str(blob_model), "--out", str(tmp_path / "o")]) == 1
    assert "exactly one of --patches" in capsys.readouterr().err
    assert main(["explain", "--model", str(tmp_path / "nope"), "--patches", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    with pytest.raises(ConfigError, match="stages"):
        from pipeline.runtime import load_model

        S.resolve_layer(load_model(blob_model)[0], 9)
