"""The map as evidence for the ground classes (`fusion.map_prior`).

nuScenes ships a semantic prior with every log (maps/*.png, read by nuscenes-devkit's MapMask): the driveable
area and the pedestrian walkways, rasterised at 0.1 m in global x, y and "somewhat dilated". A LiDAR point of
the ground off the prior is not driveable surface or sidewalk, and one on it is not terrain, whatever a distant
camera called it: the 2D labeller mixes the ground classes most (BENCHMARKS.md, issue 20). So the votes of the
ground classes the map rules out are scaled by 1 - `map_prior` before the point is named; votes of the other
classes are left alone (a car on the road is a car). Other flat ground is never ruled out: in nuScenes's
lidarseg it holds traffic islands, medians and delimiters, which lie inside the driveable area (the synthetic
world's medians do too). Points outside the raster get no prior.
"""

from __future__ import annotations

import numpy as np
import torch

from occnet.classes import MAP_PRIOR_CLASS_IDS, class_id

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
