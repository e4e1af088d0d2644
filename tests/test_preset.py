"""``python -m pipeline preset``: configs/luna16.yaml is an overlay of params.yaml (only the keys that
differ), merged in place keeping params.yaml's comments and order; unknown keys are refused."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from test_pipeline_config import SECTIONS, _cls, luna16_params

from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.preset import apply_preset

ROOT = Path(__file__).resolve().parents[1]
OVERLAY = ROOT / "configs/luna16.yaml"


def _leaves(d, prefix=""):
    """{dotted key: value} of the scalar / list leaves of nested mappings."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_leaves(v, key + "."))
        else:
            out[key] = v
    return out


def _comments(text: str) -> list[str]:
    """Every comment of a YAML file, in order (whole-line and end-of-line)."""
    return [m.group(0).strip() for line in text.splitlines() if (m := re.search(r"#.*$", line))]


@pytest.fixture
def params(tmp_path) -> Path:
    p = tmp_path / "params.yaml"
    shutil.copyfile(ROOT / "params.yaml", p)
    return p


def test_every_overlay_key_exists_in_params():
    base = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    overlay = yaml.safe_load(OVERLAY.read_text(encoding="utf-8"))

    def walk(o, b, path):
        for k, v in o.items():
            assert isinstance(b, dict) and k in b, f"configs/luna16.yaml: {path}{k} is not in params.yaml"
            if isinstance(v, dict):
                walk(v, b[k], f"{path}{k}.")

    walk(overlay, base, "")
    # an overlay, not a copy: every key it holds changes the default
    base_leaves = _leaves(base)
    same = [k for k, v in _leaves(overlay).items() if base_leaves[k] == v]
    assert not same, f"configs/luna16.yaml repeats default values: {same}"


def test_preset_sets_the_overlay_and_keeps_everything_else(params, tmp_path):
    before_text = params.read_text(encoding="utf-8")
    before = yaml.safe_load(before_text)
    changes = apply_preset(params, OVERLAY)
    after_text = params.read_text(encoding="utf-8")
    after = yaml.safe_load(after_text)
    overlay = _leaves(yaml.safe_load(OVERLAY.read_text(encoding="utf-8")))
    assert {k for k, _, _ in changes} == set(overlay)
    b, a = _leaves(before), _leaves(after)
    assert list(a) == list(b)  # same keys, same order
    for key, value in a.items():
        assert value == overlay.get(key, b[key]), key
    # 10 folds: the main split (train/predict) is fold 9, cv.folds the other nine
    assert a["patches.folds.test"] == [9] and a["patches.folds.val"] == [0]
    assert a["cv.folds"] == [{"test": k, "val": (k + 1) % 10} for k in range(9)]
    assert a["train.neg_ratio"] == 20 and a["patches.candidates_csv"] == "candidates_V2.csv"
    # comments, blank lines and layout of params.yaml survive; only the changed values differ
    assert _comments(after_text) == _comments(before_text)
    assert after_text.count("\n\n") == before_text.count("\n\n")
    assert "null" in after_text and ": \n" not in after_text  # nulls stay spelled `null`
    assert "  - {test: 8, val: 9}" in after_text  # the folds keep params.yaml's flow style
    # the typed configs still build (the same check as for params.yaml itself)
    from pipeline.config import from_dict

    for section, spec in SECTIONS.items():
        from_dict(_cls(spec), after[section], section)
    # applying it again changes nothing; the shared helper gives the same file
    assert apply_preset(params, OVERLAY) == []
    again = tmp_path / "again"
    again.mkdir()
    assert params.read_text(encoding="utf-8") == luna16_params(again).read_text(encoding="utf-8")


def test_unknown_overlay_key_is_refused_naming_it(params, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 3\n  no_such_key: 1\n")
    before = params.read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match=r"train\.no_such_key"):
        apply_preset(params, bad)
    assert params.read_text(encoding="utf-8") == before  # nothing written
    assert main(["preset", str(bad), "--params", str(params)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "train.no_such_key" in err and "\n" not in err
    bad.write_text("patches:\n  neg_ratio: 20\n")  # the key that moved to train.neg_ratio
    with pytest.raises(ConfigError, match=r"patches\.neg_ratio"):
        apply_preset(params, bad)
    bad.write_text("nosection:\n  a: 1\n")
    with pytest.raises(ConfigError, match="nosection"):
        apply_preset(params, bad)
    bad.write_text("train: 3\n")  # a section replaced by a scalar
    with pytest.raises(ConfigError, match="'train' is a mapping"):
        apply_preset(params, bad)


def test_cli_luna_root_and_set(params, capsys):
    rc = main(["preset", str(OVERLAY), "--params", str(params), "--luna-root", "/mnt/LUNA16",
               "--set", "preprocess.workers=16", "--set", "patches.folds.test=[7]",
               "--set", "train_seg.crop=null", "--set", "train.neg_ratio=5",
               "--set", "cv.folds=[{test: 9, val: 8}]", "--set", "evaluate.threshold=0.25"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "luna_root: 'data/luna16' -> '/mnt/LUNA16'" in out
    p = yaml.safe_load(params.read_text(encoding="utf-8"))
    assert p["luna_root"] == "/mnt/LUNA16"
    assert p["preprocess"]["workers"] == 16
    assert p["patches"]["folds"] == {"test": [7], "val": [0]}
    assert p["train_seg"]["crop"] is None and p["train"]["neg_ratio"] == 5
    assert p["cv"]["folds"] == [{"test": 9, "val": 8}]
    assert p["evaluate"]["threshold"] == 0.25 and p["train"]["epochs"] == 30
    text = params.read_text(encoding="utf-8")
    assert "# the LUNA16 root every stage reads" in text  # luna_root's comment kept


@pytest.mark.parametrize("item, match", [
    ("train.nope=1", r"train\.nope"),
    ("train_seg=3", "'train_seg' is a mapping"),
    ("train.epochs", "section.key=value"),
    ("train..epochs=1", "section.key=value"),
])
def test_bad_set_is_refused(params, item, match):
    before = params.read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match=match):
        apply_preset(params, None, sets=[item])
    assert params.read_text(encoding="utf-8") == before



@pytest.mark.parametrize("which", ["default", "luna16"])
def test_main_split_is_a_fold_not_repeated_in_cv_folds(which, params):
    """The cv track pools predict's output (the main split) with cv.folds: they must be disjoint."""
    if which == "luna16":
        apply_preset(params, OVERLAY)
    p = yaml.safe_load(params.read_text(encoding="utf-8"))
    main_test = set(p["patches"]["folds"]["test"])
    cv_tests = [int(f["test"]) for f in p["cv"]["folds"]]
    assert len(cv_tests) == len(set(cv_tests)) and not main_test & set(cv_tests)
    if which == "luna16":
        assert sorted(main_test | set(cv_tests)) == list(range(10))
