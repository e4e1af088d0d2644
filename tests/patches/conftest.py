"""Fixtures: a tiny phantom LUNA16 root (3 subsets) and its preprocessed output."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "preprocess"))

from phantom_data import write_luna_root

UIDS = {0: ["1.2.840.9.1"], 1: ["1.2.840.9.2"], 2: ["1.2.840.9.3", "1.2.840.9.4"], 3: ["1.2.840.9.5"]}


@pytest.fixture(scope="session")
def phantom_pre(tmp_path_factory):
    """(luna_root, preprocessed_dir) for 5 small phantom scans in subsets 0-3."""
    from pipeline.preprocess import PreprocessConfig
    from pipeline.preprocess.stage import run

    root = write_luna_root(tmp_path_factory.mktemp("pluna"), UIDS, shape_zyx=(24, 96, 100),
                           spacing_xyz_mm=(1.0, 1.0, 3.0))
    pre = tmp_path_factory.mktemp("ppre")
    run(root, pre, PreprocessConfig(workers=1), progress=False)
    return root, pre
