"""Hostile inputs for every CLI but detect/infer (issue 10): bad paths, files where folders belong
(and the reverse), empty / garbled / incomplete CSVs, a scan listed twice, bad params files. Each
case runs ``python -m pipeline ...`` in a subprocess and asserts exit code 1, exactly one stderr line
``error: <path>: <reason>`` naming the file, no traceback, and that nothing was written."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
UIDS = [f"1.3.6.{i}" for i in range(4)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _cli(args: list, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=120, check=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A LUNA16 root with the CSVs, a valid track folder, and bad variants of every input."""
    w = tmp_path_factory.mktemp("hostile_cli")
    luna = w / "luna"
    luna.mkdir()
    pd.DataFrame({"seriesuid": UIDS, "coordX": 0.0, "coordY": 0.0, "coordZ": 0.0, "diameter_mm": 8.0}
                 ).to_csv(luna / "annotations.csv", index=False)
    pd.DataFrame({"seriesuid": UIDS[:1], "coordX": 50.0, "coordY": 0.0, "coordZ": 0.0, "diameter_mm": -1.0}
                 ).to_csv(luna / "annotations_excluded.csv", index=False)
    (luna / "seriesuids.csv").write_text("\n".join(UIDS) + "\n")
    for name, uids in (("fold0", UIDS[:2]), ("fold1", UIDS[1:])):  # fold1 overlaps fold0 in UIDS[1]
        d = w / name
        d.mkdir()
        pd.DataFrame({"seriesuid": uids, "coordX": 0.0, "coordY": 0.0, "coordZ": 0.0, "probability": 0.9}
                     ).to_csv(d / "predictions.csv", index=False)
        (d / "seriesuids.csv").write_text("\n".join(uids) + "\n")
    seg = w / "segbad"
    seg.mkdir()
    (seg / "predictions.csv").write_bytes((w / "fold0" / "predictions.csv").read_bytes())
    (seg / "seriesuids.csv").write_bytes((w / "fold0" / "seriesuids.csv").read_bytes())
    (seg / "seg_metrics.json").write_text('{"dice": 0.7')
    (w / "a_file").write_text("x")
    (w / "empty_dir").mkdir()
    (w / "empty.csv").write_bytes(b"")
    (w / "binary.csv").write_bytes(bytes(range(256)) * 8)
    (w / "nocols.csv").write_text("seriesuid,x,y,z,p\n1.3.6.0,0,0,0,0.5\n")
    (w / "notnum.csv").write_text("seriesuid,coordX,coordY,coordZ,probability\n1.3.6.0,0,abc,0,0.5\n")
    (w / "header_only.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n")
    (w / "twice.csv").write_text("\n".join(UIDS + [UIDS[2]]) + "\n")
    (w / "blank_uids.csv").write_text("\n\n")
    (w / "bad.yaml").write_text("evaluate: {bootstrap: [\n")
    (w / "params_dir").mkdir()
    (w / "good.yaml").write_text("evaluate:\n  bootstrap: 0\n")
    (w / "patches_stub").mkdir()  # passes the up-front checks (the case fails on another argument)
    (w / "patches_stub" / "index.csv").write_text("sample\n")
    (w / "model_stub").mkdir()
    (w / "model_stub" / "config.json").write_text("{}\n")
    return w


def _froc(w: Path, **kw) -> list:
    a = {"annotations": w / "luna" / "annotations.csv", "seriesuids": w / "luna" / "seriesuids.csv",
         "predictions": w / "fold0" / "predictions.csv", "out": w / "out", "bootstrap": 0}
    a.update(kw)
    args = ["froc"]
    for k, v in a.items():
        if v is not None:
            args += [f"--{k}", v]
    return args


def _evaluate(w: Path, *extra, luna=None, out=None) -> list:
    return ["evaluate", "--luna", luna or w / "luna", "--out", out or w / "out", "--bootstrap", "0", *extra]


