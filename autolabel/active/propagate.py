"""Manual labels carried to the other keyframes of their scene (`rounds.propagate`, issue 21).

An annotated keyframe labels the static world around it: the road, sidewalks, buildings and vegetation
stand where they are at every keyframe of the scene. Moved through the ego poses (the grid of keyframe B
-> global -> the grid of the annotated keyframe A), each voxel of B whose centre falls in a voxel A's
annotator labelled with a static class takes that class; `static_free` also carries A's free voxels. Things
that move (vehicles, people, cyclists: `DYNAMIC_CLASS_IDS`) and `others` are never carried: where they
stood at A says nothing about B. B gets a partial label (`mask_annotated`: the carried voxels), which
training treats as a region-level label: the 3D loss trusts those voxels and the teacher teaches the rest. A
keyframe with region-level labels of its own takes what the others carry outside its tiles. Carried free space
never clears what B's own labels (the fused labels, where training has them) see occupied
(`autolabel.data.occ3d.carried_kept`, the export's rule).

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
from ..data.occ3d import Occ3DLabels, carried_kept
from ..store.frame_arrays import FrameArrays
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
) -> tuple[np.ndarray, np.ndarray]:
    """The target keyframe's voxels labelled from one annotated keyframe.

    source: its manual labels (a region-level label carries only its annotated voxels); source_pose /
    target_pose: (4, 4) grid (ego) to global of each keyframe; carried: `carried_classes`. Each target voxel
    looks up the source voxel holding its centre (nearest neighbour: at a yaw change, boundaries move by up to
    half a voxel). Returns semantics (X, Y, Z) uint8 and the carried mask (X, Y, Z) bool (semantics are
    meaningful only where it is set)."""
    m = grid_affine(source_pose, target_pose, grid)
    shape = grid.shape
    # the target's voxel centres (i + 0.5, j + 0.5, k + 0.5) form a lattice, so each source coordinate is a sum of
    # three 1-D terms, broadcast over the grid: no (X * Y * Z, 3) array, no matrix product (4.3x faster than
    # those on 200 x 200 x 16, float64 like GridSpec's metric lookup)
    ticks = [np.arange(n, dtype=np.float64) + 0.5 for n in shape]
    src = np.zeros(shape, np.int64)
    inside = np.ones(shape, bool)
    for d, (n, stride) in enumerate(zip(shape, (shape[1] * shape[2], shape[2], 1))):
        coord = (m[d, 0] * ticks[0])[:, None, None] + (m[d, 1] * ticks[1])[None, :, None]
        index = np.floor(coord + (m[d, 2] * ticks[2] + m[d, 3])[None, None, :]).astype(np.int64)
        inside &= (index >= 0) & (index < n)
        src += index * stride
    src = np.where(inside, src, 0)
    labelled = source.mask_camera.astype(bool)
    if source.mask_annotated is not None:
        labelled &= source.mask_annotated.astype(bool)
    sem = source.semantics.reshape(-1)[src]
    mask = inside & labelled.reshape(-1)[src] & carried[sem]
    return np.where(mask, sem, np.uint8(FREE_ID)), mask


class PropagatedLabels(Mapping):
    """token -> 3D labels for training: a keyframe's own manual labels, or, for another keyframe of a scene
    with annotated keyframes, what they carry to it (`carry`, nearest annotated keyframe in time first; a
    partial label), and for a keyframe with region-level labels both (its tiles, what the others carry
    elsewhere). A keyframe that nothing reaches has none (KeyError). Iterating or counting gives the annotated
    keyframes only: what was paid for. `now`: labels of the keyframes as they are (the fused labels) whose
    occupied voxels carried free space never clears (`carried_kept`); None: carried free space clears anything."""

    def __init__(
        self,
        manual: Mapping[str, Occ3DLabels],
        frames: NuScenesFrames,
        grid: GridSpec,
        mode: str,
        now: FrameArrays | None = None,
    ):
        if mode not in PROPAGATE_MODES[1:]:
            raise ValueError(f"PropagatedLabels: mode must be one of {PROPAGATE_MODES[1:]}, got {mode!r}")
        self.manual, self.frames, self.grid, self.now = manual, frames, grid, now
        self.carried = carried_classes(free=mode == "static_free")
        self._by_scene: dict[str, list[str]] = {}
        self._source_poses: dict[str, tuple[np.ndarray, int]] = {}  # read once, not per frame that reads them
        for token in manual:
            if token in frames:
                self._by_scene.setdefault(frames.scene_of(token), []).append(token)
                self._source_poses[token] = self._pose(token)

    def _pose(self, token: str) -> tuple[np.ndarray, int]:
        lidar = self.frames.meta(token).lidar  # poses only, no file read
        return lidar.ego2global, lidar.timestamp

    def _now(self, token: str) -> np.ndarray | None:
        if self.now is None or not self.now.has(token):
            return None
        i = self.now.index(token)
        return self.now.read(i, "semantics") if self.now.is_done(i) else None

    def __getitem__(self, token: str) -> Occ3DLabels:
        own = self.manual.get(token)
        if own is not None and own.mask_annotated is None:  # a whole keyframe annotated
            return own
        scene = self.frames.scene_of(token) if token in self.frames else None
        sources = [s for s in self._by_scene.get(scene, []) if s != token]
        if not sources:
            if own is not None:
                return own
            raise KeyError(token)
        pose, t = self._pose(token)
        sem = np.full(self.grid.shape, FREE_ID, np.uint8)
        got = np.zeros(self.grid.shape, bool)
        for src in sorted(sources, key=lambda s: abs(self._source_poses[s][1] - t)):
            src_pose = self._source_poses[src][0]
            s_sem, s_mask = carry(self.manual[src], src_pose, pose, self.grid, self.carried)
            new = s_mask & ~got
            sem[new] = s_sem[new]
            got |= new
        now = self._now(token)
        if now is not None:
            got = carried_kept(sem, got, now)
        if own is None:
            if not got.any():
                raise KeyError(token)
            mask = got.astype(np.uint8)
            return Occ3DLabels(sem, mask, mask, mask_annotated=mask)
        tiles = own.mask_annotated.astype(bool)
        got &= ~tiles
        return Occ3DLabels(
            np.where(tiles, own.semantics, sem),
            np.where(tiles, own.mask_lidar, got).astype(np.uint8),
            np.where(tiles, own.mask_camera, got).astype(np.uint8),
            mask_annotated=(tiles | got).astype(np.uint8),
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self.manual)

    def __len__(self) -> int:
        return len(self.manual)
