"""LUNA16 CSV readers (validated) and the index of a LUNA16 root folder.

All coordinates are world ``(coordX, coordY, coordZ)`` in mm (LPS), as in the
LUNA16 ``.mhd`` headers.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import DataError

log = logging.getLogger(__name__)

ANNOTATION_COLUMNS = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
CANDIDATE_COLUMNS = ["seriesuid", "coordX", "coordY", "coordZ", "class"]
PREDICTION_COLUMNS = ["seriesuid", "coordX", "coordY", "coordZ", "probability"]
_COORDS = ["coordX", "coordY", "coordZ"]


def read_table(path: str | os.PathLike, columns: list[str], numeric: list[str]) -> pd.DataFrame:
    """The project's one CSV reader: ``columns`` required (others dropped), a UTF-8 byte-order mark
    ignored, ``seriesuid`` as text (stripped, never empty), ``numeric`` columns finite numbers;
    a one-line DataError naming the file and the row otherwise. ``attrs["path"]`` is the file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "no such file")
    try:
        df = pd.read_csv(p, dtype={"seriesuid": str}, encoding="utf-8-sig")  # a BOM is not part of a name
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(p, f"not a readable CSV ({str(exc).splitlines()[0][:120]})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(p, f"missing column(s) {missing}; expected columns {columns}, found {list(df.columns)}")
    df = df[columns].copy()
    if df["seriesuid"].isna().any():
        row = int(df.index[df["seriesuid"].isna()][0])
        raise DataError(p, f"row {row + 2}: empty seriesuid")
    df["seriesuid"] = df["seriesuid"].astype(str).str.strip()
    for col in numeric:
        vals = pd.to_numeric(df[col], errors="coerce")
        bad = vals.isna() & ~df[col].isna() | df[col].isna()
        if bad.any():
            row = int(df.index[bad][0])
            raise DataError(p, f"row {row + 2}: column {col} is not a number ({df[col].iloc[row]!r})")
        df[col] = vals.astype(float)
        inf = ~np.isfinite(df[col].to_numpy())
        if inf.any():
            row = int(df.index[inf][0])
            raise DataError(p, f"row {row + 2}: column {col} is not a finite number ({df[col].iloc[row]!r})")
    df = df.reset_index(drop=True)
    df.attrs["path"] = str(p)
    return df


def read_annotations(path: str | os.PathLike) -> pd.DataFrame:
    """``annotations.csv`` / ``annotations_excluded.csv``: seriesuid, coordX/Y/Z (mm), diameter_mm.

    In the excluded list ``diameter_mm`` is -1 where unknown (kept as is).
    """
    df = read_table(path, ANNOTATION_COLUMNS, _COORDS + ["diameter_mm"])
    bad = (df["diameter_mm"] <= 0) & (df["diameter_mm"] != -1)
    if bad.any():
        row = int(df.index[bad][0])
        raise DataError(path, f"row {row + 2}: diameter_mm must be positive or -1, got {df['diameter_mm'][row]}")
    return drop_duplicate_rows(df, path)


def drop_duplicate_rows(df: pd.DataFrame, path: str | os.PathLike) -> pd.DataFrame:
    """Rows repeated exactly (same scan, position and diameter) are one finding listed twice, never
    two: kept once, with a warning naming the first repeat. (The official LUNA16
    ``annotations_excluded.csv`` repeats 11,105 of its rows; in ``annotations.csv`` a repeat would
    otherwise be a second nodule to find.)"""
    dup = df.duplicated()
    if not dup.any():
        return df
    first = int(df.index[dup][0])
    same = int(df.index[(df == df.iloc[first]).all(axis=1)][0])
    log.warning("%s: %d row(s) repeat an earlier row exactly (first: row %d repeats row %d); each is counted "
                "once", path, int(dup.sum()), first + 2, same + 2)
    return df[~dup].reset_index(drop=True)


def read_candidates(path: str | os.PathLike) -> pd.DataFrame:
    """``candidates.csv`` (or ``candidates_V2.csv``): seriesuid, coordX/Y/Z (mm), class (0/1)."""
    df = read_table(path, CANDIDATE_COLUMNS, _COORDS + ["class"])
    bad = ~df["class"].isin([0, 1])
    if bad.any():
        row = int(df.index[bad][0])
        raise DataError(path, f"row {row + 2}: class must be 0 or 1, got {df['class'][row]}")
    df["class"] = df["class"].astype(int)
    return df


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """LUNA16 submission: seriesuid, coordX/Y/Z (mm), probability (finite, >= 0)."""
    df = read_table(path, PREDICTION_COLUMNS, _COORDS + ["probability"])
    bad = df["probability"] < 0
    if bad.any():
        row = int(df.index[bad][0])
        raise DataError(path, f"row {row + 2}: probability must be >= 0, got {df['probability'][row]}")
    return df


def read_seriesuids(path: str | os.PathLike) -> list[str]:
    """``seriesuids.csv``: one UID per line, no header."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "no such file")
    text = p.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first UID
    uids = [ln.strip().split(",")[0].strip() for ln in text.splitlines() if ln.strip()]
    if uids and not re.fullmatch(r"[0-9.]+", uids[0]):
        uids = uids[1:]  # tolerate a header line
    if not uids:
        raise DataError(p, "no series UIDs listed")
    for i, u in enumerate(uids):
        if not re.fullmatch(r"[0-9][0-9.]*", u):
            raise DataError(p, f"line {i + 1}: {u!r} is not a DICOM UID")
    return uids


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


_SUBSET_RE = re.compile(r"subset(\d+)$")


def index_root(root: str | os.PathLike) -> pd.DataFrame:
    """Index a LUNA16 root: one row per ``subsetK/<seriesuid>.mhd``.

    Returns a DataFrame with columns ``seriesuid, subset (int), path``, sorted by
    subset then seriesuid. A flat folder of ``.mhd`` files is indexed as subset 0.
    """
    r = Path(root)
    if not r.is_dir():
        raise DataError(r, "LUNA16 root is not a folder")
    rows = []
    subsets = sorted((d for d in r.iterdir() if d.is_dir() and _SUBSET_RE.match(d.name)),
                     key=lambda d: int(_SUBSET_RE.match(d.name).group(1)))
    if subsets:
        for d in subsets:
            k = int(_SUBSET_RE.match(d.name).group(1))
            rows += [(f.stem, k, str(f)) for f in sorted(d.glob("*.mhd"))]
    else:
        rows += [(f.stem, 0, str(f)) for f in sorted(r.glob("*.mhd"))]
    odd = [row for row in rows if not _utf8(row[0])]
    for uid, _, path in odd:  # a LUNA16 seriesuid is digits and dots: such a file cannot be one
        log.warning("%s: file name is not valid UTF-8, so it is no LUNA16 seriesuid; skipped",
                    os.fsencode(path).decode("utf-8", "backslashreplace"))
    rows = [row for row in rows if _utf8(row[0])]
    if not rows:
        raise DataError(r, "no subset*/<seriesuid>.mhd scans found")
    df = pd.DataFrame(rows, columns=["seriesuid", "subset", "path"])
    dup = df["seriesuid"].duplicated()
    if dup.any():
        raise DataError(r, f"seriesuid {df['seriesuid'][dup].iloc[0]} appears in two subsets")
    return df.sort_values(["subset", "seriesuid"]).reset_index(drop=True)
