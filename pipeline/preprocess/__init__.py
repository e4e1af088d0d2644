"""Preprocess stage: HU window, resampling to a target spacing, lung mask, memmappable storage.

Public API::

    preprocess_scan(scan, cfg) -> PreprocessedScan(array_zyx, lung_zyx, geometry)
    load_preprocessed(dir, seriesuid) -> LoadedScan(array_zyx, lung_zyx, geometry, sidecar)
    run(luna_root, out_dir, cfg, *, workers=None, scheduler=None, progress=True) -> PreprocessResult
"""
from pipeline.preprocess.config import PreprocessConfig
from pipeline.preprocess.core import PreprocessedScan, preprocess_scan
from pipeline.preprocess.storage import LoadedScan, load_preprocessed

__all__ = [
    "LoadedScan",
    "PreprocessConfig",
    "PreprocessResult",
    "PreprocessedScan",
    "load_preprocessed",
    "preprocess_scan",
    "run",
]


def __getattr__(name):  # lazy: the stage runner pulls in pandas/concurrency machinery
    if name in ("run", "PreprocessResult"):
        from pipeline.preprocess import stage

        return getattr(stage, name)
    raise AttributeError(name)
