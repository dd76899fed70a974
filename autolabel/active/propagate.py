"""Manual labels carried to the other keyframes of their scene (`rounds.propagate`, issue 21).

An annotated keyframe labels the static world around it: the road, sidewalks, buildings and vegetation
stand where they are at every keyframe of the scene. Moved through the ego poses (the grid of keyframe B
-> global -> the grid of the annotated keyframe A), each voxel of B whose centre falls in a voxel A's
annotator labelled with a static class takes that class; `static_free` also carries A's free voxels. Things
that move (vehicles, people, cyclists: `DYNAMIC_CLASS_IDS`) and `others` are never carried: where they
stood at A says nothing about B. B gets a partial label (`mask_annotated`: the carried voxels), which
training treats as a region-level label: the 3D loss trusts those voxels and the teacher teaches the rest.

Several annotated keyframes in a scene: each voxel takes the nearest one in time that labels it.
Nothing is stored: `PropagatedLabels` computes a keyframe's label when training reads it (a round of
nuScenes trainval with 5% annotated would otherwise hold ~34,000 extra label volumes in memory).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Iterator

import numpy as np

from kernels.grid import GridSpec
from occnet.classes import DYNAMIC_CLASS_IDS, FREE_ID, OCC3D_CLASS_NAMES

from ..data.nuscenes import NuScenesFrames
from ..data.occ3d import Occ3DLabels
from .config import PROPAGATE_MODES

# classes a voxel may carry to another keyframe: not the movers, not `others` (generic objects, often movable)
NOT_CARRIED = (*DYNAMIC_CLASS_IDS, OCC3D_CLASS_NAMES.index("others"))


def carried_classes(free: bool) -> np.ndarray:
    """(256,) bool: which semantics values a voxel carries (255, unlabelled, never)."""
    table = np.zeros(256, bool)
    table[:FREE_ID] = True
    table[list(NOT_CARRIED)] = False
    table[FREE_ID] = free
    return table


def voxel_centres(grid: GridSpec) -> np.ndarray:
    """(X * Y * Z, 3) float32 voxel coordinates of the grid's voxel centres (i + 0.5, j + 0.5, k + 0.5), row-major."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1).reshape(-1, 3)
    return (idx + 0.5).astype(np.float32)


def grid_affine(source_pose: np.ndarray, target_pose: np.ndarray, grid: GridSpec) -> np.ndarray:
    """(3, 4): the target grid's continuous voxel coordinates -> the source grid's (poses: (4, 4) grid (ego) to
    global of each keyframe)."""
    lo, vs = np.asarray(grid.range_min, np.float64), np.asarray(grid.voxel_size, np.float64)
    to_metric = np.diag([*vs, 1.0])
    to_metric[:3, 3] = lo
    to_voxels = np.linalg.inv(to_metric)
    return (to_voxels @ np.linalg.inv(source_pose) @ target_pose @ to_metric)[:3]


def carry(
    source: Occ3DLabels,
    source_pose: np.ndarray,
    target_pose: np.ndarray,
    grid: GridSpec,
    carried: np.ndarray,
    centres: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The target keyframe's voxels labelled from one annotated keyframe.

    source: its manual labels (a region-level label carries only its annotated voxels); source_pose /
    target_pose: (4, 4) grid (ego) to global of each keyframe; carried: `carried_classes`; centres: the
    grid's `voxel_centres` (passed in to be reused). Each target voxel looks up the source voxel holding its
    centre (nearest neighbour: at a yaw change, boundaries move by up to half a voxel). Returns semantics
    (X, Y, Z) uint8 and the carried mask (X, Y, Z) bool (semantics are meaningful only where it is set)."""
    centres = voxel_centres(grid) if centres is None else centres
    m = grid_affine(source_pose, target_pose, grid).astype(np.float32)
    at = np.floor(centres @ m[:, :3].T + m[:, 3]).astype(np.int32)  # float32: 0.4 m voxels, grids of 200
    shape = np.asarray(grid.shape, np.int32)
    inside = ((at >= 0) & (at < shape)).all(1)
    flat = np.flatnonzero(inside)
    src = np.ravel_multi_index(tuple(at[flat].T), grid.shape)
    labelled = source.mask_camera.reshape(-1).astype(bool)
    if source.mask_annotated is not None:
        labelled &= source.mask_annotated.reshape(-1).astype(bool)
    sem = source.semantics.reshape(-1)[src]
    ok = labelled[src] & carried[sem]
    out = np.full(grid.num_voxels, FREE_ID, np.uint8)
    mask = np.zeros(grid.num_voxels, bool)
    out[flat[ok]] = sem[ok]
    mask[flat[ok]] = True
    return out.reshape(grid.shape), mask.reshape(grid.shape)


class PropagatedLabels(Mapping):
    """token -> 3D labels for training: a keyframe's own manual labels, or, for another keyframe of a scene
    with annotated keyframes, what they carry to it (`carry`, nearest annotated keyframe in time first; a
    partial label). A keyframe that nothing reaches has none (KeyError). Iterating or counting gives the
    annotated keyframes only: what was paid for."""

    def __init__(self, manual: Mapping[str, Occ3DLabels], frames: NuScenesFrames, grid: GridSpec, mode: str):
        if mode not in PROPAGATE_MODES[1:]:
            raise ValueError(f"PropagatedLabels: mode must be one of {PROPAGATE_MODES[1:]}, got {mode!r}")
        self.manual, self.frames, self.grid = manual, frames, grid
        self.carried = carried_classes(free=mode == "static_free")
        self._by_scene: dict[str, list[str]] = {}
        self._source_poses: dict[str, tuple[np.ndarray, int]] = {}  # read once, not per frame that reads them
        for token in manual:
            if token in frames:
                self._by_scene.setdefault(frames.scene_of(token), []).append(token)
                self._source_poses[token] = self._pose(token)
        self._centres: np.ndarray | None = None

    def _pose(self, token: str) -> tuple[np.ndarray, int]:
        lidar = self.frames.meta(token).lidar  # poses only, no file read
        return lidar.ego2global, lidar.timestamp

    def __getitem__(self, token: str) -> Occ3DLabels:
        if token in self.manual:
            return self.manual[token]
        sources = self._by_scene.get(self.frames.scene_of(token), []) if token in self.frames else []
        if not sources:
            raise KeyError(token)
        if self._centres is None:
            self._centres = voxel_centres(self.grid)
        pose, t = self._pose(token)
        sem = np.full(self.grid.shape, FREE_ID, np.uint8)
        got = np.zeros(self.grid.shape, bool)
        for src in sorted(sources, key=lambda s: abs(self._source_poses[s][1] - t)):
            src_pose = self._source_poses[src][0]
            s_sem, s_mask = carry(self.manual[src], src_pose, pose, self.grid, self.carried, self._centres)
            new = s_mask & ~got
            sem[new] = s_sem[new]
            got |= new
        if not got.any():
            raise KeyError(token)
        mask = got.astype(np.uint8)
        return Occ3DLabels(sem, mask, mask, mask_annotated=mask)

    def __iter__(self) -> Iterator[str]:
        return iter(self.manual)

    def __len__(self) -> int:
        return len(self.manual)
