"""transfer-report on real DVC experiments: a temp git + DVC repo whose one stage writes
DVCLive-shaped curves and an eval/metrics.json from params.yaml; two `dvc exp run`s; the
report's table holds the baseline and both experiments with their numbers, and the figure exists."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # four dvc commands: ~20 s on a quiet machine, 95 s loaded
BIN = Path(sys.executable).parent
STAGE = '''
import json, pathlib, yaml
p = yaml.safe_load(open("params.yaml"))["train"]
auc0 = {"efficientnet_lite0": 0.70, "ct_i3resnet152": 0.80}[p["encoder"]] - (0.2 if p["weights"] == "none" else 0)
live = pathlib.Path("dvclive/classifier")
(live / "timings.json").parent.mkdir(parents=True, exist_ok=True)
(live / "timings.json").write_text(json.dumps({"seconds_per_epoch": [2.0, 2.0, 2.0]}))
for sub, name, vals in (("val", "val_auc", [auc0 + 0.05 * i for i in range(3)]),):
    d = live / "plots" / "metrics" / sub
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.tsv").write_text("step\\t" + name + "\\n" + "".join(f"{i}\\t{v}\\n" for i, v in enumerate(vals)))
(live / "params.yaml").write_text(yaml.safe_dump({"strategy_resolved": p["strategy"] if p["strategy"] != "auto" else "partial"}))
pathlib.Path("eval").mkdir(exist_ok=True)
m = {"classifier": {"auc": auc0 + 0.1, "balanced_accuracy": auc0}, "fpr": {"cpm": auc0 - 0.1},
     "cv": {"cpm": auc0 - 0.2, "classifier": {"auc": auc0}}}
pathlib.Path("eval/metrics.json").write_text(json.dumps(m))
'''
DVC_YAML = '''stages:
  train:
    cmd: python stage.py
    deps: [stage.py]
    params: [train]
    outs:
      - dvclive/classifier/params.yaml:
          cache: false
    metrics:
      - eval/metrics.json:
          cache: false
    plots:
      - dvclive/classifier/plots/metrics:
          cache: false
'''


def _sh(args, cwd, env):
    subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True, text=True, encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def exp_repo(tmp_path_factory):
    if not (BIN / "dvc").exists() or shutil.which("git") is None:
        pytest.skip("dvc (in the venv) and git are needed")
    repo = tmp_path_factory.mktemp("exp_repo")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e",
           "DVC_NO_ANALYTICS": "1"}
    (repo / "stage.py").write_text(STAGE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text("train:\n  encoder: efficientnet_lite0\n  weights: pretrained\n  strategy: auto\n")
    _sh(["git", "init", "-q", "-b", "main"], repo, env)
    _sh(["dvc", "init", "-q"], repo, env)
    _sh(["dvc", "repro", "-q"], repo, env)
    _sh(["git", "add", "-A"], repo, env)
    _sh(["git", "commit", "-qm", "baseline"], repo, env)
    for name, sets in (("ct-probe", ["train.encoder=ct_i3resnet152", "train.strategy=linear_probe"]),
                       ("ct-random", ["train.encoder=ct_i3resnet152", "train.weights=none",
                                      "train.strategy=linear_probe"])):
        _sh(["dvc", "exp", "run", "-q", "-n", name, *[a for s in sets for a in ("-S", s)]], repo, env)
    return repo, env


def test_report_table_and_figure_from_dvc_experiments(exp_repo, tmp_path, monkeypatch):
    from pipeline.report.transfer import write_report

    repo, env = exp_repo
    monkeypatch.setenv("PATH", env["PATH"])
    res = write_report(repo, tmp_path / "out", feature_cache=tmp_path / "no_cache")
    assert res["rows"] == 3
    png = Path(res["figure"])
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
    md = Path(res["table"]).read_text(encoding="utf-8")
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert lines[0].startswith("| experiment | encoder | weights | input | strategy | test AUC")
    rows = {ln.split(" | ")[0][2:]: ln for ln in lines[1:]}
    assert set(rows) == {"main", "ct-probe", "ct-random"}
    assert "| ct_i3resnet152 | pretrained | 3D | linear_probe | 0.900 | 0.800 | 0.700 |" in rows["ct-probe"]
    assert "| ct_i3resnet152 | none | 3D | linear_probe | 0.700 | 0.600 | 0.500 |" in rows["ct-random"]
    assert "| efficientnet_lite0 | pretrained | 2D | partial | 0.800 | 0.700 | 0.600 |" in rows["main"]
    assert "| 2.0 |" in rows["main"]  # seconds per epoch from DVCLive's timings.json


def test_report_cli_selects_experiments_and_names_unknown(exp_repo, tmp_path, monkeypatch, capsys):
    from pipeline.cli import main

    repo, env = exp_repo
    monkeypatch.setenv("PATH", env["PATH"])
    assert main(["transfer-report", "--repo", str(repo), "--out", str(tmp_path / "o"),
                 "--exp", "ct-random", "--exp", "ct-probe"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == 2
    md = (tmp_path / "o" / "transfer.md").read_text(encoding="utf-8")
    assert md.index("ct-random") < md.index("ct-probe")
    assert main(["transfer-report", "--repo", str(repo), "--out", str(tmp_path / "o2"), "--exp", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no DVC experiment named ['nope']" in err

