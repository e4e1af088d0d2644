"""``measure`` at the LUNA16 centre of the real LIDC-IDRI-0003 nodule against the four LIDC readers.

The readers' contours (``../shared/data/real_ct/readings/LIDC-IDRI-0003.xml``) are filled per slice on
the slab's own grid. LIDC readers were instructed to draw each outline just *outside* the nodule, so the
nodule is the filled outline without the outline pixels (its interior); both are computed and the
interior is the comparison. The measurement must land inside the readers' interior volume range and
its long axis within 20 % of their mean long axis (same axis code for readers and measurement)."""
from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from pipeline.measure.metrics import measure_mask

REPO = Path(__file__).resolve().parents[2]
CENTRE_XYZ_MM = (72.287, 76.900, -190.459)  # LUNA16 annotations.csv, diameter 21.45 mm
NS = {"n": "http://www.nih.gov"}


def reader_masks(scan, xml_path: Path, centre, interior: bool = True) -> list[np.ndarray]:
    """One bool (z, y, x) mask per reader for the nodule whose contours lie within 15 mm of ``centre``."""
    from skimage.draw import polygon

    g = scan.geometry
    zs = np.array([g.voxel_zyx_to_world((k, 0, 0)).ravel()[2] for k in range(g.shape_zyx[0])])
    out = []
    for rs in ET.parse(xml_path).getroot().iter("{http://www.nih.gov}readingSession"):
        for nod in rs.findall("n:unblindedReadNodule", NS):
            mask = np.zeros(g.shape_zyx, bool)
            for roi in nod.findall("n:roi", NS):
                z = float(roi.find("n:imageZposition", NS).text)
                k = int(np.argmin(abs(zs - z)))
                if abs(zs[k] - z) > 0.5 * g.spacing_xyz_mm[2]:
                    continue
                xy = np.array([[int(e.find("n:xCoord", NS).text), int(e.find("n:yCoord", NS).text)]
                               for e in roi.findall("n:edgeMap", NS)])
                sl = np.zeros(g.shape_zyx[1:], bool)
                rr, cc = polygon(xy[:, 1], xy[:, 0], sl.shape)
                sl[rr, cc] = True
                sl[xy[:, 1], xy[:, 0]] = not interior
                if roi.find("n:inclusion", NS).text.strip().upper() == "TRUE":
                    mask[k] |= sl
                else:
                    mask[k] &= ~sl
            if mask.sum() > 20 and np.linalg.norm(
                    g.voxel_zyx_to_world(np.argwhere(mask).mean(0)).ravel() - np.asarray(centre)) < 15:
                out.append(mask)
    return out


@pytest.fixture(scope="module")
def slab(shared_dir):
    from pipeline.io.scans import read_scan

    folders = sorted((shared_dir / "data" / "real_ct" / "LIDC-IDRI-0003").glob("*"))
    xml = shared_dir / "data" / "real_ct" / "readings" / "LIDC-IDRI-0003.xml"
    if not folders or not xml.is_file():
        pytest.skip("LIDC-IDRI-0003 slab or its readings not in ../shared")
    return read_scan(folders[0]), xml, folders[0]


def test_measure_at_the_luna16_centre_against_the_readers(slab):
    scan, xml, folder = slab
    readers = [measure_mask(m, scan.array_zyx, scan.geometry.spacing_zyx_mm)
               for m in reader_masks(scan, xml, CENTRE_XYZ_MM)]
    assert len(readers) == 4
    vols = [r["volume_mm3"] for r in readers]
    longs = [r["long_axis_mm"] for r in readers]
    proc = subprocess.run([sys.executable, "-m", "pipeline", "measure", str(folder), "--at",
                           ",".join(map(str, CENTRE_XYZ_MM))], capture_output=True, text=True, encoding="utf-8", errors="replace", cwd=REPO,
                          check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import io

    import pandas as pd

    got = pd.read_csv(io.StringIO(proc.stdout)).iloc[0]
    assert min(vols) <= got["volume_mm3"] <= max(vols), (got["volume_mm3"], vols)
    assert abs(got["long_axis_mm"] - np.mean(longs)) <= 0.2 * np.mean(longs), (got["long_axis_mm"], longs)
    assert got["type"] == "solid" and got["side"] == "L" and got["image_number"] > 0
    assert "research aids" in proc.stderr
