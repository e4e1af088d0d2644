"""The ``patches`` stage: candidates -> 3D cubes and 2D/2.5D planes in shards + index.csv.

Flow: label every candidate (row number = ``candidate``), keep the scans preprocess
finished (failed ones are skipped with a warning), assign splits by subset, keep EVERY
candidate (so any subset can be scored completely by any cross-validation fold) plus shifted
copies of the positives (training material only), then cut patches per scan in a process
pool. Each worker memory-maps its scan (``load_preprocessed``), converts the sample
centres world -> voxel ONCE with the sidecar geometry, and writes its patches to a
per-scan part file; the parent then copies parts into shards of <= ``shard_size``
samples, each written atomically, and writes ``nodules.csv`` (annotations in each scan's
voxel frame, for the segmenter's targets), ``index.csv`` and ``summary.json`` last.
A candidate whose centre lies outside its volume still gets a (air-padded) patch and a row.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import to_dict
from pipeline.errors import DataError
from pipeline.io.geometry import Geometry
from pipeline.io.luna16 import index_root, read_annotations, read_candidates
from pipeline.patches.config import PatchesConfig
from pipeline.patches.nodules import nodule_table
from pipeline.patches.sampling import (
    COORDS,
    INDEX_COLUMNS,
    VOXEL_COLUMNS,
    label_candidates,
    select_samples,
)
from pipeline.patches.splits import assign_splits, check_no_leakage
from pipeline.progress import ProgressLog
from pipeline.runlog import write_run_log
from pipeline.utils import atomic_path, read_json, write_csv, write_json

log = logging.getLogger(__name__)


@dataclass
class PatchesResult:
    out_dir: Path
    index: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def _extract_scan(seriesuid: str, pre_dir: str, coords_xyz_mm: np.ndarray, parts_dir: str,
                  cfg: PatchesConfig) -> dict:
    """Cut all samples of one scan into ``parts_dir/<uid>.{cubes,planes}.npy`` (sample order)."""
    from pipeline.patches.extract import cube_shape_zyx, extract_cube, extract_planes
    from pipeline.preprocess.storage import load_preprocessed

    t0 = time.perf_counter()
    vol, _, geom, _ = load_preprocessed(pre_dir, seriesuid)
    centres = np.atleast_2d(geom.world_to_nearest_voxel_zyx(coords_xyz_mm))  # once per sample
    size = cube_shape_zyx(cfg.cube_mm, geom.spacing_zyx_mm)
    n, p = len(centres), int(cfg.plane_px)
    parts = Path(parts_dir)
    cubes = np.lib.format.open_memmap(parts / f"{seriesuid}.cubes.npy", "w+", np.int16, (n, *size))
    planes = np.lib.format.open_memmap(parts / f"{seriesuid}.planes.npy", "w+", np.int16, (n, 3, p, p))
    for i, c in enumerate(centres):
        cubes[i] = extract_cube(vol, c, size)
        planes[i] = extract_planes(vol, c, geom.spacing_zyx_mm, cfg.plane_mm, p, cfg.planes)
    cubes.flush(), planes.flush()
    outside = int((~np.atleast_1d(geom.contains_voxel_zyx(centres))).sum())
    return {"seriesuid": seriesuid, "n": n, "outside": outside, "seconds": time.perf_counter() - t0,
            "centres_zyx": np.asarray(centres, np.int64)}


FAR_OUTSIDE_MM = 20.0  # a candidate centre this far outside its scan is a wrong coordinate, not an edge case


def check_inside(cands: pd.DataFrame, geoms: dict[str, Geometry], path: Path) -> None:
    """DataError naming the CSV row of the first candidate whose centre lies more than
    :data:`FAR_OUTSIDE_MM` outside its (preprocessed) scan's volume: its cube would be blank, and a
    positive there a nodule no model can find. Centres just outside the edge are cut as usual."""
    for uid, g in cands.groupby("seriesuid", sort=False):
        geom = geoms.get(uid)
        if geom is None:
            continue
        idx = geom.world_to_voxel_zyx(g[COORDS].to_numpy(float))
        shape = np.asarray(geom.shape_zyx, float)
        below, above = np.clip(-idx, 0, None), np.clip(idx - (shape - 1), 0, None)
        dist = np.linalg.norm((below + above) * np.asarray(geom.spacing_zyx_mm), axis=1)
        far = dist > FAR_OUTSIDE_MM
        if far.any():
            k = int(np.argmax(far))
            row = int(g.index[k]) + 2
            xyz = ", ".join(f"{v:g}" for v in g[COORDS].to_numpy(float)[k])
            raise DataError(path, f"row {row}: candidate at ({xyz}) mm lies {dist[k]:.0f} mm outside scan "
                                  f"{uid}'s volume; fix or remove the row")


def _available_scans(pre_dir: Path, uids: list[str]) -> tuple[list[str], list[str]]:
    man_path = pre_dir / "manifest.csv"
    ok_status = None
    if man_path.is_file():
        man = pd.read_csv(man_path, dtype={"seriesuid": str})
        ok_status = set(man.loc[man["status"].isin(["ok", "skipped"]), "seriesuid"])
    ok, missing = [], []
    for u in uids:
        good = (pre_dir / f"{u}.json").is_file() and (ok_status is None or u in ok_status)
        (ok if good else missing).append(u)
    return ok, missing


def _write_shards(out: Path, parts: Path, index: pd.DataFrame, cube_shape: tuple, plane_px: int) -> int:
    index = index.assign(_pos=index.groupby("seriesuid").cumcount())
    n_shards = int(index["shard"].max()) + 1 if len(index) else 0
    for k in range(n_shards):
        rows = index[index["shard"] == k]
        for kind, shape in (("cubes", cube_shape), ("planes", (3, plane_px, plane_px))):
            with atomic_path(out / f"{kind}_{k:03d}.npy", suffix=".npy") as tmp:
                arr = np.lib.format.open_memmap(tmp, "w+", np.int16, (len(rows), *shape))
                for uid, g in rows.groupby("seriesuid", sort=False):
                    src = np.load(parts / f"{uid}.{kind}.npy", mmap_mode="r")
                    arr[g["offset"].to_numpy()] = src[g["_pos"].to_numpy()]
                arr.flush()
                del arr
    for stale in list(out.glob("cubes_*.npy")) + list(out.glob("planes_*.npy")):
        if int(stale.stem.split("_")[1]) >= n_shards:
            stale.unlink()
    return n_shards


def data_summary(luna: Path, index: pd.DataFrame, nodules: pd.DataFrame) -> dict[str, Any]:
    """What the store was cut from (for model cards): the LUNA16 root's folder name, whether it is our
    synthetic data (``synth_summary.json`` beside its CSVs), and per split the scans and nodules."""
    split_of = index.drop_duplicates("seriesuid").set_index("seriesuid")["split"]
    nod = nodules[nodules["kind"] == "nodule"]
    return {"name": luna.resolve().name, "synthetic": (luna / "synth_summary.json").is_file(),
            "scans": {str(s): int(n) for s, n in split_of.value_counts().sort_index().items()},
            "nodules": {str(s): int(n) for s, n in nod["seriesuid"].map(split_of).value_counts().sort_index().items()}}


def run(luna_root: str | os.PathLike, preprocessed_dir: str | os.PathLike, out_dir: str | os.PathLike,
        cfg: PatchesConfig = PatchesConfig(), *, progress: bool = True,
        run_log: str | os.PathLike | None = None) -> PatchesResult:
    """Extract patches for every candidate of the preprocessed scans.

    Returns:
        :class:`PatchesResult`; writes ``cubes_###.npy`` (n, S, S, S), ``planes_###.npy``
        (n, 3, P, P), ``index.csv`` and ``summary.json`` into ``out_dir``.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm import tqdm

    t0 = time.perf_counter()
    luna, pre, out = Path(luna_root), Path(preprocessed_dir), Path(out_dir)
    scans = index_root(luna)
    cands = read_candidates(luna / cfg.candidates_csv)
    anns = read_annotations(luna / "annotations.csv")
    labelled = label_candidates(cands, anns)
    subset_of = dict(zip(scans["seriesuid"], scans["subset"]))
    unknown = sorted(set(labelled["seriesuid"]) - set(subset_of))
    if unknown:
        log.warning("%d series in %s have no scan under %s; skipped", len(unknown), cfg.candidates_csv, luna)
    uids = sorted(set(labelled["seriesuid"]) & set(subset_of))
    ok, missing = _available_scans(pre, uids)
    if missing:
        log.warning("%d scan(s) not preprocessed (failed or missing), skipped: %s", len(missing),
                    ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
    if not ok:
        raise DataError(pre, "no preprocessed scans with candidates found")
    geoms = {u: Geometry.from_dict(read_json(pre / f"{u}.json")["geometry"]) for u in ok}
    check_inside(cands, geoms, luna / cfg.candidates_csv)
    spacings = {tuple(g.spacing_xyz_mm) for g in geoms.values()}
    if len(spacings) != 1:
        raise DataError(pre, f"preprocessed scans have different spacings {sorted(spacings)}; rerun preprocess")
    labelled = labelled[labelled["seriesuid"].isin(ok)].copy()
    labelled["subset"] = labelled["seriesuid"].map(subset_of).astype(int)
    labelled["split"] = assign_splits(labelled["subset"], cfg.folds)
    index = select_samples(labelled, cfg)
    check_no_leakage(index)

    out.mkdir(parents=True, exist_ok=True)
    parts = out / ".parts"
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir()
    groups = {u: g[COORDS].to_numpy(float) for u, g in index.groupby("seriesuid")}
    stats = []
    plog = ProgressLog(len(groups), "patches", unit="scan", every_s=300.0 if progress else 30.0, logger=log)
    with tqdm(total=len(groups), desc="patches", unit="scan", disable=not progress) as bar:
        if int(cfg.workers) > 1 and len(groups) > 1:
            ctx = mp.get_context("forkserver")
            with ProcessPoolExecutor(min(int(cfg.workers), len(groups)), mp_context=ctx) as pool:
                futs = [pool.submit(_extract_scan, u, str(pre), c, str(parts), cfg) for u, c in groups.items()]
                for f in as_completed(futs):
                    stats.append(f.result())
                    bar.update()
                    plog.update()
        else:
            for u, c in groups.items():
                stats.append(_extract_scan(u, str(pre), c, str(parts), cfg))
                bar.update()
                plog.update()
    from pipeline.patches.extract import cube_shape_zyx

    sp_xyz = next(iter(spacings))
    cube_shape = cube_shape_zyx(cfg.cube_mm, sp_xyz[::-1])
    n_shards = _write_shards(out, parts, index, cube_shape, int(cfg.plane_px))
    shutil.rmtree(parts, ignore_errors=True)
    by_uid = {s["seriesuid"]: s["centres_zyx"] for s in stats}
    vox = np.zeros((len(index), 3), np.int64)
    for uid, g in index.groupby("seriesuid", sort=False):
        vox[index.index.get_indexer(g.index)] = by_uid[uid]
    index[VOXEL_COLUMNS] = vox
    index = index[INDEX_COLUMNS]
    geoms = {u: Geometry.from_dict(read_json(pre / f"{u}.json")["geometry"]) for u in sorted(groups)}
    excl_path = luna / "annotations_excluded.csv"
    nodules = nodule_table(anns, read_annotations(excl_path) if excl_path.is_file() else None, geoms,
                           cfg.mass_min_mm)
    write_csv(out / "nodules.csv", nodules)
    write_csv(out / "index.csv", index)
    seconds = time.perf_counter() - t0
    counts = {s: {str(k): int(v) for k, v in g["label"].value_counts().sort_index().items()}
              for s, g in index.groupby("split")}
    summary = {
        "params": to_dict(cfg), "n_samples": len(index), "n_shards": n_shards,
        "n_scans": len(groups), "skipped_scans": missing, "counts": counts,
        "n_candidates": int((index["shifted"] == 0).sum()), "candidates_csv_rows": len(cands),
        "n_nodules": int((nodules["kind"] == "nodule").sum()), "n_excluded": int((nodules["kind"] == "excluded").sum()),
        "n_masses": int((nodules["kind"] == "mass").sum()),
        "n_shifted": int(index["shifted"].sum()), "cube_shape_zyx": list(cube_shape),
        "plane_shape": [3, int(cfg.plane_px), int(cfg.plane_px)], "spacing_xyz_mm": list(sp_xyz),
        "centres_outside_volume": int(sum(s["outside"] for s in stats)),
        "positives_without_annotation": int(((index["label"] == 1) & (index["diameter_mm"] < 0)).sum()),
        "data": data_summary(luna, index, nodules),
    }
    write_json(out / "summary.json", summary)  # content only: identical inputs give identical bytes
    write_run_log("patches", {"out_dir": str(out), "samples": len(index), "seconds": round(seconds, 2),
                              "samples_per_second": round(len(index) / max(seconds, 1e-9), 1),
                              "seconds_per_scan": {s["seriesuid"]: round(s["seconds"], 3) for s in stats}}, run_log)
    return PatchesResult(out, index, summary)
