"""The fast lung mask (pipeline.preprocess.lungmask + fastmorph) gives the SAME voxels as the
reference implementation (skimage convex_hull_image per slice + distance_transform_edt
dilation, kept in pipeline.preprocess.lungmask_reference): synthetic scans (flipped directions,
anisotropic spacing), the phantom, random shapes, and the real LIDC slabs."""
from pathlib import Path

import numpy as np
import pytest
from phantom_data import make_phantom
from scipy import ndimage as ndi

from pipeline.io.scans import Scan, read_scan
from pipeline.preprocess import PreprocessConfig, preprocess_scan
from pipeline.preprocess.fastmorph import dilate_ball, hull_or_fill
from pipeline.preprocess.lungmask import dilate_mm, lung_mask
from pipeline.preprocess.lungmask_reference import (
    _slice_fill,
    dilate_mm_reference,
    lung_mask_reference,
)

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real_ct"


def _reference_of(pre, cfg: PreprocessConfig) -> np.ndarray:
    return lung_mask_reference(pre.array_zyx, pre.geometry.spacing_zyx_mm, threshold_hu=cfg.lung_threshold_hu,
                               dilate_radius_mm=cfg.lung_dilate_mm, min_lung_ml=cfg.min_lung_ml,
                               hull_ratio=cfg.lung_hull_ratio)


SYNTH_CASES = [  # seed, direction, source spacing (x, y, z), PreprocessConfig overrides
    (3, np.diag([1.0, 1.0, -1.0]), (0.8, 0.8, 2.0), {}),
    (5, None, (0.7, 0.7, 1.25), {}),
    (7, np.diag([-1.0, -1.0, 1.0]), (0.9, 0.9, 2.5), {"spacing_xyz_mm": (0.8, 0.8, 2.0)}),
    (11, np.diag([1.0, -1.0, -1.0]), (0.75, 0.75, 1.0), {"spacing_xyz_mm": (1.5, 1.5, 1.0),
                                                         "lung_dilate_mm": 3.5}),
    (13, None, (0.8, 0.8, 2.0), {"lung_hull_ratio": 0.0}),
    (17, None, (0.8, 0.8, 2.0), {"lung_hull_ratio": 1.1, "lung_dilate_mm": 0.0}),
]


@pytest.mark.parametrize("case", range(len(SYNTH_CASES)))
def test_fast_mask_equals_reference_on_synthetic_scans(case):
    synth = pytest.importorskip("pipeline.synth")
    from pipeline.config import from_dict

    seed, direction, spacing, over = SYNTH_CASES[case]
    cfg_s = from_dict(synth.SynthConfig, {"fov_mm": [150.0, 150.0, 60.0]}, "synth")
    s = synth.make_scan(f"1.2.3.{seed}", seed, cfg_s, spacing_xyz_mm=spacing, direction=direction)
    cfg = PreprocessConfig(**over)
    pre = preprocess_scan(Scan(s.array_zyx, s.geometry, "s", "s"), cfg)
    ref = _reference_of(pre, cfg)
    assert pre.lung_zyx.dtype == ref.dtype == np.uint8
    assert pre.lung_zyx.sum() > 0
    assert np.array_equal(pre.lung_zyx, ref), int((pre.lung_zyx != ref).sum())


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 0.9, 2.5)])
def test_fast_mask_equals_reference_on_phantom(spacing):
    arr, _, g = make_phantom(direction=np.diag([-1.0, 1.0, -1.0]))
    cfg = PreprocessConfig(spacing_xyz_mm=spacing)
    pre = preprocess_scan(Scan(arr, g, "p", "p"), cfg)
    assert np.array_equal(pre.lung_zyx, _reference_of(pre, cfg))


@pytest.mark.parametrize("name", ["LIDC-IDRI-0002", "LIDC-IDRI-0003"])
def test_fast_mask_equals_reference_on_real_slabs(name):
    folders = sorted((REAL / name).glob("*")) if (REAL / name).is_dir() else []
    if not folders:
        pytest.skip(f"{REAL / name} absent (../shared is not on this machine)")
    scan = read_scan(folders[0])
    cfg = PreprocessConfig()
    pre = preprocess_scan(scan, cfg)
    ref = _reference_of(pre, cfg)
    assert ref.sum() > 50_000  # both lungs of a real slab
    assert np.array_equal(pre.lung_zyx, ref), int((pre.lung_zyx != ref).sum())


def _blobs(rng, shape, n):
    """Random union of ellipses / noise: concave shapes, holes, gaps, one-pixel lines."""
    img = np.zeros(shape, bool)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(n):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        ry, rx = rng.uniform(1, shape[0] / 3), rng.uniform(0.5, shape[1] / 3)
        img |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    img ^= rng.random(shape) < 0.03  # holes and specks
    return img


def test_hull_or_fill_equals_convex_hull_image_per_slice():
    rng = np.random.default_rng(0)
    for ratio in (1.5, 1.05, 3.0, 0.0):
        comp = np.stack([_blobs(rng, (37, 45), int(rng.integers(1, 4))) for _ in range(25)])
        comp[3] = False
        comp[4] = False
        comp[4, 10, 5:30] = True  # a one-pixel line (collinear centres)
        comp[5] = False
        comp[5, 7, 7] = comp[5, 8, 8] = True  # fewer than 3 pixels
        ref = np.stack([_slice_fill(sl, ratio) if sl.any() else sl for sl in comp])
        assert np.array_equal(hull_or_fill(comp, ratio), ref), ratio


