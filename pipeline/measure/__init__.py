"""Measure lesions: a per-finding 3D mask on the scan's own grid, its volume, axial long/short axis
(Lung-RADS mean diameter), 3D diameter, HU statistics, solid component, type, Lung-RADS v2022
category, image number and side. Research aids, not clinical measurements.

Modules: :mod:`~pipeline.measure.segment` (the mask), :mod:`~pipeline.measure.metrics` (the numbers and
the type rules), :mod:`~pipeline.measure.lungrads` (categories), :mod:`~pipeline.measure.core`
(:func:`measure_lesion`, used by ``detect`` and ``measure``), :mod:`~pipeline.measure.cli`.
"""
