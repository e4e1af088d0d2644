"""DICOM Segmentation + TID 1500 Structured Report of a DICOM scan's findings (``detect --dicom-out``).

For a scan read from a DICOM series, :func:`export_scan` writes ``dicom/<id>_seg.dcm`` (one segment
per finding with a mask: its lesion mask on the source slices, label ``F<rank>``, type and Lung-RADS
category in the description, SNOMED "Nodule" or "Mass") and ``dicom/<id>_sr.dcm`` (a Comprehensive
3D SR, TID 1500 Measurement Report: per finding the volume, long / short axis, mean diameter, solid
part, mean HU, type, Lung-RADS category and score, each referencing its segment in the SEG; the
algorithm named with its version and the models' sha256). Both are made with ``highdicom``.

**Identity.** Objects meant to be filed back into a PACS beside the source series carry the source's
patient and study identity (highdicom copies them from the source images): these two files contain
patient identifiers. That is why the export is opt-in; every other output stays free of them.

The SEG's frames lie on the source slices: the scan's grid must be the source's own (slice k of the
volume = source file k, checked through ImagePositionPatient); a gantry-tilted series, which was
resampled onto a regular grid, is not exported (the reason is returned and logged).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
logging.getLogger("highdicom").setLevel(logging.WARNING)  # its INFO lines name source instance UIDs

LOCAL = "99LNP"  # local coding scheme for concepts with no standard code (Lung-RADS category, score)
MANUFACTURER = "lung-nodule-pipeline"


def _code(value: str, scheme: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def source_datasets(scan) -> list:
    """The source DICOM datasets of ``scan`` in slice order (full headers: identity included)."""
    import pydicom

    files = scan.meta.get("source_files") or []
    return [pydicom.dcmread(f) for f in files]


def frames_from_volume(scan, labels_zyx: np.ndarray, sources: list) -> np.ndarray:
    """``labels_zyx`` (z, y, x on the scan's grid) as the source's frames: (n_frames, rows, cols).

    Classic series: volume slice k is source file k; checked (ImagePositionPatient within 0.01 mm of
    the grid's slice origin). Enhanced multi-frame: volume slice k is frame ``instance_numbers[k]``."""
    from pipeline.errors import DataError

    g = scan.geometry
    if scan.meta.get("multiframe"):
        n = int(sources[0].NumberOfFrames)
        frames = np.zeros((n, *labels_zyx.shape[1:]), labels_zyx.dtype)
        for k, num in enumerate(scan.meta.get("instance_numbers") or []):
            frames[int(num) - 1] = labels_zyx[k]
        return frames
    if len(sources) != labels_zyx.shape[0]:
        raise DataError(scan.path, f"{len(sources)} source files for {labels_zyx.shape[0]} slices")
    origins = g.voxel_zyx_to_world(np.c_[np.arange(len(sources)), np.zeros((len(sources), 2))])
    ipp = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in sources])
    if np.abs(origins - ipp).max() > 0.01:
        raise DataError(scan.path, "the volume's slices are not the source slices (resampled); no SEG")
    return labels_zyx


def _algorithm(models: dict):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from pipeline import __version__

    params = {k: str(v)[:64] for k, v in models.items() if v}
    return hd.AlgorithmIdentificationSequence(name=MANUFACTURER, family=codes.DCM.ArtificialIntelligence,
                                              version=str(__version__), parameters=params or None)


