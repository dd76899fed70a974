"""What a point-label annotation of a frame costs, in the annotators' units: points to label and boxes to
draw, per frame and per BEV tile.

- points: the keyframe sweep's points (nuScenes-lidarseg labels every point of it); for a tile, the points
  whose BEV cell lies in the tile;
- boxes: the objects to box. Where the dataset already has ``sample_annotation`` boxes for the frame (nuScenes
  trainval, the synthetic world) their count (centre in the grid's BEV extent; per tile by centre) is what a
  vendor would be asked for; otherwise an estimate from the round's pseudo-labels: connected groups (26-
  neighbours) of voxels of object classes (vehicles, people, cyclists, barriers, cones, others) within
  mask_camera.
A frame's cost in points is points + box_points x boxes (`selection.box_points`: one box counts as that many
points of labelling effort).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from kernels.grid import GridSpec
from occnet.classes import class_id

from ..data.nuscenes import NuScenesFrames
from .accumulate import key_lidar, read_sweep, target_frame
from .deliver import bev_cells

# Occ3D orders the object classes first: ids 0 (others) to 10 (truck), the ones annotators draw boxes for
OBJECT_CLASS_IDS = tuple(range(class_id("truck") + 1))


@dataclass
class PointCost:
    points: int  # the keyframe sweep's points
    boxes: int  # boxes to draw (centre in the grid's BEV extent)
    boxes_from: str  # "dataset" (its sample_annotation count) or "estimate" (pseudo-label objects)
    tile_points: np.ndarray | None = None  # (T,) per BEV tile
    tile_boxes: np.ndarray | None = None  # (T,)

    def cost(self, box_points: float) -> float:
        return float(self.points + box_points * self.boxes)

    def tiles_cost(self, tiles: list[int]) -> tuple[int, int]:
        """(points, boxes) of a set of tiles."""
        return int(self.tile_points[tiles].sum()), int(self.tile_boxes[tiles].sum())


def estimated_objects(semantics: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(K, 3) voxel-index centres of the connected groups of object-class voxels within `mask`."""
    from scipy import ndimage

    obj = np.isin(semantics, OBJECT_CLASS_IDS) & mask.astype(bool)
    lab, n = ndimage.label(obj, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return np.zeros((0, 3))
    return np.asarray(ndimage.center_of_mass(obj, lab, range(1, n + 1)), np.float64).reshape(-1, 3)


def frame_cost(
    frames: NuScenesFrames,
    token: str,
    grid: GridSpec,
    cell_tiles: np.ndarray | None = None,
    labels: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
) -> PointCost:
    """Points and boxes of keyframe `token` (module docstring). cell_tiles (X, Y): the tile of every BEV cell
    (region selection) for per-tile counts; labels: returns the round's pseudo-labels (semantics, mask_camera)
    of the frame, read only for the box estimate where the dataset has no boxes."""
    global2target, t0 = target_frame(frames, token)
    own = read_sweep(frames, key_lidar(frames, token), global2target, t0, token, beams=False)
    anns = frames.nusc.get("sample", token)["anns"]
    if anns or labels is None:
        centres = np.array([frames.nusc.get("sample_annotation", a)["translation"] for a in anns], np.float64).reshape(
            -1, 3
        )
        cells, inside = bev_cells(centres @ global2target[:3, :3].T + global2target[:3, 3], grid)
        source = "dataset"
    else:
        centres = estimated_objects(*labels())
        cells = np.floor(centres[:, :2]).astype(np.int64)
        inside = np.ones(len(cells), bool)
        source = "estimate"
    out = PointCost(points=len(own.points), boxes=int(inside.sum()), boxes_from=source)
    if cell_tiles is not None:
        T = int(cell_tiles.max()) + 1
        p_cells, p_inside = bev_cells(own.points, grid)
        out.tile_points = np.bincount(cell_tiles[p_cells[p_inside, 0], p_cells[p_inside, 1]], minlength=T)
        out.tile_boxes = np.bincount(cell_tiles[cells[inside, 0], cells[inside, 1]], minlength=T)
    return out
