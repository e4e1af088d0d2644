"""THE place where world coordinates and voxel indices are converted.

Conventions (used everywhere in the package):

* World points are ``(x, y, z)`` in millimetres, in the LPS patient frame used by
  DICOM, ITK/SimpleITK and the LUNA16 CSVs (``coordX, coordY, coordZ``). Names end
  in ``_xyz_mm``.
* Arrays are indexed ``(z, y, x)`` (slice, row, column), as returned by
  ``SimpleITK.GetArrayFromImage``. Voxel indices and shapes are named ``*_zyx``.
* ``spacing_xyz_mm`` and ``origin_xyz_mm`` follow ITK's ``(x, y, z)`` order.
* ``direction`` is ITK's 3x3 direction cosine matrix (row-major as in
  ``Image.GetDirection()``): column ``j`` is the world direction of index axis ``j``
  in ``(x, y, z)`` index order.

The mapping (identical to ITK's) is::

    world_xyz_mm = origin_xyz_mm + direction @ (spacing_xyz_mm * index_xyz)

Integer indices are voxel centres; continuous indices are used for sub-voxel work.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _as_points(points: Any, name: str) -> tuple[np.ndarray, bool]:
    arr = np.asarray(points, dtype=np.float64)
    single = arr.ndim == 1
    arr = np.atleast_2d(arr)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name} must have shape (3,) or (N, 3), got {np.shape(points)}")
    return arr, single


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of a CT volume.

    Attributes:
        origin_xyz_mm: world position (x, y, z) mm of voxel index (0, 0, 0).
        spacing_xyz_mm: voxel size along index axes x, y, z in mm (all > 0).
        direction: 3x3 direction cosines; column j is the world direction of index axis j
            (x, y, z order). Identity for an axial LPS scan.
        shape_zyx: array shape (z, y, x) in voxels.
    """

    origin_xyz_mm: tuple[float, float, float]
    spacing_xyz_mm: tuple[float, float, float]
    direction: tuple[tuple[float, ...], ...] = field(
        default=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    )
    shape_zyx: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        origin = tuple(float(v) for v in np.asarray(self.origin_xyz_mm, dtype=float).ravel())
        spacing = tuple(float(v) for v in np.asarray(self.spacing_xyz_mm, dtype=float).ravel())
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        shape = tuple(int(v) for v in self.shape_zyx)
        if len(origin) != 3 or len(spacing) != 3 or len(shape) != 3:
            raise ValueError("origin_xyz_mm, spacing_xyz_mm and shape_zyx need 3 values each")
        if not all(np.isfinite(origin)) or not all(np.isfinite(spacing)):
            raise ValueError(f"non-finite origin {origin} or spacing {spacing}")
        if min(spacing) <= 0:
            raise ValueError(f"spacing_xyz_mm must be positive, got {spacing}")
        if abs(abs(np.linalg.det(direction)) - 1.0) > 1e-3:
            raise ValueError(f"direction is not orthonormal: {direction.tolist()}")
        object.__setattr__(self, "origin_xyz_mm", origin)
        object.__setattr__(self, "spacing_xyz_mm", spacing)
        object.__setattr__(self, "direction", tuple(tuple(r) for r in direction.tolist()))
        object.__setattr__(self, "shape_zyx", shape)

    # ----------------------------------------------------------------- matrices
    @property
    def direction_matrix(self) -> np.ndarray:
        """3x3 float array, column j = world direction of index axis j (x, y, z)."""
        return np.asarray(self.direction, dtype=np.float64)

    @property
    def index_to_world_matrix(self) -> np.ndarray:
        """3x3 matrix M with ``world = origin + M @ index_xyz``."""
        return self.direction_matrix * np.asarray(self.spacing_xyz_mm)[None, :]

    @property
    def spacing_zyx_mm(self) -> tuple[float, float, float]:
        """Spacing in array-axis order (z, y, x) mm."""
        sx, sy, sz = self.spacing_xyz_mm
        return (sz, sy, sx)

    @property
    def extent_xyz_mm(self) -> tuple[float, float, float]:
        """Physical size along index axes x, y, z in mm (voxels * spacing)."""
        nz, ny, nx = self.shape_zyx
        sx, sy, sz = self.spacing_xyz_mm
        return (nx * sx, ny * sy, nz * sz)

    @property
    def is_identity_direction(self) -> bool:
        return bool(np.allclose(self.direction_matrix, np.eye(3), atol=1e-6))

    # ------------------------------------------------------------- conversions
    def world_to_voxel_zyx(self, points_xyz_mm: Any) -> np.ndarray:
        """World (x, y, z) mm -> continuous voxel index (z, y, x).

        Accepts shape (3,) or (N, 3); returns float64 of the same shape.
        Matches ``Image.TransformPhysicalPointToContinuousIndex`` (reversed to zyx).
        """
        pts, single = _as_points(points_xyz_mm, "points_xyz_mm")
        rel = pts - np.asarray(self.origin_xyz_mm)[None, :]
        idx_xyz = np.linalg.solve(self.index_to_world_matrix, rel.T).T
        out = idx_xyz[:, ::-1]
        return out[0] if single else out

    def voxel_zyx_to_world(self, index_zyx: Any) -> np.ndarray:
        """Voxel index (z, y, x) (integer or continuous) -> world (x, y, z) mm."""
        idx, single = _as_points(index_zyx, "index_zyx")
        idx_xyz = idx[:, ::-1]
        world = np.asarray(self.origin_xyz_mm)[None, :] + idx_xyz @ self.index_to_world_matrix.T
        return world[0] if single else world

    def world_to_nearest_voxel_zyx(self, points_xyz_mm: Any) -> np.ndarray:
        """World (x, y, z) mm -> nearest integer voxel index (z, y, x), int64 (may be out of bounds)."""
        return np.rint(self.world_to_voxel_zyx(points_xyz_mm)).astype(np.int64)

    def contains_voxel_zyx(self, index_zyx: Any) -> np.ndarray | bool:
        """True where a (continuous) index (z, y, x) lies inside the grid (within half a voxel)."""
        idx, single = _as_points(index_zyx, "index_zyx")
        shape = np.asarray(self.shape_zyx, dtype=float)[None, :]
        inside = np.all((idx >= -0.5) & (idx <= shape - 0.5), axis=1)
        return bool(inside[0]) if single else inside

    def contains_world(self, points_xyz_mm: Any) -> np.ndarray | bool:
        """True where a world point (x, y, z) mm falls inside the volume."""
        return self.contains_voxel_zyx(self.world_to_voxel_zyx(points_xyz_mm))

    def world_vector_to_voxel_zyx(self, vectors_xyz_mm: Any) -> np.ndarray:
        """Convert displacement vectors (x, y, z) mm to index displacements (z, y, x)."""
        vec, single = _as_points(vectors_xyz_mm, "vectors_xyz_mm")
        out = np.linalg.solve(self.index_to_world_matrix, vec.T).T[:, ::-1]
        return out[0] if single else out

    def center_xyz_mm(self) -> np.ndarray:
        """World position (x, y, z) mm of the volume's central point."""
        return self.voxel_zyx_to_world((np.asarray(self.shape_zyx, dtype=float) - 1) / 2)

    # ------------------------------------------------------------ SimpleITK glue
    @classmethod
    def from_sitk(cls, image: Any) -> Geometry:
        """Geometry of a 3D ``SimpleITK.Image``."""
        if image.GetDimension() != 3:
            raise ValueError(f"expected a 3D image, got {image.GetDimension()}D")
        nx, ny, nz = image.GetSize()
        return cls(
            origin_xyz_mm=image.GetOrigin(),
            spacing_xyz_mm=image.GetSpacing(),
            direction=np.asarray(image.GetDirection(), dtype=float).reshape(3, 3),
            shape_zyx=(nz, ny, nx),
        )

    def apply_to_sitk(self, image: Any) -> Any:
        """Set origin, spacing and direction of a SimpleITK image in place; returns it."""
        image.SetOrigin(self.origin_xyz_mm)
        image.SetSpacing(self.spacing_xyz_mm)
        image.SetDirection(tuple(self.direction_matrix.ravel().tolist()))
        return image

    def with_shape(self, shape_zyx: Sequence[int]) -> Geometry:
        return Geometry(self.origin_xyz_mm, self.spacing_xyz_mm, self.direction, tuple(shape_zyx))

    # --------------------------------------------------------------- JSON glue
    def to_dict(self) -> dict:
        return {
            "origin_xyz_mm": list(self.origin_xyz_mm),
            "spacing_xyz_mm": list(self.spacing_xyz_mm),
            "direction": [list(r) for r in self.direction],
            "shape_zyx": list(self.shape_zyx),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        return cls(
            origin_xyz_mm=d["origin_xyz_mm"],
            spacing_xyz_mm=d["spacing_xyz_mm"],
            direction=d["direction"],
            shape_zyx=d["shape_zyx"],
        )


def world_to_voxel_zyx(geometry: Geometry, points_xyz_mm: Any) -> np.ndarray:
    """Functional alias of :meth:`Geometry.world_to_voxel_zyx`."""
    return geometry.world_to_voxel_zyx(points_xyz_mm)


def voxel_zyx_to_world(geometry: Geometry, index_zyx: Any) -> np.ndarray:
    """Functional alias of :meth:`Geometry.voxel_zyx_to_world`."""
    return geometry.voxel_zyx_to_world(index_zyx)
