"""World (x,y,z mm) <-> voxel (z,y,x) conversion against SimpleITK's own transforms."""
import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.io.geometry import Geometry


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))[None, :]
    return q


def _sitk_image(geometry: Geometry):
    nz, ny, nx = geometry.shape_zyx
    img = sitk.Image(nx, ny, nz, sitk.sitkInt16)
    return geometry.apply_to_sitk(img)


@pytest.mark.parametrize("seed", range(25))
def test_world_to_voxel_matches_sitk(seed):
    rng = np.random.default_rng(seed)
    direction = _random_rotation(rng)
    if seed % 3 == 0:  # also pure axis flips / permutations like real scans
        direction = np.diag(rng.choice([-1.0, 1.0], size=3))[:, rng.permutation(3)]
    geom = Geometry(
        origin_xyz_mm=rng.uniform(-300, 300, 3),
        spacing_xyz_mm=rng.uniform(0.3, 3.0, 3),
        direction=direction,
        shape_zyx=tuple(rng.integers(5, 60, 3)),
    )
    img = _sitk_image(geom)
    pts = rng.uniform(-400, 400, size=(20, 3))
    ours = geom.world_to_voxel_zyx(pts)
    ref = np.array([img.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in pts])[:, ::-1]
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    # and back: voxel -> world equals SimpleITK's index -> point
    idx_zyx = rng.integers(0, 5, size=(20, 3))
    ours_w = geom.voxel_zyx_to_world(idx_zyx)
    ref_w = np.array([img.TransformIndexToPhysicalPoint(tuple(int(v) for v in i[::-1])) for i in idx_zyx])
    np.testing.assert_allclose(ours_w, ref_w, atol=1e-6)
    # round trip
    np.testing.assert_allclose(geom.voxel_zyx_to_world(geom.world_to_voxel_zyx(pts)), pts, atol=1e-8)
    # nearest voxel agrees with sitk's TransformPhysicalPointToIndex (rounds half away) away from .5 ties
    near = geom.world_to_nearest_voxel_zyx(pts)
    ref_i = np.array([img.TransformPhysicalPointToIndex(tuple(p)) for p in pts])[:, ::-1]
    frac = np.abs(ours - np.floor(ours) - 0.5)
    ok = np.all(frac > 1e-6, axis=1)
    np.testing.assert_array_equal(near[ok], ref_i[ok])


def test_single_point_shapes_and_from_sitk():
    img = sitk.Image(10, 20, 30, sitk.sitkInt16)
    img.SetOrigin((1.0, 2.0, -3.0))
    img.SetSpacing((0.5, 0.7, 2.5))
    img.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    g = Geometry.from_sitk(img)
    assert g.shape_zyx == (30, 20, 10)
    assert g.spacing_zyx_mm == (2.5, 0.7, 0.5)
    v = g.world_to_voxel_zyx((0.0, 2.0, -3.0))
    assert v.shape == (3,)
    np.testing.assert_allclose(v, (0, 0, 2.0))  # x flipped: world x = 1 - 0.5 * i
    assert g.contains_world((0.0, 2.0, -3.0)) is True
    assert g.contains_world((5.0, 2.0, -3.0)) is False
    assert Geometry.from_dict(g.to_dict()) == g


def test_invalid_geometry_rejected():
    with pytest.raises(ValueError, match="spacing"):
        Geometry((0, 0, 0), (1, 0, 1), shape_zyx=(1, 1, 1))
    with pytest.raises(ValueError, match="orthonormal"):
        Geometry((0, 0, 0), (1, 1, 1), direction=np.ones((3, 3)), shape_zyx=(1, 1, 1))
    with pytest.raises(ValueError, match="shape"):
        Geometry((0, 0, 0), (1, 1, 1), shape_zyx=(1, 1, 1)).world_to_voxel_zyx([1, 2])
