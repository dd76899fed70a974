"""Occupancy labels of one annotated keyframe from its lidarseg point labels, its 3D boxes and the LiDAR of
its scene window (issue 24). Everything lives in the annotated keyframe's ego frame at its LiDAR time (the
Occ3D grid's frame); the settings are `PointLabelConfig`'s.

Points
- The annotated sweep's points carry their annotated classes. The window's other sweeps (`window` keyframes
  on each side, `sweeps` earlier sweeps of each) are not labelled: their points inside a box are left to the
  box (at other times they are the ground below a car that has since arrived, or the car itself); points in
  voxels the annotated sweep's rays cross are ghosts (a car that has since left: free now) and are dropped;
  every other point takes the class of the nearest annotated point of a static class (not a vehicle, person
  or cyclist; not in a box) within `propagate_radius`, else none (its voxel is then never free, but has no
  class).
- A return of anything but flat ground is voxelized `surface_depth` behind the surface (every axis, in the
  ray's direction): the exact ground truth calls a voxel occupied when a solid fills part of it (sampled
  at 2 x 2 x 2 points), and a wall whose face lies in the voxel's last tenth leaves it free (34% of the
  non-flat returns of a synthetic world lay in voxels the truth calls free, 4% after the shift).
- A voxel holding annotated points takes their majority class, else that of propagated points. In the
  ground layer of a BEV cell (the layer of the cell's flat-ground annotated points, else the frame's) only
  flat-ground points vote: the ground fills that layer under walls, cars and poles too.
Boxes
- A box fills the voxels whose centre lies inside it, less its lowest `ground_margin` metres (the ground it
  stands on) and less what the annotated sweep's rays cross; with `box_fill: points` (default) only up to
  the highest annotated point inside it in each BEV cell or the cells next to it (a box is a hull: over a
  car's bonnet, beside its cabin, it holds air). Annotated points inside win over the box's class.
- Other sweeps never free a box's voxels (the thing in it was elsewhere then).
Free space
- Every sweep's rays free the voxels before their returns. A ray stops where it enters its return's voxel
  layer (occnet.surfaces: flat ground fills its layer) when the return is flat ground, has no class, or
  lies in its cell's ground layer (the foot of a wall: the ground in front must not be carved).
- With `empty_beams`, a level or rising beam that returned nothing (reconstructed from each ring's
  azimuth steps, accumulate.missing_beams) frees its line up to `beam_margin` before the nearest return of
  the beams around it, or through the grid when none of them returned (open sky): the cameras' rays cross
  that space, the returns alone never reach it.
- Runs of at most `free_gap` unobserved voxels of a column between two free voxels are free (LiDAR rings
  are 0.9 m apart at 40 m); free voxels within `free_margin` voxels of a thing (a voxel with a non-ground
  class, holding a return above the ground layer, or in a box) are left unobserved (a ray crossing a voxel
  that a surface partly fills proves only its own line free).
- A voxel holding any kept return is never free.
Ground
- With `ground_fill`, an unobserved ground-layer voxel with free space right above it takes the class of the
  flat-ground points within `ground_fill` metres when they agree (`ground_unanimous`): distant rings leave
  metres of ground between them.
- With `ground_boundary`, ground voxels next to ground of another class (a kerb) are left unobserved:
  points sample a boundary voxel unevenly (a kerb's face faces the sensor), the truth takes the larger area.
Everything else is unobserved (255). The observed mask (semantics != 255) is what the annotation covers;
training trusts only those voxels (the manual group's confidence 255). `PointBoxLabels.source` says what
labelled each voxel (`SOURCES`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from kernels.grid import GridSpec
from occnet.classes import DYNAMIC_CLASS_IDS, FLAT_CLASS_IDS, FREE_ID, IGNORE_ID, NUM_SEMANTIC_CLASSES

from .accumulate import SweepCloud, beam_free_space, free_space, voxel_index
from .boxes import Box3D, box_voxels


@dataclass
class PointLabelConfig:
    """How point labels and boxes become voxels (module docstring)."""

    window: int = 3  # keyframes of the scene on each side of the annotated one whose sweeps are accumulated
    sweeps: int = 9  # earlier (non-key) sweeps of each window keyframe, where the dataset has them
    propagate_radius: float = 0.4  # metres: an unlabelled point takes the nearest annotated static class within this
    ground_margin: float = 0.2  # metres: a box's lowest slice is the ground it stands on, not the object
    # metres: a return of anything but flat ground is voxelized this far behind the surface (on every axis, in
    # the ray's direction): a voxel that the surface only grazes holds almost no solid
    surface_depth: float = 0.1
    stop_before: float = 0.0  # metres: rays to anything but flat ground stop this far before their return
    # metres (BEV): an unobserved voxel of a cell's ground layer, with free space right above it, takes the class
    # of the nearest flat-ground point within this distance (LiDAR rings are metres apart on distant ground)
    ground_fill: float = 1.0
    # voxels: an unobserved run of at most this many voxels of a column between two free voxels is free (the
    # LiDAR's rings are up to 0.9 m apart at 40 m: the space between two rings that both pass is empty)
    free_gap: int = 2
    # level and rising beams that returned nothing are free up to `beam_margin` metres before the nearest return
    # of their neighbouring beams, through the grid where none returned (open sky)
    empty_beams: bool = True
    beam_margin: float = 0.4
    # a box's voxels: "all" (its hull), "points" (up to the highest annotated point inside it in the cell or
    # its neighbours: no hull over a car's bonnet), "none" (boxes only guard their volume from other sweeps)
    box_fill: str = "points"
    # voxels: free voxels this close (26-neighbourhood steps) to an occupied one are left unobserved: a ray
    # crossing a voxel that a surface partly fills proves only its own line free
    free_margin: int = 1
    ground_unanimous: bool = True  # ground fill only where the nearest flat points within reach agree
    # ground voxels next to ground of another class (a kerb, the edge of a park) are left unobserved: points
    # sample a boundary voxel unevenly (a kerb's face faces the sensor), the truth takes the larger area
    ground_boundary: bool = True

    def __post_init__(self) -> None:
        if self.window < 0 or self.sweeps < 0:
            raise ValueError("window and sweeps must be >= 0")
        if self.box_fill not in ("all", "points", "none"):
            raise ValueError(f"box_fill must be all, points or none, got {self.box_fill!r}")
        if self.propagate_radius < 0 or self.ground_margin < 0 or self.surface_depth < 0:
            raise ValueError("propagate_radius, ground_margin and surface_depth must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


SOURCES = (
    "none",
    "annotated rays",
    "other rays",
    "gap between rays",
    "propagated points",
    "box",
    "annotated points",
    "ground fill",
)


@dataclass
class PointBoxLabels:
    """semantics (X, Y, Z) uint8: 0..16 occupied, 17 free, 255 not covered by the annotation; stats: counts."""

    semantics: np.ndarray
    stats: dict = field(default_factory=dict)
    source: np.ndarray | None = None  # (X, Y, Z) uint8: index into SOURCES of what labelled each voxel

    @property
    def observed(self) -> np.ndarray:
        return self.semantics != IGNORE_ID


def _majority(vox: np.ndarray, cls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxels holding points and the most frequent class among each voxel's points (ties: the lower id)."""
    if not len(vox):
        return vox, cls
    keys, counts = np.unique(vox * NUM_SEMANTIC_CLASSES + cls, return_counts=True)
    v, c = keys // NUM_SEMANTIC_CLASSES, keys % NUM_SEMANTIC_CLASSES
    order = np.lexsort((c, -counts, v))  # per voxel: most points first, then the lower class
    v, c = v[order], c[order]
    first = np.ones(len(v), bool)
    first[1:] = v[1:] != v[:-1]
    return v[first], c[first]


