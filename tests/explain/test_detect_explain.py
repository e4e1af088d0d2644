"""``detect --explain`` puts saliency next to each top finding in report.html; ``explain --detect DIR``
explains a detect output folder (untrained real models from tests/detect, a chest phantom)."""
from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location("explain_detect_helpers",
                                               Path(__file__).parents[1] / "detect" / "detect_helpers.py")
H = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(H)

PARAMS = ("infer:\n  max_candidates: 4\n  max_findings: 3\n  max_size_mm: 500.0\n  roi_size: [64, 64, 64]\n"
          "  device: cpu\n  batch_size: 4\nexplain:\n  methods: [gradcampp, occlusion]\n  occlusion_mm: 8.0\n"
          "  device: cpu\n")


def test_detect_explain_report_and_explain_detect_dir(tmp_path):
    from pipeline.cli import main
    from pipeline.io.scans import write_scan

    H.write_model_dirs(tmp_path / "models")
    arr, geom = H.make_phantom(shape_zyx=(36, 90, 96), seed=1)
    write_scan(arr, geom, tmp_path / "in" / "1.2.3.100.mhd")
    (tmp_path / "params.yaml").write_text(PARAMS)
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        rc = main(["detect", "in", "--model", "models/classifier", "--out", "out", "--explain",
                   "--params", "params.yaml", "--no-progress"])
        assert rc == 0
        html = Path("out/report.html").read_text(encoding="utf-8")
        crops = re.findall(r"<img src='(report/[^/']+\.png)' alt='finding crops'>", html)
        maps = re.findall(r"<img src='(report/explain/[^']+\.png)'", html)
        assert crops and len(maps) == len(crops)
        assert all(Path("out", m).is_file() for m in maps)
        # each saliency image right after its finding's crop
        for c, m in zip(crops, maps):
            assert Path(m).stem == Path(c).stem and html.index(m) > html.index(c)
        a = np.load(min(Path("out/report/explain").glob("*_occlusion.npy")))
        assert a.shape == (32, 32) and np.isfinite(a).all()
        rc = main(["explain", "--model", "models/classifier", "--detect", "out", "--out", "ex",
                   "--params", "params.yaml", "--methods", "gradcampp"])
        assert rc == 0 and Path("ex/saliency_sheet.png").is_file()
        assert len(list(Path("ex").glob("*_gradcampp.npy"))) == len(crops)
    finally:
        os.chdir(old)
