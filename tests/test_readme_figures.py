"""The README's figures and numbers come from the same run as ``eval/metrics.json``.

``docs/froc.png`` and ``docs/froc_detection.png`` are written by the ``figures`` DVC stage from the
evaluation of the same ``dvc repro``; their title (CPM and its CI, also the PNG's ``Title`` text)
must equal ``eval/metrics.json``. The README's CPM table quotes the committed default run: checked
while ``eval/metrics.json`` is the committed one (after a run on another machine it may differ).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
METRICS = REPO / "eval" / "metrics.json"


def _metrics() -> dict:
    if not METRICS.is_file():
        pytest.skip("no eval/metrics.json in this tree (run `make repro`)")
    return json.loads(METRICS.read_text(encoding="utf-8"))


@pytest.mark.parametrize("track, png", [("fpr", "froc.png"), ("detection", "froc_detection.png")])
def test_froc_figure_caption_equals_metrics(track, png):
    m = _metrics()[track]
    with Image.open(REPO / "docs" / png) as im:
        title = im.text.get("Title", "")
    got = re.search(r"CPM (\d\.\d{3}) \(95% CI (\d\.\d{3})-(\d\.\d{3})\)", title)
    assert got, f"docs/{png}: no CPM in its title {title!r} (run `dvc repro figures`)"
    want = [m["cpm"], *m["cpm_ci"]]
    assert [float(g) for g in got.groups()] == [round(w, 3) for w in want], (png, title)


def test_readme_cpm_table_equals_committed_metrics():
    m = _metrics()
    if shutil.which("git") is None or subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", "eval/metrics.json"], cwd=REPO, check=False).returncode != 0:
        pytest.skip("eval/metrics.json differs from the committed run (the README quotes that one)")
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for track, label in (("fpr", "false-positive reduction"), ("detection", "complete detection"),
                         ("cv", "cross-validation")):
        row = next((ln for ln in text.splitlines() if ln.startswith("|") and label in ln), None)
        assert row, f"README: no CPM table row for {label}"
        cells = [c.strip() for c in row.strip("|").split("|")]
        cpm, ci = m[track]["cpm"], m[track]["cpm_ci"]
        assert cells[1] == f"{cpm:.3f}" and cells[2] == f"{ci[0]:.3f} - {ci[1]:.3f}", (label, cells)
    para = " ".join(text.split())  # the sentence under the table
    c = m["classifier"]
    for label, value in (("AUC", c["auc"]), ("accuracy", c["accuracy"]), ("balanced", c["balanced_accuracy"]),
                         ("validation Dice", m["detection"]["segmentation"]["best_val_dice"]),
                         ("CV classifier AUC", m["cv"]["classifier"]["auc"])):
        assert f"{label} {value:.3f}" in para, f"README: '{label} {value:.3f}' (eval/metrics.json) not quoted"
