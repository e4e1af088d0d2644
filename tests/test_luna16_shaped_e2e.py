"""End to end: the real-LUNA16 preset (configs/luna16.yaml) on LUNA16-shaped synthetic data.

A temporary DVC project gets copies of dvc.yaml, params.yaml, configs/ and pipeline/ (real files,
so DVC's code dependencies hash the code that runs), then

    python -m pipeline preset configs/luna16.yaml --luna-root data/luna16 --set ...

turns params.yaml into the LUNA16 preset (candidates_V2.csv, test/val subsets 9/0, 10 CV folds, ...)
with speed overrides: the synth section is the LUNA16-shaped tiny set of SynthConfig's docstring
(10 scans in 10 subsets, so every CV fold tests one scan; several positives per nodule; 200
negatives per scan; candidates.csv + candidates_V2.csv), 1 training epoch on a few samples, 1-2
workers. ``dvc repro`` runs the whole DAG once (module fixture); the tests then check

* every CV fold scored exactly the candidates of its test subset (count, (seriesuid, coord) set,
  candidate numbers and labels), and the pooled folds cover every scan;
* ``python -m pipeline froc`` on the pooled fold predictions reproduces ``cv.cpm`` of eval/metrics.json;
* ``dvc repro -f -s synth`` regenerates byte-identical data: ``dvc status`` says everything is up to date.

The main split (``train``/``predict``, test subset 9) is one of the 10 folds; ``cv.folds`` lists the
other 9, and the CV track pools all 10. Two variants of the fixture: ``2folds`` (the main split plus
the preset's first CV fold, test subset 0; every check unchanged) runs in ``make test`` (about 85 s on the 2-core CPU machine); ``10folds``
(all 10 CV folds of the preset, 452 s there) is marked slow:
``pytest -m slow tests/test_luna16_shaped_e2e.py -s`` runs it and prints the timing.
``LUNA16_E2E_FOLDS=N`` forces N folds in both.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
REPRO_TIMEOUT_S = 1800  # the 10-fold variant takes ~450 s on a quiet 2-core machine; a loaded one is slower

pytestmark = [
    pytest.mark.skipif(shutil.which("dvc", path=str(VENV_BIN)) is None and shutil.which("dvc") is None,
                       reason="dvc not installed"),
]

# The LUNA16-shaped example of SynthConfig's docstring (tests/synth/test_luna16_shaped.py checks its shape).
SYNTH = {"scans": 10, "subsets": 10, "seed": 0, "fov_mm": [120.0, 120.0, 60.0], "nodules_per_scan": [1, 3],
         "positives_per_nodule": [1, 4], "positive_offset": 1.0, "negatives_per_scan": 200,
         "candidates_csv_names": ["candidates.csv", "candidates_V2.csv"]}
# Speed: CPU, 1 epoch on a few samples, few workers; every other key comes from the preset.
SPEED = {
    "preprocess.workers": 2, "preprocess.max_failures": 0,
    "patches.workers": 2, "patches.pos_shifts": 2,
    "train.epochs": 1, "train.batch_size": 16, "train.num_workers": 0, "train.max_train_samples": 64,
    "train.device": "cpu",
    "train_seg.epochs": 1, "train_seg.batch_size": 2, "train_seg.num_workers": 0, "train_seg.max_train_samples": 8,
    "train_seg.crop": 32, "train_seg.device": "cpu",
    "infer.device": "cpu", "infer.max_failures": 0, "infer.sw_batch_size": 2,
    "evaluate.bootstrap": 100,
}
COPY = ["dvc.yaml", "params.yaml", "configs", "pipeline"]
COORDS = ["coordX", "coordY", "coordZ"]


@dataclass
class Project:
    root: Path
    env: dict[str, str]
    params: dict
    repro_seconds: float
    log: Path

    def run(self, *args: str, timeout: float = REPRO_TIMEOUT_S, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run(list(args), cwd=self.root, env=self.env, capture_output=True, text=True, encoding="utf-8", errors="replace",
                           timeout=timeout, check=False)
        with open(self.log, "a") as fh:
            fh.write(f"$ {' '.join(args)}\n{p.stdout}{p.stderr}\n")
        if check and p.returncode != 0:
            pytest.fail(f"{' '.join(args)} failed (rc {p.returncode}):\n{_tail(p.stdout + p.stderr)}")
        return p


def _tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


def _yaml_flow(value) -> str:
    return json.dumps(value)  # JSON is YAML: [1, 4], "cpu", null


def _ensure_synth_keys(params_yaml: Path) -> list[str]:
    """Add the SynthConfig keys params.yaml does not list yet (with their defaults) so that
    ``preset --set synth.<key>=...`` may change them (the preset refuses unknown keys)."""
    from pipeline.config import to_dict
    from pipeline.synth import SynthConfig

    data = yaml.safe_load(params_yaml.read_text(encoding="utf-8"))
    missing = [k for k in SYNTH if k not in data.get("synth", {})]
    if missing:
        defaults = to_dict(SynthConfig())
        lines = params_yaml.read_text(encoding="utf-8").splitlines(keepends=True)
        at = next(i for i, ln in enumerate(lines) if ln.startswith("synth:")) + 1
        lines[at:at] = [f"  {k}: {_yaml_flow(defaults[k])}\n" for k in missing]
        params_yaml.write_text("".join(lines))
    return missing


@pytest.fixture(scope="module", params=[pytest.param(2, id="2folds"),
                                        pytest.param(10, id="10folds", marks=pytest.mark.slow)])
def project(request, tmp_path_factory) -> Project:
    root = tmp_path_factory.mktemp("luna16_e2e")
    for name in COPY:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, root / name)
    env = {**os.environ, "PYTHONPATH": str(root), "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "DVC_NO_ANALYTICS": "1", "PYTHONHASHSEED": "0"}
    env.pop("VIRTUAL_ENV", None)
    proj = Project(root, env, {}, 0.0, root / "e2e.log")
    proj.run("dvc", "init", "--no-scm", "-q")
    proj.run("dvc", "config", "core.analytics", "false")
    added = _ensure_synth_keys(root / "params.yaml")
    if added:
        print(f"\nnote: params.yaml lacks synth keys {added}; added with their defaults for the preset")
    sets = [f"synth.{k}={_yaml_flow(v)}" for k, v in SYNTH.items()] + [f"{k}={_yaml_flow(v)}" for k, v in SPEED.items()]
    folds = os.environ.get("LUNA16_E2E_FOLDS") or (None if request.param == 10 else request.param)
    if folds:
        preset = yaml.safe_load((root / "configs" / "luna16.yaml").read_text(encoding="utf-8"))["cv"]["folds"]
        sets.append("cv.folds=" + _yaml_flow(preset[:max(1, int(folds) - 1)]))  # + the main split = N folds
    args = [sys.executable, "-m", "pipeline", "preset", "configs/luna16.yaml", "--luna-root", "data/luna16"]
    for s in sets:
        args += ["--set", s]
    proj.run(*args, timeout=120)
    proj.params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    assert proj.params["luna_root"] == "data/luna16"
    assert proj.params["patches"]["candidates_csv"] == "candidates_V2.csv"
    assert {k: proj.params["synth"][k] for k in SYNTH} == SYNTH
    t = time.perf_counter()
    proj.run("dvc", "repro", timeout=REPRO_TIMEOUT_S)
    proj.repro_seconds = time.perf_counter() - t
    print(f"\nLUNA16-shaped e2e: dvc repro {proj.repro_seconds:.1f} s, {len(proj.params['cv']['folds'])} CV folds "
          f"(log: {proj.log})")
    return proj


def _luna(proj: Project):
    from pipeline.io.luna16 import index_root, read_candidates

    luna = proj.root / proj.params["luna_root"]
    return luna, index_root(luna), read_candidates(luna / proj.params["patches"]["candidates_csv"])


def _key(df: pd.DataFrame) -> list[tuple]:
    return sorted(zip(df["seriesuid"].astype(str), *(np.round(df[c].to_numpy(float), 3) for c in COORDS)))


def _fold_dirs(proj: Project) -> dict[int, Path]:
    """Test subset -> its prediction folder: the main split (``predict``, data/predict/fpr) is one
    cross-validation fold, ``cv.folds`` the others (data/predict/cv/fold_K)."""
    main = [int(k) for k in proj.params["patches"]["folds"]["test"]]
    assert len(main) == 1, main
    dirs = {main[0]: proj.root / "data" / "predict" / "fpr"}
    for fold in proj.params["cv"]["folds"]:
        k = int(fold["test"])
        assert k not in dirs, f"cv.folds repeats the main split's test subset {k}"
        dirs[k] = proj.root / "data" / "predict" / "cv" / f"fold_{k}"
    return dirs


def test_each_fold_scores_exactly_its_test_subset(project):
    _, scans, cands = _luna(project)
    subset_of = dict(zip(scans["seriesuid"], scans["subset"].astype(int)))
    assert sorted(scans["subset"]) == list(range(10))  # 10 subsets, one scan each
    problems, rows = [], []
    for k, d in sorted(_fold_dirs(project).items()):
        want = cands[cands["seriesuid"].map(subset_of) == k]
        scored = pd.read_csv(d / "scored.csv", dtype={"seriesuid": str})
        pred = pd.read_csv(d / "predictions.csv", dtype={"seriesuid": str})
        uids = [ln for ln in (d / "seriesuids.csv").read_text(encoding="utf-8").split() if ln]
        if sorted(uids) != sorted(scans.loc[scans["subset"] == k, "seriesuid"]):
            problems.append(f"fold {k}: seriesuids.csv {uids} is not subset {k}'s scans")
        rows.append(f"fold {k}: {len(pred)} rows scored / {len(want)} candidates CSV rows")
        if len(scored) != len(want) or len(pred) != len(want):
            problems.append(f"fold {k}: scored {len(scored)} / predicted {len(pred)} candidates, "
                            f"subset {k} has {len(want)} ({int(want['class'].sum())} positive)")
            continue
        if _key(pred) != _key(want):
            problems.append(f"fold {k}: predictions.csv (seriesuid, coord) set differs from the candidates")
        if sorted(scored["candidate"]) != sorted(want.index):
            problems.append(f"fold {k}: scored.csv candidate numbers differ from the candidates CSV rows")
        elif not (scored.set_index("candidate")["label"].sort_index().to_numpy() == want["class"].to_numpy()).all():
            problems.append(f"fold {k}: scored.csv labels differ from the candidates' class")
    print("\n" + "\n".join(rows))
    assert not problems, "\n".join(problems)


def test_pooled_folds_cover_every_scan(project):
    _, scans, cands = _luna(project)
    dirs = _fold_dirs(project)
    folds = sorted(dirs)
    want = set(scans.loc[scans["subset"].isin(folds), "seriesuid"])
    pooled_uids = [u for d in dirs.values() for u in (d / "seriesuids.csv").read_text(encoding="utf-8").split()]
    pred = pd.concat([pd.read_csv(d / "predictions.csv", dtype={"seriesuid": str}) for d in dirs.values()])
    assert sorted(pooled_uids) == sorted(want)  # each scan in exactly one fold
    assert set(pred["seriesuid"]) == want & set(cands["seriesuid"])
    if len(folds) == 10:
        assert want == set(scans["seriesuid"])


def test_froc_cli_reproduces_cv_cpm(project, tmp_path):
    luna = project.root / project.params["luna_root"]
    metrics = json.loads((project.root / "eval" / "metrics.json").read_text(encoding="utf-8"))
    d = project.root / "data" / "predict"
    # as evaluate pools them: --track cv=data/predict/fpr,data/predict/cv (its fold_K folders, sorted)
    folds = [d / "fpr"] + sorted(p for p in (d / "cv").iterdir() if (p / "predictions.csv").is_file())
    pd.concat([pd.read_csv(p / "predictions.csv", dtype={"seriesuid": str}) for p in folds]).to_csv(
        tmp_path / "predictions.csv", index=False)
    (tmp_path / "seriesuids.csv").write_text("".join((p / "seriesuids.csv").read_text(encoding="utf-8") for p in folds))
    p = project.run(sys.executable, "-m", "pipeline", "froc", "--annotations", str(luna / "annotations.csv"),
                    "--excluded", str(luna / "annotations_excluded.csv"),
                    "--seriesuids", str(tmp_path / "seriesuids.csv"), "--predictions", str(tmp_path / "predictions.csv"),
                    "--out", str(tmp_path / "froc"), "--bootstrap", str(project.params["evaluate"]["bootstrap"]),
                    "--seed", str(project.params["evaluate"]["seed"]),
                    "--max-marks", str(project.params["evaluate"]["max_marks"]), timeout=300)
    cpm = json.loads((tmp_path / "froc" / "metrics.json").read_text(encoding="utf-8"))["cpm"]
    assert cpm == pytest.approx(metrics["cv"]["cpm"], abs=1e-12), p.stdout


def test_synth_rerun_is_byte_identical(project):
    """Re-running synth alone must reproduce its outputs: then nothing downstream is stale."""
    project.run("dvc", "repro", "-f", "-s", "synth", timeout=300)
    p = project.run("dvc", "status", "--json", timeout=300)
    status = json.loads(p.stdout or "{}")
    assert status == {}, f"stale after `dvc repro -f -s synth`: {json.dumps(status, indent=1)[:3000]}"


def test_print_timings(project):
    print(f"\nLUNA16-shaped e2e: dvc repro took {project.repro_seconds:.1f} s")
    assert project.repro_seconds < REPRO_TIMEOUT_S
