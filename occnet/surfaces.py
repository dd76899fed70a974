"""Where a ray meets the Occ3D occupancy grid when its LiDAR return lies on flat ground.

Occ3D marks a voxel occupied when any part of it is solid, so flat ground fills the whole voxel layer that
holds its surface. A camera ray meets the ground at a grazing angle and enters that layer well before the
return: from a camera 1.6 m high, a return 20 m away lies 0.2 m under the layer top when the surface sits
mid-layer, and the ray enters the layer 2.5 m earlier. The occupancy grid therefore stops the ray at the
layer's top, not at the return. Rendering targets and LiDAR free-space carving that use the return instead
teach the network a half-transparent ground and call occupied ground voxels free (measured in issue 10).
"""

from __future__ import annotations

import torch

from kernels.grid import GridSpec

from .classes import FLAT_CLASS_IDS


def is_flat(semantics: torch.Tensor) -> torch.Tensor:
    """Bool mask, same shape as `semantics` (class ids, 255 unknown): the label is a ground class."""
    flat = torch.zeros_like(semantics, dtype=torch.bool)
    for c in FLAT_CLASS_IDS:
        flat |= semantics == c
    return flat


def layer_entry(
    origins: torch.Tensor, dirs: torch.Tensor, dist: torch.Tensor, flat: torch.Tensor, grid: GridSpec
) -> torch.Tensor:
    """(R,) distance along each ray at which it enters the horizontal voxel layer holding its return.

    origins (R, 3) or (3,), unit dirs (R, 3), dist (R,) distance to the return, flat (R,) bool (the return
    lies on flat ground), all in the grid's metric frame. Only flat returns of rays that descend into their
    layer from above move (to the layer's top plane); every other ray keeps `dist`, as does a ray that
    starts inside the layer or whose return lies outside the grid's height range.
    """
    z0, vz = float(grid.range_min[2]), float(grid.voxel_size[2])
    oz = origins[..., 2].expand_as(dist).to(dist.dtype)
    dz = dirs[:, 2].to(dist.dtype)
    z_hit = oz + dz * dist
    layer = torch.floor((z_hit - z0) / vz)
    top = z0 + (layer + 1) * vz
    down = dz < 0
    t_top = (top - oz) / torch.where(down, dz, -torch.ones_like(dz))  # dz < 0 where used
    inside = (layer >= 0) & (layer < grid.shape[2])
    use = flat & down & inside & (t_top > 0) & (t_top < dist)
    return torch.where(use, t_top, dist)
