from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import DataError
from pipeline.io.luna16 import (
    index_root,
    read_annotations,
    read_candidates,
    read_predictions,
    read_seriesuids,
)

LUNA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "luna16"
needs_shared = pytest.mark.skipif(not LUNA.is_dir(), reason="../shared/data/luna16 not present")


@needs_shared
def test_real_luna16_csvs():
    ann = read_annotations(LUNA / "annotations.csv")
    assert len(ann) == 1186
    assert ann["diameter_mm"].min() > 3
    exc = read_annotations(LUNA / "annotations_excluded.csv")
    assert len(exc) == 35192 - 11105  # the official list repeats 11,105 rows exactly: each kept once
    assert (exc["diameter_mm"] == -1).any()
    uids = read_seriesuids(LUNA / "seriesuids.csv")
    assert len(uids) == 888 and len(set(uids)) == 888
    assert set(ann["seriesuid"]) <= set(uids)


def test_csv_errors_name_row_and_column(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n1.2.3,1,2,3,5\n1.2.4,1,abc,3,5\n")
    with pytest.raises(DataError, match=r"a.csv: row 3: column coordY is not a number"):
        read_annotations(p)
    p.write_text("seriesuid,coordX,coordY,diameter_mm\n1.2.3,1,2,5\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['coordZ'\]"):
        read_annotations(p)
    p.write_text("seriesuid,coordX,coordY,coordZ,class\n1.2.3,1,2,3,2\n")
    with pytest.raises(DataError, match="row 2: class must be 0 or 1"):
        read_candidates(p)
    p.write_text("seriesuid,coordX,coordY,coordZ,probability\n1.2.3,1,2,3,-0.5\n")
    with pytest.raises(DataError, match="probability must be >= 0"):
        read_predictions(p)
    p.write_text("seriesuid,coordX,coordY,coordZ,probability\n1.2.3,1,2,3,\n")
    with pytest.raises(DataError, match="row 2: column probability"):
        read_predictions(p)


def test_index_root(tmp_path):
    for k, uid in [(0, "1.2.3"), (1, "1.2.4"), (1, "1.2.5"), (10, "1.2.6")]:
        d = tmp_path / f"subset{k}"
        d.mkdir(exist_ok=True)
        (d / f"{uid}.mhd").write_text("x")
    df = index_root(tmp_path)
    assert list(df["seriesuid"]) == ["1.2.3", "1.2.4", "1.2.5", "1.2.6"]
    assert list(df["subset"]) == [0, 1, 1, 10]
    (tmp_path / "subset2").mkdir()
    (tmp_path / "subset2" / "1.2.3.mhd").write_text("x")
    with pytest.raises(DataError, match="two subsets"):
        index_root(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        index_root(tmp_path / "nope")
    np.testing.assert_equal(True, True)
