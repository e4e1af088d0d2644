"""Write a synthetic LUNA16 root: ``subsetK/<uid>.mhd+.raw`` and the LUNA16 CSVs."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import to_dict
from pipeline.io.scans import write_scan
from pipeline.progress import ProgressLog
from pipeline.runlog import write_run_log
from pipeline.synth.candidates import write_candidates
from pipeline.synth.config import SynthConfig
from pipeline.synth.scan import FLIPS, make_scan, make_uid
from pipeline.utils import write_csv, write_json, write_text

log = logging.getLogger(__name__)
ANN = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
CAND = ["seriesuid", "coordX", "coordY", "coordZ", "class"]


@dataclass(frozen=True)
class ScanPlan:
    index: int
    subset: int
    seriesuid: str
    seed: tuple[int, int]
    spacing_xyz_mm: tuple[float, float, float]
    direction: tuple[tuple[float, ...], ...]
    mass_seed: tuple[int, ...] | None = None  # set for the scans that hold a mass


@dataclass
class SynthResult:
    out_dir: Path
    paths: dict[str, Path]
    counts: dict[str, int]
    seconds: float
    bytes_per_scan: float
    scans: list[ScanPlan] = field(default_factory=list)
    seconds_per_scan: dict[str, float] = field(default_factory=dict)


def plan_scans(cfg: SynthConfig) -> list[ScanPlan]:
    """Per-scan uid, subset (round robin), seed, spacing and direction; deterministic for cfg.seed.

    Exactly ``round(flip_fraction * scans)`` scans get one flipped index axis, and
    ``round(mass_fraction * scans)`` a mass (chosen by a stream of their own: the rest of the plan
    does not depend on ``mass_fraction``).
    """
    rng = np.random.default_rng([int(cfg.seed), 0x5EED])
    n = int(cfg.scans)
    flipped = set(rng.permutation(n)[: round(cfg.flip_fraction * n)].tolist())
    plans, uids = [], set()
    for i in range(n):
        uid = make_uid(rng)
        while uid in uids:
            uid = make_uid(rng)
        uids.add(uid)
        sxy = round(float(rng.uniform(*cfg.spacing_inplane_mm)), 6)
        spacing = (sxy, sxy, float(rng.choice(cfg.slice_mm)))
        flip = FLIPS[int(rng.integers(0, len(FLIPS)))]
        direction = np.diag(flip) if i in flipped else np.eye(3)
        plans.append(ScanPlan(i, i % int(cfg.subsets), uid, (int(cfg.seed), i + 1), spacing,
                              tuple(map(tuple, direction.tolist()))))
    mrng = np.random.default_rng([int(cfg.seed), 0x3A55])
    for i in mrng.permutation(n)[: round(float(cfg.mass_fraction) * n)].tolist():
        plans[i] = replace(plans[i], mass_seed=(int(cfg.seed), i + 1, 0x3A55))
    return plans


def make_planned_scan(plan: ScanPlan, cfg: SynthConfig):
    """The :class:`~pipeline.synth.scan.SyntheticScan` of one plan entry (what ``generate`` writes)."""
    return make_scan(plan.seriesuid, np.random.default_rng(list(plan.seed)), cfg, spacing_xyz_mm=plan.spacing_xyz_mm,
                     direction=plan.direction, mass_seed=list(plan.mass_seed) if plan.mass_seed else None)


SYNTH_SIGNATURES = ("synth_summary.json",)  # a folder synth wrote before output markers existed


def generate(out_dir: str | Path, cfg: SynthConfig | None = None, *, progress: bool = True,
             run_log: str | Path | None = None, force: bool = False) -> SynthResult:
    """Generate ``cfg.scans`` scans into ``out_dir`` (LUNA16 layout); returns paths, counts, timings.

    Every file under ``out_dir`` depends only on ``cfg`` (no timings: same config, same bytes).
    Timings go to the log and, when ``run_log`` is given, to that JSON file (``logs/synth.json``).
    ``out_dir`` must be new, empty or written by synth (:mod:`pipeline.outdir`; ``force`` overrides):
    it removes scans of an earlier synth run that the config no longer makes.
    """
    from pipeline.outdir import claim_output_dir

    cfg = cfg or SynthConfig()
    out = claim_output_dir(out_dir, "synth", force=force, signatures=SYNTH_SIGNATURES)
    t0 = time.perf_counter()
    plans = plan_scans(cfg)
    keep = {f"{p.seriesuid}{s}" for p in plans for s in (".mhd", ".raw")}
    for stale in sorted(out.glob("subset*/*")):
        if stale.suffix in (".mhd", ".raw") and stale.name not in keep:
            log.info("removing stale %s", stale)
            stale.unlink()
    ann, exc, cand, per_scan, scan_seconds = [], [], [], [], {}
    it = plans
    if progress:
        from tqdm import tqdm

        it = tqdm(plans, desc="synth", unit="scan")
    plog = ProgressLog(len(plans), "synth", every_s=300.0 if progress else 30.0, logger=log, unit="scan")
    for p in it:
        t = time.perf_counter()
        scan = make_planned_scan(p, cfg)
        path = out / f"subset{p.subset}" / f"{p.seriesuid}.mhd"
        write_scan(scan.array_zyx, scan.geometry, path)
        nbytes = path.stat().st_size + path.with_suffix(".raw").stat().st_size
        ann.append(scan.nodules)
        exc.append(scan.excluded)
        cand.append(scan.candidates)
        scan_seconds[p.seriesuid] = round(time.perf_counter() - t, 3)
        per_scan.append({"seriesuid": p.seriesuid, "subset": p.subset, "bytes": nbytes,
                         "shape_zyx": list(scan.geometry.shape_zyx),
                         "spacing_xyz_mm": list(scan.geometry.spacing_xyz_mm), "flipped": scan.meta["flipped"],
                         "nodules": len(scan.nodules), "excluded": len(scan.excluded),
                         "masses": scan.meta["masses"], "mass_planned": p.mass_seed is not None})
        plog.update()
    ann_df = pd.concat(ann, ignore_index=True)
    cand_df = pd.concat(cand, ignore_index=True)
    paths = {
        "annotations": write_csv(out / "annotations.csv", ann_df[ANN]),
        "annotations_excluded": write_csv(out / "annotations_excluded.csv", pd.concat(exc, ignore_index=True)[ANN]),
        **write_candidates(out, cand_df[CAND], cfg.candidates_csv_names),  # candidates.csv (+ aliases)
        "seriesuids": write_text(out / "seriesuids.csv", "".join(f"{p.seriesuid}\n" for p in plans)),
    }
    seconds = time.perf_counter() - t0
    counts = {"scans": len(plans), "subsets": int(cfg.subsets), "flipped": sum(s["flipped"] for s in per_scan),
              "annotations": len(ann_df), "excluded": int(sum(len(e) for e in exc)),
              "masses": sum(s["masses"] for s in per_scan),
              "masses_not_placed": sum(s["mass_planned"] and not s["masses"] for s in per_scan),
              "candidates": len(cand_df), "candidates_pos": int((cand_df["class"] == 1).sum()),
              "candidates_neg": int((cand_df["class"] == 0).sum()),
              "scans_without_nodules": sum(s["nodules"] == 0 for s in per_scan)}
    bytes_per_scan = float(np.mean([s["bytes"] for s in per_scan]))
    paths["summary"] = write_json(out / "synth_summary.json", {
        "counts": counts, "bytes_per_scan": int(bytes_per_scan),
        "bytes_total": int(sum(s["bytes"] for s in per_scan)),
        "params": to_dict(cfg), "scans": per_scan})
    log.info("synth: %d scans, %d annotations, %d candidates in %.1f s (%.1f MB/scan) -> %s", len(plans),
             len(ann_df), len(cand_df), seconds, bytes_per_scan / 1e6, out)
    write_run_log("synth", {"out_dir": str(out), "scans": len(plans), "seconds": round(seconds, 2),
                            "seconds_per_scan_mean": round(seconds / len(plans), 3),
                            "seconds_per_scan": scan_seconds}, run_log)
    return SynthResult(out, paths, counts, seconds, bytes_per_scan, plans, scan_seconds)
