"""The map as evidence for the ground classes (`fusion.map_prior`).

nuScenes ships a semantic prior with every log (maps/*.png, read by nuscenes-devkit's MapMask): the driveable
area and the pedestrian walkways, rasterised at 0.1 m in global x, y and "somewhat dilated". A LiDAR point of
the ground off the prior is not driveable surface or sidewalk, and one on it is not terrain, whatever a distant
camera called it: the 2D labeller mixes the ground classes most (BENCHMARKS.md, issue 20). So the votes of the
ground classes the map rules out are scaled by 1 - `map_prior` before the point is named; votes of the other
classes are left alone (a car on the road is a car). Other flat ground is never ruled out: in nuScenes's
lidarseg it holds traffic islands, medians and delimiters, which lie inside the driveable area (the synthetic
world's medians do too). Points outside the raster get no prior.

The votes are only scaled, so a point every view misnamed keeps its name; `rename_ruled_out_ground` then renames
the flat-ground voxels of the fused labels whose class the map rules out for certain (`fusion.map_ground`): off
the prior, driveable surface and sidewalk; on it, terrain, but only `fusion.map_margin` inside its edge, since the
prior is dilated by an unpublished margin and true terrain lies in that band. Each takes the allowed ground class
most frequent among the flat-ground voxels around it, and keeps its name where none is near.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import binary_erosion

from kernels.grid import GridSpec
from occnet.classes import FLAT_CLASS_IDS, MAP_PRIOR_CLASS_IDS, class_id

from .rules import most_frequent

ON, OFF, UNKNOWN = 1, 0, -1
RULED_OUT_ON = (class_id("terrain"),)  # the ground classes a point on the prior cannot be
RULED_OUT_OFF = MAP_PRIOR_CLASS_IDS  # ... and off it: driveable surface, sidewalk


def map_side(mask, xy: np.ndarray) -> np.ndarray:
    """(P,) int8: ON where global points xy (P, 2) fall on the prior `mask` (a nuscenes-devkit MapMask), OFF where
    off it, UNKNOWN outside its raster."""
    px, py = mask.to_pixel_coords(xy[:, 0], xy[:, 1])
    raster = mask.mask()
    inside = (px >= 0) & (px < raster.shape[1]) & (py >= 0) & (py < raster.shape[0])
    side = np.full(len(xy), UNKNOWN, np.int8)
    side[inside] = raster[py[inside], px[inside]] == mask.foreground
    return side


def apply_map_prior(votes: torch.Tensor, side: torch.Tensor, weight: float) -> torch.Tensor:
    """Votes (P, 17) with the ground classes each point's `side` (P,) int8 rules out scaled by 1 - weight."""
    scale = torch.ones(3, votes.shape[1], dtype=votes.dtype, device=votes.device)  # rows: OFF, ON, UNKNOWN
    scale[OFF, list(RULED_OUT_OFF)] = 1 - weight
    scale[ON, list(RULED_OUT_ON)] = 1 - weight
    return votes * scale[side.long()]


def cell_sides(mask, ego2global: np.ndarray, grid: GridSpec) -> np.ndarray:
    """(X, Y) int8: where the centre of each bird's-eye-view cell of the grid (in the ego frame `ego2global` (4, 4)
    places in the world) lies against the prior `mask`: ON, OFF or UNKNOWN (`map_side`)."""
    X, Y = grid.shape[:2]
    i, j = np.meshgrid(np.arange(X), np.arange(Y), indexing="ij")
    x = grid.range_min[0] + (i.ravel() + 0.5) * grid.voxel_size[0]
    y = grid.range_min[1] + (j.ravel() + 0.5) * grid.voxel_size[1]
    xy = np.stack([x, y], 1) @ ego2global[:2, :2].T + ego2global[:2, 3]
    return map_side(mask, xy).reshape(X, Y)


def rename_ruled_out_ground(sem: np.ndarray, cells: np.ndarray, grid: GridSpec, radius: int, margin: int) -> np.ndarray:
    """In place on flat (X*Y*Z,) semantics: flat-ground voxels of a class the map rules out in their cell
    (`cells` (X, Y) from `cell_sides`; terrain only at least `margin` cells inside the prior's edge) take the
    allowed flat-ground class most frequent among the voxels within `radius` cells in x and y and one layer in z
    (ties: the first of FLAT_CLASS_IDS); where none is there they keep theirs. Returns the (X*Y*Z,) mask of the
    renamed voxels."""
    vol = sem.reshape(grid.shape)
    named = vol.copy()  # the classes before any renaming name the neighbours
    inner_on = cells == ON
    if margin > 0:
        inner_on = binary_erosion(inner_on, np.ones((2 * margin + 1,) * 2, bool), border_value=1)
    changed = np.zeros(grid.shape, bool)
    for where, ruled_out in ((cells == OFF, RULED_OUT_OFF), (inner_on, RULED_OUT_ON)):
        wrong = where[:, :, None] & np.isin(named, ruled_out)
        if not wrong.any():
            continue
        best, near = most_frequent(named, [c for c in FLAT_CLASS_IDS if c not in ruled_out], radius)
        rename = wrong & near
        changed |= rename
        vol[rename] = best[rename]
    return changed.reshape(-1)
