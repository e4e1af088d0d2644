"""Patch cutting: centre voxel, air padding, plane modes, mm-correct planes on anisotropic grids."""
import numpy as np
import pytest

from pipeline.patches.extract import cube_shape_zyx, extract_cube, extract_planes


@pytest.fixture
def vol():
    rng = np.random.default_rng(0)
    return rng.integers(-900, 300, size=(30, 40, 50)).astype(np.int16)


def test_cube_centre_and_air_padding(vol):
    size = cube_shape_zyx(48, (1.0, 1.0, 1.0))
    assert size == (48, 48, 48)
    c = (15, 20, 25)
    cube = extract_cube(vol, c, size)
    assert cube[24, 24, 24] == vol[c]
    np.testing.assert_array_equal(cube[9:39, 4:44, :], vol[:, :, 1:49])
    assert (cube[:9] == -1000).all() and (cube[39:] == -1000).all() and (cube[:, :4] == -1000).all()
    corner = extract_cube(vol, (0, 0, 0), (8, 8, 8))
    assert corner[4, 4, 4] == vol[0, 0, 0]
    assert (corner[:4] == -1000).all() and (corner[:, :4] == -1000).all() and (corner[:, :, :4] == -1000).all()
    far = extract_cube(vol, (500, 0, 0), (8, 8, 8))
    assert (far == -1000).all()


@pytest.mark.parametrize("mode", ["axial", "orthogonal", "adjacent"])
def test_plane_centre_pixel_is_the_voxel(vol, mode):
    c = (15, 20, 25)
    p = extract_planes(vol, c, (1.0, 1.0, 1.0), 48, 64, mode)
    assert p.shape == (3, 64, 64) and p.dtype == np.int16
    if mode == "adjacent":
        assert [p[i, 32, 32] for i in range(3)] == [vol[14, 20, 25], vol[c], vol[16, 20, 25]]
    else:
        assert (p[:, 32, 32] == vol[c]).all()
    if mode == "axial":
        assert (p[0] == p[1]).all() and (p[1] == p[2]).all()
    edge = extract_planes(vol, (0, 0, 0), (1.0, 1.0, 1.0), 48, 64, mode)
    assert (edge[1 if mode == "adjacent" else 0, :20, :20] == -1000).all()  # beyond the y/x border


def test_planes_respect_mm_on_anisotropic_grid():
    """Volume value = 10 * z_mm: a coronal/sagittal plane row r must read 10 * (its z in mm)."""
    spacing_zyx = (2.5, 0.7, 0.7)
    z_mm = np.arange(40) * spacing_zyx[0]
    vol = np.broadcast_to((10 * z_mm)[:, None, None], (40, 80, 80)).astype(np.int16).copy()
    c = (20, 40, 40)
    p = extract_planes(vol, c, spacing_zyx, 48, 64, "orthogonal")
    rows_mm = (np.arange(64) - 32) * 48 / 64
    expect = np.rint(10 * (c[0] * 2.5 + rows_mm))
    np.testing.assert_allclose(p[1][:, 32], expect, atol=1)  # coronal: rows are z
    np.testing.assert_allclose(p[2][:, 32], expect, atol=1)  # sagittal
    assert (p[0] == vol[c]).all()  # axial plane at constant z
    assert cube_shape_zyx(48, spacing_zyx) == (19, 69, 69)