def _flat(cls: np.ndarray) -> np.ndarray:
    return np.isin(cls, FLAT_CLASS_IDS)


def behind_surface(points: np.ndarray, origins: np.ndarray, flat: np.ndarray, depth: float) -> np.ndarray:
    """Points moved `depth` metres along every axis in their ray's direction (into what they hit: along the
    ray alone, a grazing ray would slide a point along a wall instead of into it), flat ground excepted."""
    if depth == 0:
        return points
    return points + np.where(flat, 0.0, depth)[:, None] * np.sign(points - origins)


def ground_layers(points: np.ndarray, flat: np.ndarray, grid: GridSpec) -> np.ndarray:
    """(X, Y) int64: the voxel layer of flat ground in every BEV cell, the most frequent layer of the
    flat-ground points in the cell, else that of the whole frame (-1 without any flat point)."""
    X, Y, Z = grid.shape
    ijk = np.floor((points[flat] - np.asarray(grid.range_min)) / np.asarray(grid.voxel_size)).astype(np.int64)
    ijk = ijk[((ijk >= 0) & (ijk < np.asarray(grid.shape))).all(1)]
    if not len(ijk):
        return np.full((X, Y), -1, np.int64)
    counts = np.bincount((ijk[:, 0] * Y + ijk[:, 1]) * Z + ijk[:, 2], minlength=X * Y * Z).reshape(X, Y, Z)
    overall = int(counts.sum((0, 1)).argmax())
    return np.where(counts.sum(2) > 0, counts.argmax(2), overall)


