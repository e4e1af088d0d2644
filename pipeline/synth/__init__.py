"""Synthetic LUNA16-format chest CT (``python -m pipeline synth``).

``generate(out_dir, cfg)`` writes ``subsetK/<seriesuid>.mhd+.raw`` (int16 HU, LPS geometry,
some scans with a flipped axis), ``annotations.csv``, ``annotations_excluded.csv``,
``candidates.csv``, ``seriesuids.csv`` and ``synth_summary.json``, byte-identical for a seed.
``make_scan`` makes one scan in memory (with a label map), e.g. full size for benchmarks.
"""
from pipeline.synth.config import SynthConfig
from pipeline.synth.generate import SynthResult, generate, plan_scans
from pipeline.synth.scan import SyntheticScan, make_scan

__all__ = ["SynthConfig", "SynthResult", "SyntheticScan", "generate", "make_scan", "plan_scans"]
