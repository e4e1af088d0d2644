"""LUNA16-shaped synthetic candidates: several positives per nodule spread over the nodule,
hundreds of negatives per scan, 10 subsets, candidates_V2.csv alias; defaults unchanged."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.config import from_dict
from pipeline.errors import ConfigError
from pipeline.io.luna16 import index_root, read_annotations, read_candidates
from pipeline.synth import SynthConfig, generate, make_scan
from pipeline.utils import sha256_file

COORDS = ["coordX", "coordY", "coordZ"]
TINY_SYNTH = {"scans": 4, "subsets": 2, "seed": 2, "fov_mm": [160.0, 160.0, 80.0]}  # = tests/conftest.py

# The "LUNA16-shaped" example of the SynthConfig docstring (10 scans of 120 x 120 x 60 mm, ~2 s).
LUNA16_SHAPED = {"scans": 10, "subsets": 10, "fov_mm": [120, 120, 60], "nodules_per_scan": [1, 3],
                 "positives_per_nodule": [1, 4], "positive_offset": 1.0, "negatives_per_scan": 200,
                 "candidates_csv_names": ["candidates.csv", "candidates_V2.csv"]}


@pytest.fixture(scope="module")
def luna16_shaped(tmp_path_factory):
    root = tmp_path_factory.mktemp("luna16_shaped")
    generate(root, from_dict(SynthConfig, LUNA16_SHAPED, "synth"), progress=False)
    return root


def test_layout_ten_subsets_and_v2_alias(luna16_shaped):
    idx = index_root(luna16_shaped)
    assert len(idx) == 10 and sorted(idx["subset"]) == list(range(10))
    assert sha256_file(luna16_shaped / "candidates.csv") == sha256_file(luna16_shaped / "candidates_V2.csv")
    assert sorted(p.name for p in luna16_shaped.glob("candidates*.csv")) == ["candidates.csv", "candidates_V2.csv"]


def test_positives_spread_over_the_nodule(luna16_shaped):
    cand = read_candidates(luna16_shaped / "candidates_V2.csv")
    ann = read_annotations(luna16_shaped / "annotations.csv")
    assert ann.groupby("seriesuid").size().between(1, 3).all() and ann["seriesuid"].nunique() == 10
    per_nodule = {}  # annotation index -> positives assigned to it
    rel = []
    for uid, rows in cand[cand["class"] == 1].groupby("seriesuid"):
        nod = ann[ann["seriesuid"] == uid]
        centres, radii = nod[COORDS].to_numpy(), nod["diameter_mm"].to_numpy() / 2
        for p in rows[COORDS].to_numpy():
            r = np.linalg.norm(centres - p, axis=1) / radii
            k = int(np.argmin(r))
            assert r[k] <= 1 + 1e-6, (uid, p, r)  # inside its nodule (distance <= diameter / 2)
            per_nodule[nod.index[k]] = per_nodule.get(nod.index[k], 0) + 1
            rel.append(r[k])
    counts = np.array([per_nodule.get(i, 0) for i in ann.index])
    assert counts.min() >= 1 and counts.max() <= 4 * 3  # every nodule has a positive
    assert (counts >= 2).mean() > 0.5, counts  # most nodules have several
    rel = np.array(rel)
    assert (rel > 0.5).sum() >= 5, rel  # offsets up to the radius, not just the centre quarter


def test_hundreds_of_negatives_never_inside_a_nodule(luna16_shaped):
    cand = read_candidates(luna16_shaped / "candidates.csv")
    ann = read_annotations(luna16_shaped / "annotations.csv")
    neg = cand[cand["class"] == 0]
    per_scan = neg.groupby("seriesuid").size()
    assert len(per_scan) == 10 and (per_scan >= 150).all(), per_scan
    for uid, rows in neg.groupby("seriesuid"):
        nod = ann[ann["seriesuid"] == uid]
        d = np.linalg.norm(rows[COORDS].to_numpy()[:, None] - nod[COORDS].to_numpy()[None], axis=2)
        assert (d > nod["diameter_mm"].to_numpy() / 2 + 1 - 1e-6).all(), uid


def test_exhausted_negative_pools_give_fewer_rows_never_inside_a_nodule():
    cfg = SynthConfig(fov_mm=(120.0, 120.0, 60.0), nodules_per_scan=(2, 2), negatives_per_scan=4000)
    s = make_scan("1.2.3", 5, cfg, shape_zyx=(24, 48, 48), spacing_xyz_mm=(2.5, 2.5, 2.5), direction=np.eye(3))
    neg = s.candidates[s.candidates["class"] == 0]
    assert 0 < len(neg) < 4000  # the vessel / branch pools of a tiny grid run out
    centres, radii = s.nodules[COORDS].to_numpy(), s.nodules["diameter_mm"].to_numpy() / 2
    d = np.linalg.norm(neg[COORDS].to_numpy()[:, None] - centres[None], axis=2)
    assert (d > radii + 1).all()
    assert all(s.geometry.contains_world(p) for p in neg[COORDS].to_numpy())


def test_default_output_unchanged_by_the_new_fields(tiny_luna, tmp_path):
    """The defaults keep the old random draws: explicit defaults give the same bytes as tiny_luna."""
    params = json.loads((tiny_luna / "synth_summary.json").read_text(encoding="utf-8"))["params"]
    assert {k: params[k] for k in TINY_SYNTH} == TINY_SYNTH
    explicit = {**TINY_SYNTH, "positives_per_nodule": [1, 2], "positive_offset": 0.25,
                "candidates_csv_names": ["candidates.csv"]}
    generate(tmp_path, from_dict(SynthConfig, explicit, "synth"), progress=False)
    files = sorted(p.relative_to(tiny_luna) for p in tiny_luna.rglob("*") if p.suffix in (".raw", ".csv", ".mhd"))
    assert len(files) == 4 * 2 + 4
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.suffix in (".raw", ".csv", ".mhd")) \
        == files
    for f in files:
        assert sha256_file(tiny_luna / f) == sha256_file(tmp_path / f), f


def test_alias_removed_when_no_longer_listed(tmp_path):
    base = {"scans": 1, "subsets": 1, "fov_mm": [60, 60, 40], "negatives_per_scan": 5}
    generate(tmp_path, from_dict(SynthConfig, {**base, "candidates_csv_names": ["candidates.csv", "candidates_V2.csv"]},
                                 "synth"), progress=False)
    assert (tmp_path / "candidates_V2.csv").is_file()
    generate(tmp_path, from_dict(SynthConfig, base, "synth"), progress=False)
    assert not (tmp_path / "candidates_V2.csv").exists() and (tmp_path / "candidates.csv").is_file()


@pytest.mark.parametrize("values, match", [
    ({"positives_per_nodule": [0, 2]}, "positives_per_nodule"),
    ({"positives_per_nodule": [3, 2]}, "positives_per_nodule"),
    ({"positives_per_nodule": [1, 2, 3]}, "positives_per_nodule"),
    ({"positive_offset": 1.5}, "positive_offset"),
    ({"positive_offset": -0.1}, "positive_offset"),
    ({"candidates_csv_names": []}, "candidates_csv_names"),
    ({"candidates_csv_names": "candidates.csv"}, "candidates_csv_names"),
    ({"candidates_csv_names": ["sub/candidates.csv"]}, "candidates_csv_names"),
    ({"candidates_csv_names": ["annotations.csv"]}, "candidates_csv_names"),
    ({"candidates_csv_names": ["candidates.csv", "candidates.csv"]}, "candidates_csv_names"),
])
def test_new_field_errors(values, match):
    with pytest.raises(ConfigError, match=match) as exc:
        from_dict(SynthConfig, values, "synth")
    assert "\n" not in str(exc.value)
