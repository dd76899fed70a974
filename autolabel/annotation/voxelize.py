"""Occupancy labels of one annotated keyframe from its lidarseg point labels, its 3D boxes and the LiDAR of
its scene window (issue 24).

Everything lives in the annotated keyframe's ego frame at its LiDAR time (the Occ3D grid's frame):
- the annotated sweep's points carry their annotated classes; its rays give the free space at the frame's
  time. A ray stops where it enters its return's voxel layer (occnet.surfaces: flat ground fills its whole
  layer) when the return is flat ground, has no class (noise, ego: the carve stops early), or lies in the
  ground layer of its BEV cell (the layer of the cell's flat-ground points, else the frame's): the foot of
  a wall or a car stands in the ground layer, and a ray to it must not carve the ground in front;
- every box fills the voxels whose centre lies inside it with its class, less its lowest `ground_margin`
  metres (the ground it stands on) and less the voxels the annotated sweep's rays cross (the space above a
  car's bonnet beside its cabin: the box is a hull, the rays see through it);
- the window's other sweeps (`window` keyframes on each side, `sweeps` earlier sweeps of each) are not
  labelled. Their points inside a box are left to the box (at other times they are the ground below a car
  that has since arrived, or the car itself); points in voxels the annotated rays cross are ghosts (a car
  that has since left, free now) and are dropped; every other point takes the class of the nearest
  annotated point of a static class (not a vehicle, person or cyclist; not in a box) within
  `propagate_radius`, else no class. Their rays add free space (flat-ground stop by that class; unknown
  classes stop early) but never inside a box (the thing in the box was elsewhere then);
- a return of anything but flat ground is voxelized `surface_depth` behind the surface along its ray: the
  exact ground truth calls a voxel occupied when a solid fills part of it (sampled at 2 x 2 x 2 points), and a
  wall whose face lies in the last tenth of a voxel leaves that voxel free (34% of the returns of non-flat
  classes on a synthetic world lay in voxels the truth calls free, 4% after the shift);
- a voxel holding an annotated point takes the majority of their classes; else a box's class; else the
  majority of the propagated points' classes. In the ground layer only flat-ground points vote: the ground
  fills that layer under walls, cars and poles too, and in the exact truth it fills more of the voxel
  than the thing standing on it (the foot of a wall: half the voxel each, the lower id wins: the ground); A voxel holding any kept return (with or without a class) is
  never free. Everything else crossed by rays is free (17); the rest is unobserved (255).
The observed mask (semantics != 255) is what the annotation covers: voxels with a class from points or a
box, and free voxels crossed by rays. Training trusts only those (the manual group's confidence 255).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from kernels.grid import GridSpec
from occnet.classes import DYNAMIC_CLASS_IDS, FLAT_CLASS_IDS, FREE_ID, IGNORE_ID, NUM_SEMANTIC_CLASSES

from .accumulate import SweepCloud, free_space, voxel_index
from .boxes import Box3D, box_voxels


@dataclass
class PointLabelConfig:
    """How point labels and boxes become voxels (module docstring)."""

    window: int = 3  # keyframes of the scene on each side of the annotated one whose sweeps are accumulated
    sweeps: int = 9  # earlier (non-key) sweeps of each window keyframe, where the dataset has them
    propagate_radius: float = 0.4  # metres: an unlabelled point takes the nearest annotated static class within this
    ground_margin: float = 0.2  # metres: a box's lowest slice is the ground it stands on, not the object
    # metres: a return of anything but flat ground is voxelized this far behind the surface along its ray
    # (along the ray's dominant axis): a voxel that the surface only grazes holds almost no solid
    surface_depth: float = 0.1

    def __post_init__(self) -> None:
        if self.window < 0 or self.sweeps < 0:
            raise ValueError("window and sweeps must be >= 0")
        if self.propagate_radius < 0 or self.ground_margin < 0 or self.surface_depth < 0:
            raise ValueError("propagate_radius, ground_margin and surface_depth must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PointBoxLabels:
    """semantics (X, Y, Z) uint8: 0..16 occupied, 17 free, 255 not covered by the annotation; stats: counts."""

    semantics: np.ndarray
    stats: dict = field(default_factory=dict)

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
    """Points moved `depth` metres along their ray's dominant axis (into what they hit), flat ground excepted."""
    if depth == 0:
        return points
    d = points - origins
    step = depth / np.maximum(np.abs(d).max(1), 1e-9)  # per metre of ray: `depth` along the dominant axis
    return points + np.where(flat, 0.0, step)[:, None] * d


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
    layer = np.where(inside, layers[np.clip(ijk[:, 0], 0, grid.shape[0] - 1), np.clip(ijk[:, 1], 0, grid.shape[1] - 1)], -1)
    return inside & (layer >= 0) & (ijk[:, 2] <= layer)


