"""Fused points to voxels by the rules of the point-label voxelizer (`fusion.voxels: rules`).

`fuse` names every accumulated LiDAR point by a vote of the 2D labels; this module turns the named points into
occupancy labels with the rules that make voxels from annotated LiDAR points (autolabel.annotation.voxelize,
tuned there against exact ground truth), where the class of a point is its vote instead of an annotation:
- non-ground returns are voxelized `surface_depth` behind the surface; in a BEV cell's ground layer only
  ground-class points vote (the ground fills that layer under walls and cars too);
- points of the window's other keyframes in voxels that the labelled keyframe's own rays cross are ghosts
  (a thing that has since moved: free now) and are dropped;
- rays free the voxels before their returns, stopping at the ground layer; level or rising beams without a
  return free their line (open sky); short unobserved gaps of a column between free voxels are free; free
  voxels next to a thing are left unobserved;
- unobserved voxels of the ground layer under free space take the class of the ground points around them
  when those agree (`ground_fill`), and ground voxels at a boundary between two ground classes are left
  unobserved (`ground_boundary`).
Fusion's own rules stand in for what the annotation rules get from boxes (a box fills its object): the ground
layer is filled under unobserved space too (`ground_fill_unobserved`), fuse.py keeps other keyframes' points
next to the frame's own returns (`parked_radius`), and here:
- `close_surfaces`: the voxels of things are closed (binary closing, 3 x 3 x 3): a surface between two LiDAR
  rings, which no return lies in (rings are 0.7 m apart at 30 m, two voxels), takes the class of the nearest
  thing voxel, even where a ray grazing the surface called it free;
- `cluster_vote`: each voxel of a thing (a connected set of named voxels above the ground) adds the mean vote
  share of the whole thing to its own: one object, one name.
The rules' settings are `PointLabelConfig`'s, four of them set by the recipe's `fusion` section (`point_rules`).
Confidence: an occupied voxel's is the share of its votes for the winning class (after `cluster_vote`) times
min(1, points / `full_hits`); a free voxel's 1; a filled ground or closed surface voxel's `FILLED_CONFIDENCE`
(the export's per-class thresholds drop it before observed ones).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_closing, binary_dilation, distance_transform_edt
from scipy.ndimage import label as connected

from kernels.grid import GridSpec
from occnet.classes import FLAT_CLASS_IDS, FREE_ID, IGNORE_ID, NUM_SEMANTIC_CLASSES

from ..annotation.accumulate import beams_free_space, free_space, voxel_index
from ..annotation.voxelize import (
    PointLabelConfig,
    behind_surface,
    fill_gaps,
    fill_ground,
    ground_boundaries,
    ground_layers,
    on_ground,
)

FILLED_CONFIDENCE = 0.5  # a voxel no point fell in, filled from the ground points or the thing around it
CUBE = np.ones((3, 3, 3), bool)  # 26-neighbourhood


def voxelize_votes(
    points: np.ndarray,
    origins: np.ndarray,
    cast: np.ndarray,
    own: np.ndarray,
    keep: np.ndarray,
    votes: np.ndarray,
    beams: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    grid: GridSpec,
    full_hits: int,
    rules: PointLabelConfig | None = None,
    ground_fill_unobserved: bool = False,
    close_surfaces: int = 0,
    cluster_vote: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Occupancy labels from named points (module docstring).

    points (P, 3) float64 in the labelled frame's ego frame; origins (P, 3) each point's sensor origin; cast (P,)
    bool: its origin is exact (a keyframe sweep's point: its ray is cast); own (P,) bool: from the labelled
    keyframe; keep (P,) bool: fusion keeps it (static classes from the whole window, the rest from its own
    time); votes (P, 17) float32 class votes (all zero: no view saw the point); beams: the keyframe sweeps'
    beams without a return (`annotation.accumulate.beams_free_space`); ground_fill_unobserved, close_surfaces,
    cluster_vote: fusion's rules (module docstring; `FusionConfig`). Returns semantics (X*Y*Z,) uint8 (17
    free, 255 unobserved), confidence (X*Y*Z,) float32 in [0, 1] and kept points per voxel (X*Y*Z,) int64."""
    rules = rules or PointLabelConfig()
    K, nvox = NUM_SEMANTIC_CLASSES, grid.num_voxels
    seen = votes.sum(1) > 0
    cls = np.where(seen, votes.argmax(1), IGNORE_ID).astype(np.int64)
    flat = np.isin(cls, FLAT_CLASS_IDS)
    ground = ground_layers(points[keep], flat[keep], grid)
    low = on_ground(points, ground, grid)
    stop = flat | ~seen | low  # rays to these stop at their ground layer

    shifted = behind_surface(points, origins, flat, rules.surface_depth)
    v, inside = voxel_index(shifted, grid)
    vi = np.maximum(v, 0)
    rays = own & cast
    free_own = free_space(origins[rays], points[rays], stop[rays], grid, rules.stop_before).numpy().reshape(-1)
    own_return = np.zeros(nvox, bool)
    own_return[v[own & inside]] = True
    ghost = ~own & inside & free_own[vi] & ~own_return[vi]
    use = keep & inside & ~ghost
    hits = np.bincount(v[use], minlength=nvox)
    low_shifted = on_ground(shifted, ground, grid)
    voters = use & seen & ~(low_shifted & ~flat)  # in the ground layer only ground points vote
    sums = np.stack([np.bincount(v[voters], weights=votes[voters, c], minlength=nvox) for c in range(K)], 1)
    total = sums.sum(1)
    named = total > 0
    if cluster_vote > 0:
        sums = _lean_to_things(sums, total, named, grid, cluster_vote)
        total = sums.sum(1)

    rays = cast & ~own & ~ghost  # the other keyframes' rays (the own ones are cast above)
    free = free_own | free_space(origins[rays], points[rays], stop[rays], grid, rules.stop_before).numpy().reshape(-1)
    if rules.empty_beams:
        free |= beams_free_space(beams, grid, rules.beam_margin).numpy().reshape(-1)
    # a voxel holding any return but a ghost is never free (a car that has since moved leaves its voxels
    # unobserved: its points are not kept, and it was there)
    free[v[inside & ~ghost]] = False

    sem = np.full(nvox, IGNORE_ID, np.uint8)
    sem[free] = FREE_ID
    sem[named] = sums[named].argmax(1)
    conf = np.zeros(nvox, np.float32)
    agree = sums.max(1) / np.maximum(total, 1e-9)
    conf[named] = agree[named] * np.minimum(1.0, hits[named] / full_hits)
    if close_surfaces > 0:
        conf[_close_things(sem, grid, close_surfaces)] = FILLED_CONFIDENCE
    if rules.free_gap > 0:
        fill_gaps(sem, grid, rules.free_gap)
    if rules.free_margin > 0:  # around things, not above flat ground (which fills its layer exactly)
        thing = np.zeros(nvox, bool)
        thing[v[use & ~low_shifted]] = True  # returns above the ground layer, named or not
        thing |= (sem < K) & ~np.isin(sem, FLAT_CLASS_IDS)
        near = binary_dilation(thing.reshape(grid.shape), np.ones((3, 3, 3), bool), iterations=rules.free_margin)
        sem[near.reshape(-1) & (sem == FREE_ID)] = IGNORE_ID
    if rules.ground_fill > 0:
        before = sem == IGNORE_ID
        f = use & flat
        fill_ground(
            sem,
            ground,
            points[f],
            cls[f],
            grid,
            rules.ground_fill,
            rules.ground_unanimous,
            above_free=not ground_fill_unobserved,
        )
        conf[before & (sem != IGNORE_ID)] = FILLED_CONFIDENCE
    if rules.ground_boundary:
        sem[ground_boundaries(sem, ground, grid)] = IGNORE_ID
    conf[sem == FREE_ID] = 1.0
    conf[sem == IGNORE_ID] = 0.0
    return sem, conf, hits


