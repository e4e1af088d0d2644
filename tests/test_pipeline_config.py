"""dvc.yaml / params.yaml / configs/luna16.yaml stay consistent with the code: every params section
builds its stage's typed config (unknown keys are errors), also with the LUNA16 preset (an overlay)
applied, DVC itself parses the pipeline into the expected stages and DAG, and every stage command
names a real subcommand."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {
    "synth": "pipeline.synth.config:SynthConfig",
    "preprocess": "pipeline.preprocess.config:PreprocessConfig",
    "patches": "pipeline.patches.config:PatchesConfig",
    "train": "pipeline.train.config:TrainConfig",
    "train_seg": "pipeline.train.config:SegTrainConfig",
    "infer": "pipeline.detect.config:DetectConfig",
    "evaluate": "pipeline.evaluate.stage:EvaluateConfig",
}


def luna16_params(tmp_dir: Path) -> Path:
    """A copy of params.yaml in ``tmp_dir`` with the configs/luna16.yaml preset applied."""
    import shutil

    from pipeline.preset import apply_preset

    path = Path(tmp_dir) / "params.yaml"
    shutil.copyfile(ROOT / "params.yaml", path)
    apply_preset(path, ROOT / "configs/luna16.yaml")
    return path


def _cls(spec: str):
    import importlib

    mod, name = spec.split(":")
    return getattr(importlib.import_module(mod), name)


@pytest.mark.parametrize("preset", [None, "luna16"])
def test_every_params_section_builds_its_config(preset, tmp_path):
    from pipeline.config import from_dict, load_params

    params = load_params(luna16_params(tmp_path) if preset else ROOT / "params.yaml")
    for section, spec in SECTIONS.items():
        from_dict(_cls(spec), params[section], section)  # raises on unknown keys / bad values
    folds = params["cv"]["folds"]
    assert folds and all(set(f) == {"test", "val"} and f["test"] != f["val"] for f in folds)
    assert isinstance(params["luna_root"], str)


def test_luna16_params_run_ten_folds_over_every_subset(tmp_path):
    from pipeline.config import load_params

    params = load_params(luna16_params(tmp_path))
    folds = params["cv"]["folds"]  # the main split (train/predict) is the tenth fold
    assert sorted([f["test"] for f in folds] + params["patches"]["folds"]["test"]) == list(range(10))


def test_dvc_parses_the_pipeline():
    from dvc.repo import Repo

    from pipeline.cli import build_parser

    repo = Repo(str(ROOT))
    try:
        stages = {s.addressing: s for s in repo.index.stages}
        expected = {"synth", "preprocess", "patches", "train", "train_seg", "predict", "infer", "evaluate"}
        assert expected <= set(stages)
        n_folds = len([s for s in stages if s.startswith("cv_train@")])  # + the main split (train/predict) = 2 folds
        assert n_folds >= 1 and n_folds == len([s for s in stages if s.startswith("cv_predict@")])
        subcommands = set(build_parser()._subparsers._group_actions[0].choices)
        for name, stage in stages.items():
            words = stage.cmd.split()
            if words[:2] == ["python", "-m"] and words[2].startswith("pipeline."):  # a module's own small CLI
                assert (ROOT / (words[2].replace(".", "/") + ".py")).is_file(), name
                continue
            assert words[:3] == ["python", "-m", "pipeline"], name
            assert words[3] in subcommands, f"{name}: unknown subcommand {words[3]}"
        # evaluate depends (through its deps) on every prediction-producing stage
        graph = repo.index.graph
        import networkx as nx

        upstream = {s.addressing for s in nx.descendants(graph, stages["evaluate"])}
        assert {"predict", "infer", "train", "train_seg", "synth"} <= upstream
        assert all(f"cv_predict@{i}" in upstream for i in range(n_folds))
        assert "eval/metrics.json" in [str(o) for o in stages["evaluate"].outs]
        # metrics are listed at the top level, the evaluation's headline first (`dvc exp show` order)
        top = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["metrics"]
        assert top[0] == "eval/metrics.json" and len(top) == len(set(top)) == 4
    finally:
        repo.close()