def on_ground(points: np.ndarray, layers: np.ndarray, grid: GridSpec) -> np.ndarray:
    """(P,) bool: the point lies in (or under) the ground layer of its BEV cell (`ground_layers`)."""
    ijk = np.floor((points - np.asarray(grid.range_min)) / np.asarray(grid.voxel_size)).astype(np.int64)
    inside = (ijk[:, :2] >= 0).all(1) & (ijk[:, 0] < grid.shape[0]) & (ijk[:, 1] < grid.shape[1])
    layer = np.where(
        inside, layers[np.clip(ijk[:, 0], 0, grid.shape[0] - 1), np.clip(ijk[:, 1], 0, grid.shape[1] - 1)], -1
    )
    return inside & (layer >= 0) & (ijk[:, 2] <= layer)


def _below_object_points(own: SweepCloud, boxes: list[Box3D], grid: GridSpec, cfg: "PointLabelConfig") -> np.ndarray:
    """(X, Y, Z) bool: voxels at or below the highest annotated point inside a box in their BEV cell or the
    cells next to it (a box is a hull: a car's bonnet is lower than its cabin)."""
    from scipy.ndimage import maximum_filter

    X, Y, Z = grid.shape
    inside = np.zeros(len(own.points), bool)
    for b in boxes:
        inside |= b.contains(own.points, cfg.ground_margin)
    ijk = np.floor((own.points[inside] - np.asarray(grid.range_min)) / np.asarray(grid.voxel_size)).astype(np.int64)
    ijk = ijk[((ijk >= 0) & (ijk < np.asarray(grid.shape))).all(1)]
    top = np.full((X, Y), -1, np.int64)
    np.maximum.at(top, (ijk[:, 0], ijk[:, 1]), ijk[:, 2])
    top = maximum_filter(top, size=3, mode="constant", cval=-1)
    return np.arange(Z)[None, None, :] <= top[:, :, None]


def ground_boundaries(sem: np.ndarray, ground: np.ndarray, grid: GridSpec) -> np.ndarray:
    """(X*Y*Z,) bool: flat-ground voxels of the cells' ground layers with a flat voxel of another class among
    the 8 cells around them, in the same layer."""
    X, Y, Z = grid.shape
    vol = sem.reshape(X, Y, Z)
    g = np.clip(ground, 0, Z - 1)
    layer = np.where(ground >= 0, np.take_along_axis(vol, g[:, :, None], 2)[:, :, 0], IGNORE_ID).astype(np.int64)
    flat = np.isin(layer, FLAT_CLASS_IDS)
    pad = np.pad(np.where(flat, layer, -1), 1, constant_values=-1)
    padg = np.pad(g, 1, constant_values=-1)
    other = np.zeros((X, Y), bool)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            nb = pad[1 + dx : 1 + dx + X, 1 + dy : 1 + dy + Y]
            same_layer = padg[1 + dx : 1 + dx + X, 1 + dy : 1 + dy + Y] == g
            other |= (nb >= 0) & same_layer & (nb != layer)
    out = np.zeros((X, Y, Z), bool)
    ix, iy = np.nonzero(flat & other)
    out[ix, iy, g[ix, iy]] = True
    return out.reshape(-1)


