"""Small chest phantoms defined in WORLD coordinates (so any direction/spacing samples the
same anatomy): body ellipse cylinder, a bone arc, two lung ellipsoids at -850 HU and a
sphere nodule. Labels: 0 outside air, 1 body, 4 bone, 2 right lung, 3 left lung, 6 nodule
(lung = labels in {2, 3, 6}, as in pipeline.synth)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.io.geometry import Geometry
from pipeline.io.scans import write_scan

LUNG_LABELS = (2, 3, 6)
NODULE_XYZ_MM = (-22.0, 3.0, 2.0)   # inside the right lung (x < 0)
NODULE_DIAM_MM = 10.0
HU = {0: -1000, 1: 40, 4: 700, 2: -850, 3: -850, 6: 60}


def make_phantom(shape_zyx=(40, 120, 128), spacing_xyz_mm=(0.8, 0.8, 2.0), direction=None,
                 center_xyz_mm=(0.0, 0.0, 0.0), seed=0, noise_hu=15.0, nodule_xyz_mm=NODULE_XYZ_MM,
                 nodule_diam_mm=NODULE_DIAM_MM):
    """Return (array_zyx int16 HU, labels_zyx uint8, Geometry) centred on ``center_xyz_mm``."""
    direction = np.eye(3) if direction is None else np.asarray(direction, float)
    g0 = Geometry((0.0, 0.0, 0.0), spacing_xyz_mm, direction, shape_zyx)
    origin = np.asarray(center_xyz_mm) - (g0.center_xyz_mm() - np.asarray(g0.origin_xyz_mm))
    geom = Geometry(tuple(origin), spacing_xyz_mm, direction, shape_zyx)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape_zyx], indexing="ij"), -1).reshape(-1, 3)
    w = geom.voxel_zyx_to_world(idx) - np.asarray(center_xyz_mm)
    x, y, z = w[:, 0], w[:, 1], w[:, 2]
    lab = np.zeros(len(w), np.uint8)
    body = (x / 46.0) ** 2 + (y / 40.0) ** 2 <= 1
    lab[body] = 1
    r = np.sqrt((x / 46.0) ** 2 + (y / 40.0) ** 2)
    lab[body & (r > 0.86) & (r < 0.93) & (y < 0)] = 4  # an anterior bone arc in the wall
    zc = 0.0
    right = ((x + 22) / 15.0) ** 2 + (y / 26.0) ** 2 + ((z - zc) / 30.0) ** 2 <= 1
    left = ((x - 22) / 15.0) ** 2 + (y / 26.0) ** 2 + ((z - zc) / 30.0) ** 2 <= 1
    lab[right] = 2
    lab[left] = 3
    nod = np.sum((w - (np.asarray(nodule_xyz_mm) - 0)) ** 2, axis=1) <= (nodule_diam_mm / 2) ** 2
    lab[nod] = 6
    labels = lab.reshape(shape_zyx)
    hu = np.vectorize(HU.get)(labels).astype(np.float32)
    rng = np.random.default_rng(seed)
    hu += rng.normal(0, noise_hu, hu.shape) * (labels > 0)
    return np.clip(np.rint(hu), -1024, 3000).astype(np.int16), labels, geom


def write_luna_root(root: Path, uids_by_subset: dict[int, list[str]], **kw) -> Path:
    """Write a tiny LUNA16 root: subsetK/<uid>.mhd + annotations.csv + candidates.csv.

    Each scan gets one positive candidate at the nodule, one near-border negative and
    three lung/body negatives."""
    rows_a, rows_c = [], []
    for subset, uids in uids_by_subset.items():
        for i, uid in enumerate(uids):
            center = (float(i) * 7.0, -3.0 * i, 100.0 + 10 * subset)
            arr, _, geom = make_phantom(center_xyz_mm=center, seed=subset * 100 + i, **kw)
            write_scan(arr, geom, root / f"subset{subset}" / f"{uid}.mhd")
            nod = np.asarray(center) + np.asarray(NODULE_XYZ_MM)
            rows_a.append((uid, *nod, NODULE_DIAM_MM))
            rows_c.append((uid, *nod, 1))
            corner = geom.voxel_zyx_to_world((1, 2, 3))
            for p in (corner, np.asarray(center) + (22, 0, 0), np.asarray(center) + (0, 30, 0),
                      np.asarray(center) + (-25, -10, 10)):
                rows_c.append((uid, *p, 0))
    import pandas as pd

    pd.DataFrame(rows_a, columns=["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]).to_csv(
        root / "annotations.csv", index=False)
    pd.DataFrame(rows_c, columns=["seriesuid", "coordX", "coordY", "coordZ", "class"]).to_csv(
        root / "candidates.csv", index=False)
    return root