def test_hull_equals_convex_hull_image_on_sparse_and_thin_slices():
    """Point sets where few pixels are hull vertices and many are not (the pre-Qhull filter):
    scattered specks, diagonal and staircase lines, single pixels per row, L and V shapes."""
    rng = np.random.default_rng(1)
    sl = []
    for i in range(120):
        img = np.zeros((31, 29), bool)
        kind = i % 4
        if kind == 0:
            img[rng.random(img.shape) < rng.uniform(0.02, 0.2)] = True
        elif kind == 1:  # one pixel per row: a staircase / diagonal with jitter
            xs = np.clip(np.cumsum(rng.integers(-2, 3, 31)) + 14, 0, 28)
            img[np.arange(31), xs] = True
        elif kind == 2:  # an L or V of lines
            a, b = rng.integers(0, 29, 2)
            img[:, a] = True
            img[rng.integers(0, 31), :] = True
            img[np.arange(31), np.clip(np.arange(31) + b - 15, 0, 28)] = True
        else:  # rows of random extent (left/right extremes vary both ways)
            for y in rng.choice(31, int(rng.integers(3, 20)), replace=False):
                x0 = int(rng.integers(0, 28))
                img[y, x0:int(rng.integers(x0 + 1, 29))] = True
        sl.append(img)
    comp = np.stack(sl)
    ref = np.stack([_slice_fill(s, 1e9) if s.any() else s for s in comp])
    assert np.array_equal(hull_or_fill(comp, 1e9), ref)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.7), (1.25, 0.8, 0.6), (0.5, 1.5, 1.0)])
@pytest.mark.parametrize("radius", [0.9, 2.0, 3.0, 5.0])
def test_ball_dilation_equals_edt(spacing, radius):
    rng = np.random.default_rng(int(radius * 10))
    m = rng.random((23, 31, 29)) < 0.002
    m[0, 0, 0] = m[-1, 5, -1] = True  # at the array's faces
    ref = ndi.distance_transform_edt(~m, sampling=spacing) <= radius
    assert np.array_equal(dilate_ball(m, radius, spacing), ref)
    assert np.array_equal(dilate_mm(m, radius, spacing), dilate_mm_reference(m, radius, spacing))


def test_fast_mask_errors_like_reference():
    arr = np.full((10, 40, 40), 40, np.int16)
    for f in (lung_mask, lung_mask_reference):
        with pytest.raises(Exception) as e:
            f(arr, (1.0, 1.0, 1.0), path="x.mhd")
        assert "x.mhd: no lungs found" in str(e.value)


@pytest.mark.parametrize("direction", [None, np.diag([-1.0, 1.0, -1.0])])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 0.9, 2.5)])
def test_int16_window_and_resample_equal_the_float32_path(direction, spacing):
    """int16 scans are clipped in int16 and resampled without a float32 copy: same voxels as
    the float32 path (window_hu, then linear resampling of the float32 volume)."""
    from pipeline.preprocess.intensity import window_hu
    from pipeline.preprocess.resample import resample, target_geometry

    arr, _, g = make_phantom(direction=direction, noise_hu=40.0)
    arr[0, :5, :5] = -3024  # scanner padding below the window
    arr[-1, -5:, -5:] = 3000
    cfg = PreprocessConfig(spacing_xyz_mm=spacing)
    pre = preprocess_scan(Scan(arr, g, "p", "p"), cfg)
    target = target_geometry(g, spacing)
    w32 = window_hu(arr, cfg.window_hu)
    assert w32.dtype == np.float32
    old = np.rint(resample(w32, g, target, fill_value=cfg.window_hu[0])).astype(np.int16)
    assert np.array_equal(pre.array_zyx, old)
    # float input (no int16 fast path) gives the same voxels too
    pre_f = preprocess_scan(Scan(arr.astype(np.float32), g, "p", "p"), cfg)
    assert np.array_equal(pre_f.array_zyx, old) and np.array_equal(pre_f.lung_zyx, pre.lung_zyx)


def test_label_6_numbers_components_like_scipy():
    """The component numbering decides ties between equal-sized components: it must be
    scipy.ndimage.label's (raster order of first voxel, 6-connectivity)."""
    from pipeline.preprocess.lungmask import label_6

    rng = np.random.default_rng(1)
    for p in (0.2, 0.3, 0.45, 0.6):
        a = rng.random((17, 29, 41)) < p
        ref, n_ref = ndi.label(a)
        lab, _img, n = label_6(a)
        assert n == n_ref and np.array_equal(lab, ref)
    lab, _img, n = label_6(np.zeros((3, 4, 5), bool))
    assert n == 0 and not lab.any()


def test_only_outside_air_is_no_lungs_even_with_min_lung_ml_zero():
    """Air only around the body (touching the in-plane faces): a clear error, also when
    min_lung_ml is 0 (no component is inside the body, so nothing may be kept)."""
    arr = np.full((10, 40, 40), 40, np.int16)
    arr[:, :, :5] = -1000  # outside air along one face
    with pytest.raises(Exception) as e:
        lung_mask(arr, (1.0, 1.0, 1.0), min_lung_ml=0.0, path="x.mhd")
    assert "x.mhd: no lungs found" in str(e.value)