def fill_gaps(sem: np.ndarray, grid: GridSpec, gap: int) -> int:
    """In place on flat (X*Y*Z,) semantics: runs of at most `gap` unobserved voxels of a column with a free
    voxel right below and right above become free. Returns how many."""
    vol = sem.reshape(grid.shape)
    free = vol == FREE_ID
    unknown = vol == IGNORE_ID
    fill = np.zeros_like(free)
    Z = grid.shape[2]
    for n in range(1, gap + 1):
        for z0 in range(1, Z - n):  # run z0 .. z0 + n - 1, bounded by z0 - 1 and z0 + n
            run = free[:, :, z0 - 1] & free[:, :, z0 + n] & unknown[:, :, z0 : z0 + n].all(2)
            fill[:, :, z0 : z0 + n] |= run[:, :, None]
    vol[fill] = FREE_ID
    return int(fill.sum())


def fill_ground(
    sem: np.ndarray,
    ground: np.ndarray,
    points: np.ndarray,
    cls: np.ndarray,
    grid: GridSpec,
    radius: float,
    unanimous: bool = False,
    k: int = 8,
    above_free: bool = True,
) -> int:
    """In place on flat (X*Y*Z,) semantics: unobserved voxels of each cell's ground layer whose voxel above is
    free (or, without `above_free`, free or unobserved: not a thing) take the class of the nearest flat-ground
    point (BEV distance <= radius; with `unanimous`, only where the k nearest within it agree). Returns how
    many."""
    X, Y, Z = grid.shape
    vol = sem.reshape(X, Y, Z)
    ix, iy = np.nonzero(ground >= 0)
    g = ground[ix, iy]
    ok = g + 1 < Z
    ix, iy, g = ix[ok], iy[ok], g[ok]
    above = vol[ix, iy, g + 1]
    want = (vol[ix, iy, g] == IGNORE_ID) & ((above == FREE_ID) if above_free else (above >= FREE_ID))
    ix, iy, g = ix[want], iy[want], g[want]
    if not len(ix) or not len(points):
        return 0
    centres = (
        np.stack([ix, iy], 1) * np.asarray(grid.voxel_size[:2])
        + np.asarray(grid.range_min[:2])
        + np.asarray(grid.voxel_size[:2]) / 2
    )
    # an unbalanced tree without compacted nodes: the same nearest points, 2.3x faster to build and query over a
    # window's ground points (1.1 million with nuScenes's sweeps: 348 -> 151 ms on a 2-core CPU; fill_ground took
    # 0.33 s of a frame's fusion on the H200 machine, BENCHMARKS.md)
    tree = cKDTree(points[:, :2], balanced_tree=False, compact_nodes=False)
    if not unanimous:
        d, j = tree.query(centres, distance_upper_bound=radius)
        found = np.isfinite(d)
        vol[ix[found], iy[found], g[found]] = cls[j[found]]
        return int(found.sum())
    d, j = tree.query(centres, k=k, distance_upper_bound=radius)
    hit = np.isfinite(d)
    c = np.where(hit, np.concatenate([cls, [IGNORE_ID]])[np.minimum(j, len(cls))], -1).astype(np.int64)
    first = c[:, 0]
    found = hit[:, 0] & ((c == first[:, None]) | ~hit).all(1)
    vol[ix[found], iy[found], g[found]] = first[found]
    return int(found.sum())


