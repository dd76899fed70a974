"""The voxel grid: one definition of range, voxel size and shape, used by every package.

Occ3D-nuScenes is ``GridSpec()`` (range [-40, -40, -1, 40, 40, 5.4], 0.4 m voxels, shape
(200, 200, 16) indexed [x, y, z] in the ego frame: x forward, y left, z up, metres).
Nothing else in the project hard-codes 200, 16 or 0.4.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

Vec3 = tuple[float, float, float]


def _as_vec3(value: Any, field: str) -> Vec3:
    if isinstance(value, (int, float)):
        value = (value, value, value)
    try:
        out = tuple(float(v) for v in value)
    except TypeError as exc:
        raise ValueError(f"GridSpec.{field} must be a number or 3 numbers, got {value!r}") from exc
    if len(out) != 3:
        raise ValueError(f"GridSpec.{field} must have 3 values (x, y, z), got {len(out)}: {value!r}")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"GridSpec.{field} must be finite, got {value!r}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class GridSpec:
    """Axis-aligned voxel grid in the ego frame.

    Attributes:
        range_min: (x, y, z) metres of the grid's lower corner.
        range_max: (x, y, z) metres of the grid's upper corner.
        voxel_size: edge length per axis in metres (a number means the same on every axis).
    """

    range_min: Vec3 = (-40.0, -40.0, -1.0)
    range_max: Vec3 = (40.0, 40.0, 5.4)
    voxel_size: Vec3 = (0.4, 0.4, 0.4)

    def __post_init__(self) -> None:
        lo = _as_vec3(self.range_min, "range_min")
        hi = _as_vec3(self.range_max, "range_max")
        vs = _as_vec3(self.voxel_size, "voxel_size")
        object.__setattr__(self, "range_min", lo)
        object.__setattr__(self, "range_max", hi)
        object.__setattr__(self, "voxel_size", vs)
        for axis, a, b, v in zip("xyz", lo, hi, vs):
            if v <= 0:
                raise ValueError(f"GridSpec.voxel_size[{axis}] must be > 0, got {v}")
            if b <= a:
                raise ValueError(f"GridSpec.range_max[{axis}]={b} must exceed range_min[{axis}]={a}")
            n = (b - a) / v
            if abs(n - round(n)) > 1e-6 * max(1.0, n):
                raise ValueError(
                    f"GridSpec: the {axis} extent {b - a:g} m is not a whole number of "
                    f"{v:g} m voxels ({n:.4f}); change range_{axis} or voxel_size"
                )

    # ---- derived values -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """(X, Y, Z) voxel counts."""
        return tuple(int(round((b - a) / v)) for a, b, v in zip(self.range_min, self.range_max, self.voxel_size))  # type: ignore[return-value]

    @property
    def num_voxels(self) -> int:
        x, y, z = self.shape
        return x * y * z

    @property
    def extent(self) -> Vec3:
        return tuple(b - a for a, b in zip(self.range_min, self.range_max))  # type: ignore[return-value]

    # ---- conversions ----------------------------------------------------------------------
    def _consts(self, like: Any) -> tuple[Any, Any]:
        if isinstance(like, torch.Tensor):
            dt = like.dtype if like.is_floating_point() else torch.float32
            return (
                torch.tensor(self.range_min, dtype=dt, device=like.device),
                torch.tensor(self.voxel_size, dtype=dt, device=like.device),
            )
        return np.asarray(self.range_min, dtype=np.float64), np.asarray(self.voxel_size, dtype=np.float64)

    def world_to_grid(self, points: Any) -> Any:
        """Continuous voxel coordinates of metric points: voxel i spans [i, i + 1).

        points: (..., 3) metres (numpy array or torch tensor) -> (..., 3) same type.
        """
        lo, vs = self._consts(points)
        return (points - lo) / vs

    def world_to_index(self, points: Any) -> Any:
        """Integer voxel index (floor) of metric points: (..., 3) -> (..., 3) int64.

        Points outside the grid get indices outside [0, shape); use `contains_index` to filter.
        """
        g = self.world_to_grid(points)
        if isinstance(g, torch.Tensor):
            return torch.floor(g).long()
        return np.floor(g).astype(np.int64)

    def index_to_world(self, index: Any) -> Any:
        """Metric centre of voxels: (..., 3) integer indices -> (..., 3) metres."""
        lo, vs = self._consts(index if not isinstance(index, torch.Tensor) else index.float())
        return (index + 0.5) * vs + lo

    def contains_index(self, index: Any) -> Any:
        """(..., 3) integer indices -> (...,) bool, True where the voxel lies inside the grid."""
        shape = self.shape
        inside = (index[..., 0] >= 0) & (index[..., 0] < shape[0])
        inside &= (index[..., 1] >= 0) & (index[..., 1] < shape[1])
        inside &= (index[..., 2] >= 0) & (index[..., 2] < shape[2])
        return inside

    # ---- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GridSpec":
        unknown = set(data) - {"range_min", "range_max", "voxel_size"}
        if unknown:
            raise ValueError(f"GridSpec: unknown keys {sorted(unknown)}; allowed: range_min, range_max, voxel_size")
        return cls(**data)
