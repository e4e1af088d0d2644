"""A small hand-made PatchStore: bright spherical blobs (nodules, label 1) vs thin bright
lines (vessels, label 0) on noisy lung-like background, 4 subsets (0 test, 1 val, 2-3 train)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

S, P = 16, 32  # cube edge (voxels, 1 mm) and plane edge (pixels)


def _sample(rng, positive: bool) -> tuple[np.ndarray, tuple | None]:
    """(cube, (centre offset zyx, radius) of the blob or None)."""
    g = np.arange(S) - S // 2
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    vol = rng.normal(-800, 40, (S, S, S))
    blob = None
    if positive:
        r = rng.uniform(2.0, 4.0)
        c = rng.uniform(-1, 1, 3)
        vol[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r] = rng.uniform(-50, 60)
        blob = (c, r)
    else:
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        pts = np.stack([z, y, x], -1).astype(float)
        dist = np.linalg.norm(pts - (pts @ d)[..., None] * d, axis=-1)
        vol[dist <= rng.uniform(0.6, 1.2)] = rng.uniform(-50, 60)
    return vol, blob


def _planes(cube: np.ndarray) -> np.ndarray:
    c = S // 2
    sl = np.stack([cube[c], cube[:, c], cube[:, :, c]])
    return np.repeat(np.repeat(sl, P // S, axis=1), P // S, axis=2)  # nearest upsampling to P


def make_patch_store(root: Path, per_subset=(40, 40, 60, 60), pos_frac=0.3, seed=0, shard_size=100) -> Path:
    rng = np.random.default_rng(seed)
    rows, cubes, planes, nodules = [], [], [], []
    split = {0: "test", 1: "val"}
    for subset, n in enumerate(per_subset):
        for i in range(n):
            uid = f"1.2.3.{subset}.{i % 4}"
            lab = int(rng.random() < pos_frac)
            vol, blob = _sample(rng, bool(lab))
            cube = np.clip(vol, -1000, 400).astype(np.int16)
            cubes.append(cube)
            planes.append(_planes(cube).astype(np.int16))
            k = len(rows)
            vox = (100 * k + 50, 50, 50)  # each cube at its own place of its scan's voxel frame
            if blob is not None:  # the blob as an annotation (nodules.csv, voxel frame, 1 mm voxels)
                c, r = blob
                nodules.append({"seriesuid": uid, "kind": "nodule", "z": vox[0] + c[0], "y": vox[1] + c[1],
                                "x": vox[2] + c[2], "rz": r, "ry": r, "rx": r, "diameter_mm": 2 * r})
            rows.append({"sample": k, "seriesuid": uid, "candidate": k, "coordX": float(i), "coordY": -float(i),
                         "coordZ": 10.0 * subset, "label": lab, "diameter_mm": float(rng.uniform(4, 8)) if lab else -1.0,
                         "subset": subset, "split": split.get(subset, "train"), "shard": k // shard_size,
                         "offset": k % shard_size, "shifted": False,
                         "vox_z": vox[0], "vox_y": vox[1], "vox_x": vox[2]})
    root.mkdir(parents=True, exist_ok=True)
    idx = pd.DataFrame(rows)
    for sh in sorted(idx["shard"].unique()):
        sel = idx["shard"] == sh
        np.save(root / f"cubes_{sh:03d}.npy", np.stack(cubes)[sel.to_numpy()])
        np.save(root / f"planes_{sh:03d}.npy", np.stack(planes)[sel.to_numpy()])
    idx.to_csv(root / "index.csv", index=False)
    pd.DataFrame(nodules).to_csv(root / "nodules.csv", index=False)
    summary = {"params": {"cube_mm": float(S), "plane_mm": float(S), "plane_px": P, "planes": "orthogonal",
                          "folds": {"test": [0], "val": [1]}},
               "spacing_xyz_mm": [1.0, 1.0, 1.0], "cube_shape_zyx": [S, S, S], "plane_shape": [3, P, P],
               "n_samples": len(idx)}
    (root / "summary.json").write_text(json.dumps(summary))
    return root


@pytest.fixture(scope="session")
def easy_patches(tmp_path_factory) -> Path:
    return make_patch_store(tmp_path_factory.mktemp("easy_patches"))