def voxelize(
    own: SweepCloud,
    labels: np.ndarray,
    boxes: list[Box3D],
    others: list[SweepCloud],
    grid: GridSpec,
    cfg: PointLabelConfig,
) -> PointBoxLabels:
    """The annotated keyframe's labels. own: its sweep; labels (P,) uint8 Occ3D ids of its points (255: no
    label); boxes in the keyframe's ego frame; others: the window's unlabelled sweeps."""
    K = NUM_SEMANTIC_CLASSES
    nvox = grid.num_voxels
    labels = np.asarray(labels, np.uint8)
    has_cls = labels < K
    own_shifted = behind_surface(own.points, own.origin, _flat(labels), cfg.surface_depth)
    v_own, in_own = voxel_index(own_shifted, grid)
    own_return = np.zeros(nvox, bool)
    own_return[v_own[in_own]] = True
    ground = ground_layers(own.points, _flat(labels), grid)
    stop = _flat(labels) | ~has_cls | on_ground(own.points, ground, grid)
    free_own = free_space(own.origin, own.points, stop, grid, cfg.stop_before)
    if cfg.empty_beams:
        free_own |= beam_free_space([own], grid, cfg.beam_margin)
    free_own = free_own.numpy().reshape(-1)
    box_cls, _ = box_voxels(boxes, grid, cfg.ground_margin)
    guard = (box_cls != IGNORE_ID).reshape(-1)  # other sweeps never free a box's voxels
    if cfg.box_fill == "points":
        box_cls = np.where(_below_object_points(own, boxes, grid, cfg), box_cls, IGNORE_ID).astype(np.uint8)
    elif cfg.box_fill == "none":
        box_cls = np.full_like(box_cls, IGNORE_ID)
    box_cls = box_cls.reshape(-1)

    def in_boxes(points: np.ndarray) -> np.ndarray:
        inside = np.zeros(len(points), bool)
        for b in boxes:
            inside |= b.contains(points, cfg.ground_margin)
        return inside

    # seeds of propagation: annotated points of static classes outside every box
    seed = has_cls & ~np.isin(labels, DYNAMIC_CLASS_IDS) & ~in_boxes(own.points)
    stats = {"annotated_points": int(has_cls.sum()), "boxes": len(boxes), "other_sweeps": len(others)}
    prop_vox = prop_cls = np.zeros(0, np.int64)
    other_return = np.zeros(nvox, bool)
    thing_return = np.zeros(nvox, bool)  # voxels holding returns above the ground layer (named or not)
    free_other = np.zeros(nvox, bool)
    if others:
        pts = np.concatenate([s.points for s in others])
        origins = np.concatenate([np.broadcast_to(s.origin, s.points.shape) for s in others])
        v, inside = voxel_index(pts, grid)
        boxed = in_boxes(pts)
        ghost = inside & free_own[np.maximum(v, 0)] & ~own_return[np.maximum(v, 0)]
        use = inside & ~boxed & ~ghost
        cls = np.full(len(pts), IGNORE_ID, np.uint8)
        if seed.any() and use.any():
            d, j = cKDTree(own.points[seed]).query(pts[use], distance_upper_bound=cfg.propagate_radius)
            found = np.isfinite(d)
            cls[np.flatnonzero(use)[found]] = labels[seed][j[found]]
        shifted = behind_surface(pts, origins, _flat(cls), cfg.surface_depth)
        v, inside2 = voxel_index(shifted, grid)
        use &= inside2
        other_return[v[use]] = True
        low = on_ground(shifted, ground, grid)
        named = use & (cls < K) & ~(low & ~_flat(cls))
        thing_return[v[use & ~low]] = True
        prop_vox, prop_cls = _majority(v[named], cls[named].astype(np.int64))
        stop = _flat(cls) | (cls >= K) | on_ground(pts, ground, grid)
        free_other = free_space(origins, pts, stop, grid, cfg.stop_before)
        if cfg.empty_beams:
            free_other |= beam_free_space(others, grid, cfg.beam_margin)
        free_other = free_other.numpy().reshape(-1)
        stats |= {
            "other_points": int(len(pts)),
            "other_in_grid": int(inside.sum()),
            "dropped_in_boxes": int((inside & boxed).sum()),
            "dropped_ghosts": int(ghost.sum()),
            "propagated": int(named.sum()),
            "unnamed": int((use & ~named).sum()),
        }
    returns = own_return | other_return
    in_box = box_cls != IGNORE_ID
    free = (free_own | (free_other & ~guard)) & ~returns
    sem = np.full(nvox, IGNORE_ID, np.uint8)
    source = np.zeros(nvox, np.uint8)  # where each voxel's label comes from (SOURCES)
    sem[free] = FREE_ID
    source[free] = np.where(free_own[free], 1, 2)
    sem[prop_vox] = prop_cls
    source[prop_vox] = 4
    boxed_vox = in_box & ~(free_own & ~returns)
    sem[boxed_vox] = box_cls[boxed_vox]
    source[boxed_vox] = 5
    own_low = on_ground(own_shifted, ground, grid)
    votes = in_own & has_cls & ~(own_low & ~_flat(labels))
    thing_return[v_own[in_own & ~own_low & ~_flat(labels)]] = True
    ann_vox, ann_cls = _majority(v_own[votes], labels[votes].astype(np.int64))
    sem[ann_vox] = ann_cls
    source[ann_vox] = 6
    if cfg.free_gap > 0:
        before = sem == IGNORE_ID
        stats["voxels_gap_free"] = fill_gaps(sem, grid, cfg.free_gap)
        source[before & (sem != IGNORE_ID)] = 3
    if cfg.free_margin > 0:  # around things, not above flat ground (which fills its layer exactly)
        from scipy.ndimage import binary_dilation

        occ = (((sem < K) & ~_flat(sem)) | thing_return | guard).reshape(grid.shape)
        near = binary_dilation(occ, np.ones((3, 3, 3), bool), iterations=cfg.free_margin).reshape(-1)
        drop = near & (sem == FREE_ID)
        sem[drop] = IGNORE_ID
        source[drop] = 0
        stats["voxels_free_margin"] = int(drop.sum())
    if cfg.ground_fill > 0:
        flat_pts = [own.points[in_own & _flat(labels)]]
        flat_cls = [labels[in_own & _flat(labels)]]
        if others:
            f = use & _flat(cls)
            flat_pts.append(pts[f])
            flat_cls.append(cls[f])
        before = sem == IGNORE_ID
        stats["voxels_ground_filled"] = fill_ground(
            sem, ground, np.concatenate(flat_pts), np.concatenate(flat_cls), grid, cfg.ground_fill, cfg.ground_unanimous
        )
        source[before & (sem != IGNORE_ID)] = 7
    if cfg.ground_boundary:
        drop = ground_boundaries(sem, ground, grid)
        sem[drop] = IGNORE_ID
        source[drop] = 0
        stats["voxels_ground_boundary"] = int(drop.sum())
    stats |= {
        "voxels_annotated_points": int(len(ann_vox)),
        "voxels_boxes": int(boxed_vox.sum()),
        "voxels_free": int((sem == FREE_ID).sum()),
        "voxels_observed": int((sem != IGNORE_ID).sum()),
    }
    return PointBoxLabels(sem.reshape(grid.shape), stats, source.reshape(grid.shape))


def score(semantics: np.ndarray, gt_semantics: np.ndarray, mask_camera: np.ndarray) -> dict:
    """Labels from points and boxes against exact ground truth: mIoU and geometric IoU (percent) on the
    voxels they cover within mask_camera (Occ3D's protocol) and on all the voxels they cover, and the share of
    mask_camera covered."""
    from occnet.metrics import OccupancyMetric

    observed = semantics != IGNORE_ID
    cam = np.asarray(mask_camera).astype(bool)
    out = {}
    for name, mask in (("camera", observed & cam), ("covered", observed)):
        m = OccupancyMetric()
        m.update(np.where(observed, semantics, FREE_ID), gt_semantics, mask)
        s = m.compute().as_dict()
        out[name] = {"miou": s["miou"], "geometric_iou": s["geometric_iou"], "per_class": s["per_class_iou"]}
    out["mask_camera_covered"] = float((observed & cam).sum() / max(1, cam.sum()))
    return out
