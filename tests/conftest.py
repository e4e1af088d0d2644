"""Shared fixtures: a tiny synthetic LUNA16 root, and the shared real-data folder."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# 4 scans, 2 subsets, small field of view; seed chosen so that the set holds a flipped scan
# with a nodule, a scan without nodules and >= 3 annotated nodules >= 6 mm (asserted below).
TINY_SYNTH = {"scans": 4, "subsets": 2, "seed": 2, "fov_mm": [160.0, 160.0, 80.0]}


@pytest.fixture(scope="session")
def tiny_luna(tmp_path_factory) -> Path:
    """Path of a generated LUNA16-format root (``subset0..1/*.mhd``, the CSVs, synth_summary.json)."""
    import pandas as pd

    from pipeline.config import from_dict
    from pipeline.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("tiny_luna")
    res = generate(root, from_dict(SynthConfig, TINY_SYNTH, "synth"), progress=False)
    ann = pd.read_csv(root / "annotations.csv", dtype={"seriesuid": str})
    flipped = {p.seriesuid for p in res.scans if p.direction != ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))}
    assert flipped & set(ann["seriesuid"]), "tiny_luna needs a flipped scan with a nodule"
    assert (ann["diameter_mm"] >= 6).sum() >= 3, "tiny_luna needs >= 3 nodules >= 6 mm"
    assert res.counts["scans_without_nodules"] >= 1
    return root


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``<repo>/../shared`` (real LUNA16 CSVs, LIDC slabs); skips when absent."""
    p = (REPO / ".." / "shared").resolve()
    if not p.is_dir():
        pytest.skip(f"{p} not present")
    return p


@pytest.fixture
def two_torch_threads():
    """torch on 2 threads (the CI machine's cores) for one test; the previous count restored after."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)