CASES = {
    # froc
    "froc --out is an existing file": (lambda w: _froc(w, out=w / "a_file"), ["a_file", "--out must be a folder"]),
    "froc --out under a file": (lambda w: _froc(w, out=w / "a_file" / "o"), ["a_file", "is a file, not a folder"]),
    "froc --annotations missing": (lambda w: _froc(w, annotations=w / "nope.csv"),
                                   ["nope.csv", "--annotations: no such CSV file"]),
    "froc --annotations is a folder": (lambda w: _froc(w, annotations=w / "empty_dir"),
                                       ["empty_dir", "found a folder"]),
    "froc --excluded missing": (lambda w: _froc(w, excluded=w / "nope.csv"), ["nope.csv", "--excluded"]),
    "froc --predictions zero-byte": (lambda w: _froc(w, predictions=w / "empty.csv"),
                                     ["empty.csv", "not a readable CSV"]),
    "froc --predictions binary garbage": (lambda w: _froc(w, predictions=w / "binary.csv"), ["binary.csv"]),
    "froc --predictions missing columns": (lambda w: _froc(w, predictions=w / "nocols.csv"),
                                           ["nocols.csv", "missing column(s)"]),
    "froc --predictions non-numeric coordinate": (lambda w: _froc(w, predictions=w / "notnum.csv"),
                                                  ["notnum.csv", "row 2: column coordY is not a number"]),
    "froc --predictions holding annotation columns": (
        lambda w: _froc(w, predictions=w / "header_only.csv"), ["header_only.csv", "missing column(s)"]),
    "froc --seriesuids names a scan twice": (lambda w: _froc(w, seriesuids=w / "twice.csv"),
                                             ["twice.csv", f"seriesuid {UIDS[2]} is listed twice in this file"]),
    "froc --seriesuids blank": (lambda w: _froc(w, seriesuids=w / "blank_uids.csv"),
                                ["blank_uids.csv", "no series UIDs listed"]),
    "froc --seriesuids binary garbage": (lambda w: _froc(w, seriesuids=w / "binary.csv"), ["binary.csv"]),
    "froc --bootstrap negative": (lambda w: _froc(w, bootstrap=-5), ["--bootstrap must be >= 0"]),
    # evaluate
    "evaluate --luna missing": (lambda w: _evaluate(w, "--track", f"fpr={w / 'fold0'}", luna=w / "nope"),
                                ["nope", "no such LUNA16 root folder"]),
    "evaluate --luna is a file": (lambda w: _evaluate(w, "--track", f"fpr={w / 'fold0'}", luna=w / "a_file"),
                                  ["a_file", "found a file"]),
    "evaluate --luna without annotations.csv": (
        lambda w: _evaluate(w, "--track", f"fpr={w / 'fold0'}", luna=w / "empty_dir"),
        ["annotations.csv", "no such annotations.csv"]),
    "evaluate --out is an existing file": (lambda w: _evaluate(w, "--track", f"fpr={w / 'fold0'}",
                                                               out=w / "a_file"), ["a_file", "--out must be a folder"]),
    "evaluate --track folder missing": (lambda w: _evaluate(w, "--track", f"fpr={w / 'nope'}"),
                                        ["nope", "track folder does not exist"]),
    "evaluate --track folder without predictions.csv": (lambda w: _evaluate(w, "--track", f"fpr={w / 'empty_dir'}"),
                                                        ["predictions.csv", "no such file"]),
    "evaluate --track name escapes --out": (lambda w: _evaluate(w, "--track", f"../x={w / 'fold0'}"),
                                            ["NAME must be letters"]),
    "evaluate pooled folds overlap": (lambda w: _evaluate(w, "--track", f"cv={w / 'fold0'},{w / 'fold1'}"),
                                      ["fold1", f"seriesuid {UIDS[1]} is listed also in", "fold0"]),
    "evaluate garbled seg_metrics.json": (lambda w: _evaluate(w, "--track", f"det={w / 'segbad'}"),
                                          ["seg_metrics.json", "not valid JSON"]),
    "evaluate --params missing": (lambda w: _evaluate(w, "--track", f"fpr={w / 'fold0'}", "--params",
                                                      w / "nope.yaml"), ["nope.yaml", "params file not found"]),
    "evaluate --params is a folder": (lambda w: _evaluate(w, "--track", f"fpr={w / 'fold0'}", "--params",
                                                          w / "params_dir"), ["params_dir", "must be a YAML file"]),
    "evaluate --params not valid YAML": (lambda w: _evaluate(w, "--track", f"fpr={w / 'fold0'}", "--params",
                                                             w / "bad.yaml"), ["bad.yaml", "not valid YAML"]),
    # other stages: paths validated before any work
    "synth --out is an existing file": (lambda w: ["synth", "--out", w / "a_file", "--scans", "1"],
                                        ["a_file", "--out must be a folder"]),
    "synth --out under a file": (lambda w: ["synth", "--out", w / "a_file" / "luna", "--scans", "1"],
                                 ["a_file", "is a file, not a folder"]),
    "synth --out the OS refuses to create (OSError: one line, no traceback)": (
        lambda w: ["synth", "--out", "/proc/hostile-nope/luna", "--scans", "1"], ["/proc/hostile-nope"]),
    "patches --luna missing": (lambda w: ["patches", "--luna", w / "nope", "--preprocessed", w / "empty_dir",
                                          "--out", w / "out"], ["nope", "--luna: no such LUNA16 root folder"]),
    "patches --preprocessed is a file": (lambda w: ["patches", "--luna", w / "luna", "--preprocessed", w / "a_file",
                                                    "--out", w / "out"], ["a_file", "--preprocessed: expected"]),
    "patches --out under a file": (lambda w: ["patches", "--luna", w / "luna", "--preprocessed", w / "empty_dir",
                                              "--out", w / "a_file" / "p"], ["a_file", "is a file, not a folder"]),
    "train --patches missing": (lambda w: ["train", "--patches", w / "nope", "--out", w / "out", "--quiet"],
                                ["nope", "--patches: no such patches folder"]),
    "train --patches without index.csv": (lambda w: ["train", "--patches", w / "empty_dir", "--out", w / "out"],
                                          ["index.csv", "--patches: no such patch index"]),
    "train --out is an existing file": (lambda w: ["train", "--patches", w / "patches_stub", "--out", w / "a_file"],
                                        ["a_file", "--out must be a folder"]),
    "train --live under a file": (lambda w: ["train", "--patches", w / "patches_stub", "--out", w / "out",
                                             "--live", w / "a_file" / "l"], ["a_file", "--live cannot be created"]),
    "predict --model missing": (lambda w: ["predict", "--model", w / "nope", "--patches", w / "patches_stub",
                                           "--out", w / "out"], ["nope", "--model: no such model folder"]),
    "predict --model without config.json": (lambda w: ["predict", "--model", w / "empty_dir", "--patches",
                                                       w / "patches_stub", "--out", w / "out"],
                                            ["config.json", "--model: no such model config"]),
    "predict --out is an existing file": (lambda w: ["predict", "--model", w / "model_stub", "--patches",
                                                     w / "patches_stub", "--out", w / "a_file"],
                                          ["a_file", "--out must be a folder"]),
    "figures --out is an existing file": (lambda w: ["figures", "--out", w / "a_file"], ["a_file", "--out"]),
    "preset overlay missing": (lambda w: ["preset", w / "nope.yaml", "--params", w / "good.yaml"],
                               ["nope.yaml", "preset not found"]),
    "preset --params not valid YAML": (lambda w: ["preset", w / "bad.yaml", "--params", w / "bad.yaml"],
                                       ["bad.yaml", "not valid YAML"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_bad_input_gives_one_line_error(world, case):
    if "/proc" in case and not Path("/proc/self").is_dir():
        pytest.skip("needs /proc")
    make_args, needles = CASES[case]
    before = sorted(p.relative_to(world) for p in world.rglob("*"))
    res = _cli(make_args(world), cwd=world)
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert sorted(p.relative_to(world) for p in world.rglob("*")) == before  # nothing written


def test_froc_still_scores_the_good_input(world, tmp_path):
    """The same world, good files: exit 0 and the outputs (the checks above refuse only bad input)."""
    res = _cli(_froc(world, out=tmp_path / "o"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert {p.name for p in (tmp_path / "o").iterdir()} >= {"metrics.json", "froc.csv", "missed.csv"}
