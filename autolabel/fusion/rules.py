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
- `ground_smooth`: each flat-ground voxel takes the ground class most of the flat-ground voxels around it hold
  (a mode filter over a few cells in bird's-eye view): one view's misnamed patch of road is outvoted by the
  road around it;
- `cluster_vote`: each voxel of a thing (a connected set of named voxels above the ground) adds the mean vote
  share of the whole thing to its own: one object, one name;
- `low_height`: barriers and traffic cones stand lower than this; where the voxels of a thing named one of them
  span more layers (after the closing), they become manmade: a pole, a sign or a fence that the classifier took
  for a barrier or a cone (its look-alikes; every view may make the same mistake, so no vote can fix it).
The rules' settings are `PointLabelConfig`'s, four of them set by the recipe's `fusion` section (`point_rules`).
Confidence: an occupied voxel's is the share of its votes for the winning class (after `cluster_vote`) times
min(1, points / `full_hits`); a free voxel's 1; a filled ground, closed surface, smoothed-over ground or renamed
tall voxel's `FILLED_CONFIDENCE` (the export's per-class thresholds drop it before observed ones).
Where it runs: the per-point rules and the rays in torch on the device of the inputs (`_name_voxels`; CUDA when
fusion runs there), the volume rules on their results in NumPy and scipy.ndimage (`label_voxels`, on the
CPU). `voxelize_votes_reference` has the per-point rules in NumPy: the definition the torch path equals
(semantics and points per voxel identical, confidence to float32 rounding; tests/test_fusion_torch.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import binary_closing, binary_dilation, distance_transform_edt
from scipy.ndimage import label as connected

from kernels.grid import GridSpec
from occnet.classes import FLAT_CLASS_IDS, FREE_ID, IGNORE_ID, NUM_SEMANTIC_CLASSES, OCC3D_CLASS_NAMES

from ..annotation import accumulate
from ..annotation.accumulate import beams_free_space, free_space
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
# things that stand lower than `FusionConfig.low_height` (Occ3D-nuScenes: traffic barriers and cones, about 1 m)
LOW_CLASS_IDS = tuple(OCC3D_CLASS_NAMES.index(n) for n in ("barrier", "traffic_cone"))
MANMADE = OCC3D_CLASS_NAMES.index("manmade")  # poles, signs, walls and fences: what a tall "barrier" is

Beams = list[tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class NamedVoxels:
    """What the per-point rules leave for the volume rules (NumPy, on the CPU; N named voxels, F ground points).

    index (N,) int64 ascending flat indices of the voxels with votes; sums (N, 17) float64 their vote sums;
    hits (X*Y*Z,) int64 kept points per voxel; free (X*Y*Z,) bool free voxels (none holding a return);
    above (X*Y*Z,) bool voxels holding kept returns above the ground layer; ground (X, Y) int64 the cells'
    ground layers (`ground_layers`); ground_points (F, 2) float64 x, y and ground_cls (F,) int64 the kept
    points of flat-ground classes (`fill_ground` looks them up in bird's-eye view)."""

    index: np.ndarray
    sums: np.ndarray
    hits: np.ndarray
    free: np.ndarray
    above: np.ndarray
    ground: np.ndarray
    ground_points: np.ndarray
    ground_cls: np.ndarray


def voxelize_votes(
    points: torch.Tensor | np.ndarray,
    origins: torch.Tensor | np.ndarray,
    cast: torch.Tensor | np.ndarray,
    own: torch.Tensor | np.ndarray,
    keep: torch.Tensor | np.ndarray,
    votes: torch.Tensor | np.ndarray,
    beams: Beams,
    grid: GridSpec,
    full_hits: int,
    rules: PointLabelConfig | None = None,
    ground_fill_unobserved: bool = False,
    close_surfaces: int = 0,
    cluster_vote: float = 0.0,
    ground_smooth: int = 0,
    low_height: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Occupancy labels from named points (module docstring).

    points (P, 3) float64 in the labelled frame's ego frame; origins (P, 3) each point's sensor origin; cast (P,)
    bool: its origin is exact (a keyframe sweep's point: its ray is cast); own (P,) bool: from the labelled
    keyframe; keep (P,) bool: fusion keeps it (static classes from the whole window, the rest from its own
    time); votes (P, 17) float32 class votes (all zero: no view saw the point); beams: the keyframe sweeps'
    beams without a return (`annotation.accumulate.beams_free_space`); ground_fill_unobserved, close_surfaces,
    cluster_vote, ground_smooth, low_height: fusion's rules (module docstring; `FusionConfig`). Tensors on one
    device (the per-point rules and the rays run there; NumPy arrays run on the CPU). Returns semantics (X*Y*Z,)
    uint8 (17 free, 255 unobserved), confidence (X*Y*Z,) float32 in [0, 1] and kept points per voxel (X*Y*Z,)
    int64, NumPy, equal to `voxelize_votes_reference`'s."""
    rules = rules or PointLabelConfig()
    named = name_voxels(points, origins, cast, own, keep, votes, beams, grid, rules)
    return label_voxels(
        named, grid, full_hits, rules, ground_fill_unobserved, close_surfaces, cluster_vote, ground_smooth, low_height
    )


def name_voxels(
    points: torch.Tensor | np.ndarray,
    origins: torch.Tensor | np.ndarray,
    cast: torch.Tensor | np.ndarray,
    own: torch.Tensor | np.ndarray,
    keep: torch.Tensor | np.ndarray,
    votes: torch.Tensor | np.ndarray,
    beams: Beams,
    grid: GridSpec,
    rules: PointLabelConfig,
) -> NamedVoxels:
    """The per-point rules and the rays of `voxelize_votes` (its arguments), on the device of `points`: what
    `label_voxels` turns into labels, in NumPy (so it can run in another process)."""
    t = [torch.as_tensor(x) for x in (points, origins, cast, own, keep, votes)]
    dev = t[0].device
    return _name_voxels(*(x.to(dev) for x in t), beams, grid, rules)


def voxelize_votes_reference(
    points: np.ndarray,
    origins: np.ndarray,
    cast: np.ndarray,
    own: np.ndarray,
    keep: np.ndarray,
    votes: np.ndarray,
    beams: Beams,
    grid: GridSpec,
    full_hits: int,
    rules: PointLabelConfig | None = None,
    ground_fill_unobserved: bool = False,
    close_surfaces: int = 0,
    cluster_vote: float = 0.0,
    ground_smooth: int = 0,
    low_height: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`voxelize_votes` with the per-point rules in NumPy (the definition its torch path is tested against);
    NumPy arguments and results as there."""
    rules = rules or PointLabelConfig()
    named = _name_voxels_reference(points, origins, cast, own, keep, votes, beams, grid, rules)
    return label_voxels(
        named, grid, full_hits, rules, ground_fill_unobserved, close_surfaces, cluster_vote, ground_smooth, low_height
    )


def _name_voxels_reference(
    points: np.ndarray,
    origins: np.ndarray,
    cast: np.ndarray,
    own: np.ndarray,
    keep: np.ndarray,
    votes: np.ndarray,
    beams: Beams,
    grid: GridSpec,
    rules: PointLabelConfig,
) -> NamedVoxels:
    """The per-point rules in NumPy: votes, ghosts and rays to voxels (arguments as `voxelize_votes`)."""
    K, nvox = NUM_SEMANTIC_CLASSES, grid.num_voxels
    seen = votes.sum(1) > 0
    cls = np.where(seen, votes.argmax(1), IGNORE_ID).astype(np.int64)
    flat = np.isin(cls, FLAT_CLASS_IDS)
    ground = ground_layers(points[keep], flat[keep], grid)
    low = on_ground(points, ground, grid)
    stop = flat | ~seen | low  # rays to these stop at their ground layer

    shifted = behind_surface(points, origins, flat, rules.surface_depth)
    v, inside = accumulate.voxel_index(shifted, grid)
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
    index = np.flatnonzero(sums.sum(1) > 0)

    rays = cast & ~own & ~ghost  # the other keyframes' rays (the own ones are cast above)
    free = free_own | free_space(origins[rays], points[rays], stop[rays], grid, rules.stop_before).numpy().reshape(-1)
    if rules.empty_beams:
        free |= beams_free_space(beams, grid, rules.beam_margin).numpy().reshape(-1)
    # a voxel holding any return but a ghost is never free (a car that has since moved leaves its voxels
    # unobserved: its points are not kept, and it was there)
    free[v[inside & ~ghost]] = False
    above = np.zeros(nvox, bool)
    above[v[use & ~low_shifted]] = True
    f = use & flat
    return NamedVoxels(index, sums[index], hits, free, above, ground, points[f][:, :2], cls[f])


def _name_voxels(
    points: torch.Tensor,
    origins: torch.Tensor,
    cast: torch.Tensor,
    own: torch.Tensor,
    keep: torch.Tensor,
    votes: torch.Tensor,
    beams: Beams,
    grid: GridSpec,
    rules: PointLabelConfig,
) -> NamedVoxels:
    """`_name_voxels_reference` in torch on the tensors' device, step for step; only its results go to NumPy.
    Voxel indices come from float64 points as there. The vote sums are float64, as np.bincount's: on the CPU
    index_add_ adds in point order as np.bincount does; CUDA's atomics add in any order, which changes nothing
    while the sums are exact (a float32 vote >= 2^-k is a multiple of 2^-(k+23): exact below 2^(30-k), e.g.
    below 10^6 with votes >= 0.001; fusion's votes are sums of 2D label confidences)."""
    K, nvox, dev = NUM_SEMANTIC_CLASSES, grid.num_voxels, points.device
    seen = votes.sum(1) > 0
    cls = torch.where(seen, votes.argmax(1), IGNORE_ID)  # argmax: the first maximum, as NumPy's
    flat = torch.isin(cls, torch.tensor(FLAT_CLASS_IDS, device=dev))
    ground = _ground_layers(points[keep], flat[keep], grid)
    low = _on_ground(points, ground, grid)
    stop = flat | ~seen | low  # rays to these stop at their ground layer

    shifted = _behind_surface(points, origins, flat, rules.surface_depth)
    v, inside = voxel_index(shifted, grid)
    vi = v.clamp_min(0)
    rays = own & cast
    free_own = free_space(origins[rays], points[rays], stop[rays], grid, rules.stop_before).reshape(-1)
    own_return = torch.zeros(nvox, dtype=torch.bool, device=dev)
    own_return[v[own & inside]] = True
    ghost = ~own & inside & free_own[vi] & ~own_return[vi]
    use = keep & inside & ~ghost
    hits = torch.bincount(v[use], minlength=nvox)
    low_shifted = _on_ground(shifted, ground, grid)
    voters = use & seen & ~(low_shifted & ~flat)  # in the ground layer only ground points vote
    sums = torch.zeros(nvox, K, dtype=torch.float64, device=dev)
    sums.index_add_(0, v[voters], votes[voters].double())
    index = torch.nonzero(sums.sum(1) > 0)[:, 0]

    rays = cast & ~own & ~ghost  # the other keyframes' rays (the own ones are cast above)
    free = free_own | free_space(origins[rays], points[rays], stop[rays], grid, rules.stop_before).reshape(-1)
    if rules.empty_beams:
        free |= beams_free_space(beams, grid, rules.beam_margin, device=dev).reshape(-1)
    free[v[inside & ~ghost]] = False  # a voxel holding any return but a ghost is never free
    above = torch.zeros(nvox, dtype=torch.bool, device=dev)
    above[v[use & ~low_shifted]] = True
    f = use & flat
    out = (index, sums[index], hits, free, above, ground, points[f][:, :2], cls[f])
    return NamedVoxels(*(x.cpu().numpy() for x in out))


def voxel_index(points: torch.Tensor, grid: GridSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat voxel index (P,) int64, -1 outside; inside (P,) bool) of points (P, 3) in the grid's frame (the torch
    twin of annotation.accumulate.voxel_index, on the points' device)."""
    ijk = _voxel_ijk(points, grid)
    inside = ((ijk >= 0) & (ijk < ijk.new_tensor(grid.shape))).all(1)
    flat = (ijk[:, 0] * grid.shape[1] + ijk[:, 1]) * grid.shape[2] + ijk[:, 2]
    return torch.where(inside, flat, -1), inside


def _voxel_ijk(points: torch.Tensor, grid: GridSpec) -> torch.Tensor:
    """(P, 3) int64 voxel coordinates of float64 points (P, 3), unbounded (floor in float64, as NumPy's)."""
    return torch.floor((points - points.new_tensor(grid.range_min)) / points.new_tensor(grid.voxel_size)).long()


def _behind_surface(points: torch.Tensor, origins: torch.Tensor, flat: torch.Tensor, depth: float) -> torch.Tensor:
    """Torch twin of annotation.voxelize.behind_surface: (P, 3) points moved `depth` along every axis in their
    ray's direction, flat ground (P,) excepted."""
    if depth == 0:
        return points
    step = torch.where(flat, points.new_tensor(0.0), points.new_tensor(depth))  # float64, as NumPy's
    return points + step[:, None] * torch.sign(points - origins)


def _ground_layers(points: torch.Tensor, flat: torch.Tensor, grid: GridSpec) -> torch.Tensor:
    """Torch twin of annotation.voxelize.ground_layers: (X, Y) int64 ground layer per BEV cell (-1: none)."""
    X, Y, Z = grid.shape
    v, inside = voxel_index(points[flat], grid)
    if not bool(inside.any()):
        return torch.full((X, Y), -1, dtype=torch.long, device=points.device)
    counts = torch.bincount(v[inside], minlength=X * Y * Z).view(X, Y, Z)
    overall = counts.sum((0, 1)).argmax()  # ties: the first, as NumPy's
    return torch.where(counts.sum(2) > 0, counts.argmax(2), overall)


def _on_ground(points: torch.Tensor, layers: torch.Tensor, grid: GridSpec) -> torch.Tensor:
    """Torch twin of annotation.voxelize.on_ground: (P,) bool, the point lies in or under its cell's layer."""
    X, Y = grid.shape[:2]
    ijk = _voxel_ijk(points, grid)
    inside = (ijk[:, :2] >= 0).all(1) & (ijk[:, 0] < X) & (ijk[:, 1] < Y)
    layer = torch.where(inside, layers[ijk[:, 0].clamp(0, X - 1), ijk[:, 1].clamp(0, Y - 1)], -1)
    return inside & (layer >= 0) & (ijk[:, 2] <= layer)


def label_voxels(
    named: NamedVoxels,
    grid: GridSpec,
    full_hits: int,
    rules: PointLabelConfig,
    ground_fill_unobserved: bool,
    close_surfaces: int,
    cluster_vote: float,
    ground_smooth: int = 0,
    low_height: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The volume rules of `voxelize_votes` (NumPy, scipy.ndimage, on the CPU) on `name_voxels`' results (which may
    come from another process): `voxelize_votes`' returns."""
    K, nvox = NUM_SEMANTIC_CLASSES, grid.num_voxels
    index, sums, hits = named.index, named.sums, named.hits
    if cluster_vote > 0:
        sums = _lean_to_things(sums, index, grid, cluster_vote)
    total = sums.sum(1)
    sem = np.full(nvox, IGNORE_ID, np.uint8)
    sem[named.free] = FREE_ID
    sem[index] = sums.argmax(1)
    conf = np.zeros(nvox, np.float32)
    agree = sums.max(1) / np.maximum(total, 1e-9)
    conf[index] = agree * np.minimum(1.0, hits[index] / full_hits)
    if close_surfaces > 0:
        conf[_close_things(sem, grid, close_surfaces)] = FILLED_CONFIDENCE
    if low_height > 0:  # after the closing, which joins a thin pole's returns into one column
        conf[_rename_tall_low(sem, grid, low_height)] = FILLED_CONFIDENCE
    if rules.free_gap > 0:
        fill_gaps(sem, grid, rules.free_gap)
    if rules.free_margin > 0:  # around things, not above flat ground (which fills its layer exactly)
        thing = named.above | ((sem < K) & ~np.isin(sem, FLAT_CLASS_IDS))  # returns above it, named or not
        near = binary_dilation(thing.reshape(grid.shape), CUBE, iterations=rules.free_margin)
        sem[near.reshape(-1) & (sem == FREE_ID)] = IGNORE_ID
    if rules.ground_fill > 0:
        before = sem == IGNORE_ID
        fill_ground(
            sem,
            named.ground,
            named.ground_points,
            named.ground_cls,
            grid,
            rules.ground_fill,
            rules.ground_unanimous,
            above_free=not ground_fill_unobserved,
        )
        conf[before & (sem != IGNORE_ID)] = FILLED_CONFIDENCE
    if ground_smooth > 0:
        conf[_smooth_ground(sem, grid, ground_smooth)] = FILLED_CONFIDENCE
    if rules.ground_boundary:
        sem[ground_boundaries(sem, named.ground, grid)] = IGNORE_ID
    conf[sem == FREE_ID] = 1.0
    conf[sem == IGNORE_ID] = 0.0
    return sem, conf, hits


def _lean_to_things(sums: np.ndarray, index: np.ndarray, grid: GridSpec, weight: float) -> np.ndarray:
    """Vote shares (N, K) of the named voxels `index` (N,) with vote sums `sums` (N, K), those of things
    (connected named voxels whose class is not flat ground, 26-neighbourhood) plus `weight` x the mean share
    of their thing."""
    share = sums / np.maximum(sums.sum(1), 1e-9)[:, None]
    body = np.zeros(grid.num_voxels, bool)
    body[index[~np.isin(sums.argmax(1), FLAT_CLASS_IDS)]] = True
    labels, n = connected(body.reshape(grid.shape), CUBE)
    if n == 0:  # nothing above the ground (a frame of only flat ground, or of points no view named)
        return share
    thing = labels.reshape(-1)[index]
    inb = thing > 0
    # the thing's votes summed in voxel order, as over the whole grid
    mean = np.stack([np.bincount(thing[inb], weights=share[inb, c], minlength=n + 1) for c in range(sums.shape[1])], 1)
    mean /= np.maximum(mean.sum(1, keepdims=True), 1e-9)
    share[inb] += weight * mean[thing[inb]]
    return share


def _rename_tall_low(sem: np.ndarray, grid: GridSpec, height: float) -> np.ndarray:
    """In place on flat (X*Y*Z,) semantics: voxels of the low classes (`LOW_CLASS_IDS`) become manmade where a
    thing's voxels of that class (the thing: connected occupied voxels not of flat ground, 26-neighbourhood)
    span more than `height` metres of layers. Returns the renamed voxels (X*Y*Z,) bool."""
    renamed = np.zeros(sem.shape, bool)
    if not np.isin(sem, LOW_CLASS_IDS).any():  # most frames: no connected components to label
        return renamed
    top = int(np.floor(height / grid.voxel_size[2] + 1e-6))  # layers a low thing may span
    K, Z = NUM_SEMANTIC_CLASSES, grid.shape[2]
    thing = (sem < K) & ~np.isin(sem, FLAT_CLASS_IDS)
    labels, n = connected(thing.reshape(grid.shape), CUBE)
    labels = labels.reshape(-1)
    for c in LOW_CLASS_IDS:
        at = np.flatnonzero(sem == c)
        if len(at) == 0:
            continue
        comp, z = labels[at], at % Z
        lo, hi = np.full(n + 1, Z), np.full(n + 1, -1)
        np.minimum.at(lo, comp, z)
        np.maximum.at(hi, comp, z)
        renamed[at[(hi - lo + 1 > top)[comp]]] = True
    sem[renamed] = MANMADE
    return renamed


def _smooth_ground(sem: np.ndarray, grid: GridSpec, radius: int) -> np.ndarray:
    """In place on flat (X*Y*Z,) semantics: every flat-ground voxel takes the flat-ground class most frequent among
    the voxels within `radius` cells in x and y and one layer in z (ties: the first of FLAT_CLASS_IDS). Returns the
    (X*Y*Z,) mask of the voxels whose class changed."""
    vol = sem.reshape(grid.shape)
    best, _ = most_frequent(vol, FLAT_CLASS_IDS, radius)
    changed = np.isin(vol, FLAT_CLASS_IDS) & (best != vol)
    vol[changed] = best[changed]
    return changed.reshape(-1)


def most_frequent(vol: np.ndarray, classes, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Per voxel of `vol` (X, Y, Z) uint8: which of `classes` is most frequent within `radius` cells in x and y and
    one layer in z ((X, Y, Z) uint8; ties: the first of `classes`), and whether any of them is there (bool)."""
    counts = np.stack([box_counts(vol == c, (radius, radius, 1)) for c in classes])
    return np.asarray(classes, np.uint8)[counts.argmax(0)], counts.max(0) > 0


def box_counts(mask: np.ndarray, radius: tuple[int, ...]) -> np.ndarray:
    """(X, Y, Z) int32: how many voxels of `mask` (X, Y, Z) lie within `radius` voxels along each axis (exact
    integer box sums, by cumulative sums; outside the grid counts as empty)."""
    out = mask.astype(np.int32)
    for axis, r in enumerate(radius):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r + 1, r)
        c = np.pad(out, pad).cumsum(axis, dtype=np.int32)
        n = out.shape[axis]
        out = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis) - np.take(c, np.arange(n), axis)
    return out


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
