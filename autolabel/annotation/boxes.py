"""3D boxes in nuScenes ``sample_annotation`` form: validation, the annotated keyframe's ego frame, and
which points and voxels they hold.

A delivered box is a JSON object with ``translation`` [x, y, z] (the box centre, global frame, metres),
``size`` [w, l, h] (metres, > 0), ``rotation`` [w, x, y, z] (a unit quaternion, global frame: the box's x
axis is its length) and ``category_name`` (a nuScenes category with an Occ3D class in the lidarseg
provider's table); ``token``, ``instance_token``, ``sample_token`` and anything else a sample_annotation
record holds may come along (a ``sample_token`` must then be the frame's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pyquaternion import Quaternion

from kernels.grid import GridSpec
from occnet.classes import IGNORE_ID

from ..supervision.providers import LIDARSEG_TO_OCC3D

QUATERNION_TOLERANCE = 0.01  # | |q| - 1 | allowed (JSON rounding); the quaternion is normalised


class BoxError(ValueError):
    """A malformed box; the message names the box and the field."""


@dataclass(frozen=True)
class Box3D:
    """A box in some metric frame: centre (3,), size (w, l, h), rotation (3, 3) box -> frame, Occ3D class."""

    center: np.ndarray
    wlh: np.ndarray
    rotation: np.ndarray
    cls: int
    category: str

    def transformed(self, T: np.ndarray) -> "Box3D":
        """The box in another frame (T: (4, 4) this frame -> the other)."""
        return Box3D(T[:3, :3] @ self.center + T[:3, 3], self.wlh, T[:3, :3] @ self.rotation, self.cls, self.category)

    def local(self, points: np.ndarray) -> np.ndarray:
        """(P, 3) points in the box frame (x along the length, y the width, z up; origin at the centre)."""
        return (points - self.center) @ self.rotation

    def contains(self, points: np.ndarray, above_bottom: float = 0.0) -> np.ndarray:
        """(P,) bool: inside the box, leaving out its lowest `above_bottom` metres (the ground it stands on)."""
        q = self.local(points)
        width, length, height = self.wlh
        return (
            (np.abs(q[:, 0]) <= length / 2)
            & (np.abs(q[:, 1]) <= width / 2)
            & (q[:, 2] <= height / 2)
            & (q[:, 2] >= -height / 2 + above_bottom)
        )

    def corners(self) -> np.ndarray:
        width, length, height = self.wlh
        s = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], np.float64) / 2
        return (s * [length, width, height]) @ self.rotation.T + self.center


def parse_box(record, i: int, sample_token: str | None = None) -> Box3D:
    """A validated Box3D (global frame) from one sample_annotation-form record; BoxError naming box i."""
    where = f"box {i}"
    if not isinstance(record, dict):
        raise BoxError(
            f"{where} is a {type(record).__name__}, not an object with translation, size, rotation, category_name"
        )
    for key, n in (("translation", 3), ("size", 3), ("rotation", 4)):
        v = record.get(key)
        if v is None:
            raise BoxError(f"{where}: field '{key}' is missing")
        if (
            not isinstance(v, list)
            or len(v) != n
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            or not all(math.isfinite(x) for x in v)
        ):
            raise BoxError(f"{where}: field '{key}' must be a list of {n} finite numbers, got {v!r}")
    if min(record["size"]) <= 0:
        raise BoxError(f"{where}: field 'size' (w, l, h) must be > 0, got {record['size']}")
    norm = math.sqrt(sum(x * x for x in record["rotation"]))
    if abs(norm - 1) > QUATERNION_TOLERANCE:
        raise BoxError(
            f"{where}: field 'rotation' must be a unit quaternion [w, x, y, z], got {record['rotation']} "
            f"(norm {norm:.4f})"
        )
    name = record.get("category_name")
    if not isinstance(name, str):
        raise BoxError(f"{where}: field 'category_name' is missing (a nuScenes category such as vehicle.car)")
    cls = LIDARSEG_TO_OCC3D.get(name)
    if cls is None or cls == IGNORE_ID:
        known = sorted(k for k, v in LIDARSEG_TO_OCC3D.items() if v != IGNORE_ID)
        raise BoxError(f"{where}: category_name {name!r} has no Occ3D class; one of {', '.join(known)}")
    if sample_token is not None and "sample_token" in record and record["sample_token"] != sample_token:
        raise BoxError(f"{where}: sample_token {record['sample_token']!r} is not this frame's ({sample_token})")
    q = Quaternion(np.asarray(record["rotation"], np.float64) / norm)
    return Box3D(
        np.asarray(record["translation"], np.float64),
        np.asarray(record["size"], np.float64),
        q.rotation_matrix,
        int(cls),
        name,
    )


def box_voxels(boxes: list[Box3D], grid: GridSpec, above_bottom: float) -> tuple[np.ndarray, np.ndarray]:
    """Voxels whose centre lies inside a box (boxes in the grid's frame), leaving out the box's lowest
    `above_bottom` metres: ((X, Y, Z) uint8 class, 255 outside every box; (X, Y, Z) int32 index of the box,
    -1 outside). Where boxes overlap, the smaller box wins (a rider's box inside a vehicle's)."""
    cls = np.full(grid.shape, IGNORE_ID, np.uint8)
    which = np.full(grid.shape, -1, np.int32)
    lo = np.asarray(grid.range_min)
    vs = np.asarray(grid.voxel_size)
    order = sorted(range(len(boxes)), key=lambda b: -float(np.prod(boxes[b].wlh)))  # large first, small overwrite
    for b in order:
        box = boxes[b]
        c = box.corners()
        i0 = np.maximum(np.floor((c.min(0) - lo) / vs).astype(int), 0)
        i1 = np.minimum(np.floor((c.max(0) - lo) / vs).astype(int) + 1, grid.shape)
        if (i1 <= i0).any():
            continue
        axes = [lo[k] + (np.arange(i0[k], i1[k]) + 0.5) * vs[k] for k in range(3)]
        centres = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        inside = box.contains(centres, above_bottom).reshape(*(i1 - i0))
        sl = tuple(slice(a, e) for a, e in zip(i0, i1))
        cls[sl] = np.where(inside, box.cls, cls[sl])
        which[sl] = np.where(inside, b, which[sl])
    return cls, which