def build_seg(sources: list, frames: np.ndarray, findings: list[dict], models: dict):
    """The Segmentation: ``frames`` uint8 (n_frames, rows, cols), value k = finding k (1-based rank);
    one segment per finding present, numbered 1..n in rank order. Returns (seg, {rank: segment})."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    present = sorted(int(v) for v in np.unique(frames) if v)
    seg_of = {rank: n for n, rank in enumerate(present, start=1)}
    relabel = np.zeros(256, np.uint8)
    for rank, n in seg_of.items():
        relabel[rank] = n
    pixel = relabel[frames]
    algo = _algorithm(models)
    descriptions = []
    for rank, n in seg_of.items():
        f = findings[rank - 1]
        kind = codes.SCT.Mass if f.get("type") == "mass" else codes.SCT.Nodule
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=n, segment_label=f"F{rank} {f.get('type') or ''} Lung-RADS {f.get('lungrads') or '-'}"[:64],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo, tracking_uid=hd.UID(), tracking_id=f"F{rank}"))
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixel, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=9901,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name="nodule detection (research)", software_versions=algo[0].AlgorithmVersion,
        device_serial_number="0", series_description="Nodule findings (research aid)", omit_empty_frames=True)
    return seg, seg_of


def _measurements(f: dict) -> list:
    from highdicom.sr import Measurement
    from pydicom.sr.codedict import codes

    mm, mm3 = codes.UCUM.Millimeter, codes.UCUM.CubicMillimeter
    rows = [(codes.SCT.Volume, "volume_mm3", mm3, None),
            (_code("103339001", "SCT", "Long Axis"), "long_axis_mm", mm, None),
            (_code("103340004", "SCT", "Short Axis"), "short_axis_mm", mm, None),
            (codes.SCT.Diameter, "mean_diameter_mm", mm, codes.SCT.Mean),
            (_code("SOLIDVOL", LOCAL, "Solid component volume"), "solid_volume_mm3", mm3, None),
            (_code("112031", "DCM", "Attenuation Coefficient"), "mean_hu", codes.UCUM.HounsfieldUnit, codes.SCT.Mean),
            (_code("SCORE", LOCAL, "Detection score"), "probability", codes.UCUM.NoUnits, None)]
    out = []
    for name, col, unit, derivation in rows:
        v = _num(f.get(col))
        if v is not None:
            out.append(Measurement(name=name, value=v, unit=unit, derivation=derivation))
    return out


def build_sr(sources: list, seg, seg_of: dict, findings: list[dict], models: dict):
    """The Comprehensive 3D SR (TID 1500) with one volumetric group per segmented finding."""
    import highdicom as hd
    from highdicom.sr import (
        Comprehensive3DSR,
        DeviceObserverIdentifyingAttributes,
        MeasurementReport,
        ObservationContext,
        ObserverContext,
        QualitativeEvaluation,
        ReferencedSegment,
        SourceSeriesForSegmentation,
        TrackingIdentifier,
        VolumetricROIMeasurementsAndQualitativeEvaluations,
    )
    from pydicom.sr.codedict import codes

    groups = []
    for rank, n in seg_of.items():
        f = findings[rank - 1]
        quals = [QualitativeEvaluation(_code("TYPE", LOCAL, "Nodule type"),
                                       _code(str(f.get("type") or "unknown"), LOCAL, str(f.get("type") or "unknown")))]
        if f.get("lungrads"):
            quals.append(QualitativeEvaluation(
                _code("LUNGRADS", LOCAL, "Lung-RADS v2022 category (research aid)"),
                _code(str(f["lungrads"]), LOCAL, f"Lung-RADS {f['lungrads']}")))
        groups.append(VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=TrackingIdentifier(uid=hd.UID(), identifier=f"F{rank}"),
            # by hand: from_segmentation fails on a one-segment SEG (ids in the shared groups)
            referenced_segment=ReferencedSegment(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=n,
                source_series=SourceSeriesForSegmentation(sources[0].SeriesInstanceUID)),
            finding_type=codes.SCT.Mass if f.get("type") == "mass" else codes.SCT.Nodule,
            measurements=_measurements(f), qualitative_evaluations=quals))
    observer = ObserverContext(observer_type=codes.DCM.Device,
                               observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
                                   uid=hd.UID(), name=MANUFACTURER, model_name=_algorithm(models)[0].AlgorithmVersion))
    report = MeasurementReport(observation_context=ObservationContext(observer_device_context=observer),
                               procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=groups)
    return Comprehensive3DSR(evidence=[*sources, seg], content=report, series_instance_uid=hd.UID(),
                             series_number=9902, sop_instance_uid=hd.UID(), instance_number=1,
                             manufacturer=MANUFACTURER, series_description="Nodule measurements (research aid)")


def export_scan(out_dir: str | Path, scan_id: str, scan, findings: list[dict], labels_zyx: np.ndarray,
                models: dict) -> dict:
    """Write ``<out_dir>/<scan_id>_seg.dcm`` and ``_sr.dcm``; returns ``{"seg", "sr"}`` (file names) or
    ``{"skipped": reason}`` (not a DICOM scan, resampled, or no finding with a mask)."""
    from pipeline.errors import DataError
    from pipeline.utils import atomic_path

    if (scan.meta or {}).get("format") != "dicom" or not scan.meta.get("source_files"):
        return {"skipped": "not a DICOM series"}
    if scan.meta.get("gantry_tilt_deg"):
        return {"skipped": "gantry-tilted series resampled onto a regular grid: no SEG on its slices"}
    if not np.any(labels_zyx):
        return {"skipped": "no finding with a mask"}
    sources = source_datasets(scan)
    try:
        frames = frames_from_volume(scan, labels_zyx, sources)
    except DataError as exc:
        return {"skipped": str(exc)}
    try:
        seg, seg_of = build_seg(sources, frames, findings, models)
        sr = build_sr(sources, seg, seg_of, findings, models)
    except (ValueError, AttributeError, KeyError) as exc:  # sources lacking what the IODs require
        return {"skipped": f"{scan.path}: DICOM SEG/SR not made: {' '.join(str(exc).split())[:200]}"}
    out = Path(out_dir)
    names = {}
    for kind, ds in (("seg", seg), ("sr", sr)):
        p = out / f"{scan_id}_{kind}.dcm"
        with atomic_path(p, suffix=".dcm") as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        names[kind] = f"dicom/{p.name}"
    return names