def _lean_to_things(
    sums: np.ndarray, total: np.ndarray, named: np.ndarray, grid: GridSpec, weight: float
) -> np.ndarray:
    """Vote shares (X*Y*Z, K) of every named voxel, those of things (connected named voxels whose class is not
    flat ground, 26-neighbourhood) plus `weight` x the mean share of their thing."""
    share = sums / np.maximum(total, 1e-9)[:, None]
    body = named & ~np.isin(sums.argmax(1), FLAT_CLASS_IDS)
    thing, n = connected(body.reshape(grid.shape), CUBE)
    thing = thing.reshape(-1)
    inb = thing > 0
    if n == 0:  # nothing above the ground (a frame of only flat ground, or of points no view named)
        return share
    mean = np.stack([np.bincount(thing[inb], weights=share[inb, c], minlength=n + 1) for c in range(sums.shape[1])], 1)
    mean /= np.maximum(mean.sum(1, keepdims=True), 1e-9)
    share[inb] += weight * mean[thing[inb]]
    return share


def _close_things(sem: np.ndarray, grid: GridSpec, iterations: int) -> np.ndarray:
    """In place on flat (X*Y*Z,) semantics: voxels (free or unobserved) that a binary closing of the voxels of
    things adds take the class of the nearest thing voxel. Returns the (X*Y*Z,) mask of those voxels."""
    vol = sem.reshape(grid.shape)
    thing = (vol < NUM_SEMANTIC_CLASSES) & ~np.isin(vol, FLAT_CLASS_IDS)
    new = binary_closing(thing, CUBE, iterations=iterations) & (vol >= FREE_ID)
    if new.any():
        _, (i, j, k) = distance_transform_edt(~thing, return_indices=True)
        vol[new] = vol[i[new], j[new], k[new]]
    return new.reshape(-1)