def voxelize(own: SweepCloud, labels: np.ndarray, boxes: list[Box3D], others: list[SweepCloud], grid: GridSpec,
             cfg: PointLabelConfig) -> PointBoxLabels:
    """The annotated keyframe's labels. own: its sweep; labels (P,) uint8 Occ3D ids of its points (255: no
    label); boxes in the keyframe's ego frame; others: the window's unlabelled sweeps."""
    K = NUM_SEMANTIC_CLASSES
    nvox = grid.num_voxels
    labels = np.asarray(labels, np.uint8)
    has_cls = labels < K
    v_own, in_own = voxel_index(behind_surface(own.points, own.origin, _flat(labels), cfg.surface_depth), grid)
    own_return = np.zeros(nvox, bool)
    own_return[v_own[in_own]] = True
    ground = ground_layers(own.points, _flat(labels), grid)
    stop = _flat(labels) | ~has_cls | on_ground(own.points, ground, grid)
    free_own = free_space(own.origin, own.points, stop, grid).numpy().reshape(-1)
    box_cls, _ = box_voxels(boxes, grid, cfg.ground_margin)
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
        v, inside2 = voxel_index(behind_surface(pts, origins, _flat(cls), cfg.surface_depth), grid)
        use &= inside2
        other_return[v[use]] = True
        named = use & (cls < K) & ~(on_ground(pts, ground, grid) & ~_flat(cls))
        prop_vox, prop_cls = _majority(v[named], cls[named].astype(np.int64))
        stop = _flat(cls) | (cls >= K) | on_ground(pts, ground, grid)
        free_other = free_space(origins, pts, stop, grid).numpy().reshape(-1)
        stats |= {"other_points": int(len(pts)), "other_in_grid": int(inside.sum()), "dropped_in_boxes": int((inside & boxed).sum()),
                  "dropped_ghosts": int(ghost.sum()), "propagated": int(named.sum()), "unnamed": int((use & ~named).sum())}
    returns = own_return | other_return
    in_box = box_cls != IGNORE_ID
    free = (free_own | (free_other & ~in_box)) & ~returns
    sem = np.full(nvox, IGNORE_ID, np.uint8)
    sem[free] = FREE_ID
    sem[prop_vox] = prop_cls
    boxed_vox = in_box & ~(free_own & ~returns)
    sem[boxed_vox] = box_cls[boxed_vox]
    votes = in_own & has_cls & ~(on_ground(own.points, ground, grid) & ~_flat(labels))
    ann_vox, ann_cls = _majority(v_own[votes], labels[votes].astype(np.int64))
    sem[ann_vox] = ann_cls
    stats |= {"voxels_annotated_points": int(len(ann_vox)), "voxels_boxes": int(boxed_vox.sum()),
              "voxels_free": int((sem == FREE_ID).sum()), "voxels_observed": int((sem != IGNORE_ID).sum())}
    return PointBoxLabels(sem.reshape(grid.shape), stats)


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
