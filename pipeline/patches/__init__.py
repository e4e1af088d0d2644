"""Patches stage: 3D cubes and 2D/2.5D planes around LUNA16 candidates, sharded, with splits.

Public API::

    run(luna_root, preprocessed_dir, out_dir, cfg, *, progress=True) -> PatchesResult
    PatchStore(dir).index / .cubes(rows) / .planes(rows)
    extract_cube(volume_zyx, center_zyx, size_zyx), extract_planes(...)
"""
from pipeline.patches.config import Folds, PatchesConfig
from pipeline.patches.dataset import PatchStore
from pipeline.patches.extract import extract_cube, extract_planes

__all__ = ["Folds", "PatchStore", "PatchesConfig", "PatchesResult", "extract_cube", "extract_planes", "run"]


def __getattr__(name):
    if name in ("run", "PatchesResult"):
        from pipeline.patches import stage

        return getattr(stage, name)
    raise AttributeError(name)
