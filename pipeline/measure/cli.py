"""``python -m pipeline measure``: semi-automatic volumetry at given points, or of every annotated nodule.

    python -m pipeline measure SCAN --at X,Y,Z [--at X,Y,Z ...] [--out measurements.csv]
    python -m pipeline measure --annotations data/luna16/annotations.csv [--luna data/luna16] [--out CSV]

Points are world LPS (x, y, z) mm, as in the LUNA16 CSVs and a viewer's world coordinates. The scan is
preprocessed as for detection (lung mask) and each point measured with the code ``detect`` uses
(:func:`pipeline.measure.core.measure_lesion`). Research aids, not clinical measurements.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

COLUMNS = ["coordX", "coordY", "coordZ", "type", "lungrads", "volume_mm3", "long_axis_mm", "short_axis_mm",
           "mean_diameter_mm", "max_diameter_3d_mm", "equivalent_diameter_mm", "solid_volume_mm3",
           "solid_mean_diameter_mm", "mean_hu", "median_hu", "image_number", "side", "note"]


def _point(text: str) -> tuple[float, float, float]:
    import math

    try:
        vals = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--at {text!r}: expected X,Y,Z in mm (three numbers)") from None
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise argparse.ArgumentTypeError(f"--at {text!r}: expected X,Y,Z in mm (three finite numbers)")
    return vals


def register(subparsers) -> None:
    p = subparsers.add_parser("measure", help="measure the lesion at world points (volume, axes, type, Lung-RADS)",
                              description=__doc__.split("\n\n")[0] + " Research aids, not clinical measurements.")
    p.add_argument("scan", nargs="?", help="a scan: .mhd/.mha/.nii/.nii.gz/.nrrd file or DICOM series folder")
    p.add_argument("--at", type=_point, action="append", default=[], metavar="X,Y,Z",
                   help="world LPS point in mm (repeatable)")
    p.add_argument("--annotations", help="a LUNA16 annotations.csv: measure every annotated nodule")
    p.add_argument("--luna", help="LUNA16 root holding the annotated scans (default: the CSV's folder)")
    p.add_argument("--out", help="write the table to this CSV (default: print it)")
    p.set_defaults(func=_run)


def _measure_scan(scan, points, rows: list, extra: dict | None = None) -> None:
    from pipeline.measure.core import measure_lesion, midline_x_mm
    from pipeline.measure.masses import filled_lungs
    from pipeline.preprocess import PreprocessConfig, preprocess_scan

    pre = preprocess_scan(scan, PreprocessConfig())
    lung = (pre.lung_zyx, pre.geometry)
    mid = midline_x_mm(scan.geometry, lung)
    filled = (filled_lungs(pre.lung_zyx, pre.geometry).view(np.uint8), pre.geometry)
    for p in points:
        m = measure_lesion(scan, p, lung=lung, midline_mm=mid, filled=filled)
        at = {"at_x": p[0], "at_y": p[1], "at_z": p[2]}
        rows.append({"seriesuid": scan.seriesuid, **(extra or {}).get(tuple(p), {}), **at,
                     **{k: m.values.get(k) for k in COLUMNS[:-1]}, "note": "; ".join(m.notes)})


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from pipeline.cliutil import check_output_dir
    from pipeline.errors import DataError
    from pipeline.io.scans import read_scan

    if bool(args.scan) == bool(args.annotations):
        raise DataError(None, "measure: give a SCAN with --at X,Y,Z, or --annotations CSV (not both)")
    if args.out:
        check_output_dir(Path(args.out).parent or ".", "--out")
        if Path(args.out).is_dir():
            raise DataError(args.out, "--out is a folder; give a CSV file name")
    rows: list[dict] = []
    if args.scan:
        if not args.at:
            raise DataError(args.scan, "no point given: add --at X,Y,Z (world mm)")
        _measure_scan(read_scan(args.scan), args.at, rows)
    else:
        from pipeline.io.luna16 import index_root, read_annotations

        ann = read_annotations(args.annotations)
        root = Path(args.luna) if args.luna else Path(args.annotations).parent
        idx = index_root(root)
        paths = dict(zip(idx["seriesuid"], idx["path"]))
        missing = sorted(set(ann["seriesuid"]) - set(paths))
        if missing:
            print(f"measure: {len(missing)} annotated scan(s) not under {root}, skipped", file=sys.stderr)
        for uid, g in ann[ann["seriesuid"].isin(paths)].groupby("seriesuid", sort=False):
            pts = [tuple(v) for v in g[["coordX", "coordY", "coordZ"]].to_numpy(float)]
            extra = {tuple(v): {"annotated_diameter_mm": d} for v, d in zip(pts, g["diameter_mm"])}
            try:
                _measure_scan(read_scan(paths[uid]), pts, rows, extra)
            except DataError as exc:
                print(f"error: {exc}", file=sys.stderr)
    df = pd.DataFrame(rows)
    if args.out:
        from pipeline.utils import write_csv

        write_csv(Path(args.out), df, float_format="%.6g")
        print(f"measure: {len(df)} point(s) -> {args.out}")
    else:
        print(df.to_csv(index=False, float_format="%.6g"), end="")
    print("Measurements, types and Lung-RADS v2022 categories are research aids, not clinical measurements.",
          file=sys.stderr)
    return 0
