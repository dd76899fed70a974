"""Points of moving things in accumulated LiDAR sweeps (issue 23).

A sweep taken before the keyframe saw cars, people and cyclists where they were then: moved into the
keyframe's frame with the ego pose, their points stand where nothing is now and would give depth maps and
free space a ghost. `mover_mask` finds them: each annotated object of a moving category (vehicles, people,
animals; the devkit's `sample_annotation` boxes in the global frame) is placed at the sweep's time by
interpolating its box between the previous keyframe and this one (centre linearly, rotation by slerp),
and a sweep point inside it (with a small margin) is a mover. The keyframe sweep itself is never filtered.
Datasets without annotations (a test split) have no boxes: nothing is dropped there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pyquaternion import Quaternion
from scipy.spatial import cKDTree

if TYPE_CHECKING:
    from nuscenes.utils.data_classes import Box

# The devkit is imported where a box is made or tested, as the frame loader imports it where it opens a dataset:
# importing any devkit module runs the package's __init__, which loads matplotlib and scikit-learn (2.6 of the
# 6.2 s `autolabel.cli` took to import on the 2-core CPU), and every process imports this module via autolabel.data.

MOVING_PREFIXES = ("vehicle.", "human.", "animal")
MARGIN = 1.1  # box size factor: points on a moving surface's edge, annotation slack


def is_moving_category(name: str) -> bool:
    return name.startswith(MOVING_PREFIXES)


def moving_boxes(nusc, sample: dict) -> dict[str, Box]:
    """instance token -> its box (global frame) at `sample`, for the moving categories."""
    from nuscenes.utils.data_classes import Box

    out = {}
    for ann_token in sample["anns"]:
        ann = nusc.get("sample_annotation", ann_token)
        if is_moving_category(ann["category_name"]):
            out[ann["instance_token"]] = Box(ann["translation"], ann["size"], Quaternion(ann["rotation"]))
    return out


class MoverBoxes:
    """The moving objects of a keyframe and of the one before it, read once; `at(t)` places them at time t
    (microseconds) in between: interpolated where an object is annotated at both, else the one annotation
    there is."""

    def __init__(self, nusc, sample: dict):
        prev = nusc.get("sample", sample["prev"]) if sample["prev"] else None
        self.now, self.before = moving_boxes(nusc, sample), (moving_boxes(nusc, prev) if prev else {})
        self.t1 = sample["timestamp"]
        self.t0 = prev["timestamp"] if prev else self.t1

    def at(self, timestamp: int) -> list[Box]:
        """The moving objects' boxes (global frame) at `timestamp`."""
        from nuscenes.utils.data_classes import Box

        span = self.t1 - self.t0
        a = 1.0 if span == 0 else float(np.clip((timestamp - self.t0) / span, 0.0, 1.0))
        out = []
        for inst in sorted(set(self.now) | set(self.before)):
            b0, b1 = self.before.get(inst), self.now.get(inst)
            if b0 is None or b1 is None:
                out.append(b0 or b1)
                continue
            centre = (1 - a) * b0.center + a * b1.center
            out.append(Box(centre, b1.wlh, Quaternion.slerp(b0.orientation, b1.orientation, a)))
        return out


def boxes_at(nusc, sample: dict, timestamp: int) -> list[Box]:
    """The moving objects' boxes (global frame) at `timestamp` between the previous keyframe and `sample`."""
    return MoverBoxes(nusc, sample).at(timestamp)


def mover_mask(points_global: np.ndarray, boxes: list[Box]) -> np.ndarray:
    """(P,) bool: the points (P, 3) global frame that lie inside any of `boxes` (enlarged by MARGIN).

    The devkit's `points_in_box` on every point for every box took 22 ms for a sweep of 35k points and 70
    moving objects (0.2 s of every keyframe read with 9 earlier sweeps, in the cache write, fusion and
    labelling); `box_members` finds the few candidates of each box in a KD-tree first: 5 ms, and the devkit's
    mask bit for bit (`mover_mask_reference`, tested)."""
    return box_members(points_global, boxes, wlh_factor=MARGIN) >= 0


def box_pose(box: Box) -> np.ndarray:
    """(4, 4) float64: the box's frame (centre, rotation) -> the frame its box is given in."""
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = box.rotation_matrix, box.center
    return pose


def box_members(points_global: np.ndarray, boxes: list[Box], floor: float = 0.0, wlh_factor: float = 1.0) -> np.ndarray:
    """(P,) int64: the index in `boxes` (scaled by `wlh_factor`) of the box each point (P, 3) global frame lies
    in, -1 for none, the first where boxes overlap. Points in a box's lowest `floor` metres are left out: a box
    stands on the ground, and the road's returns under a car are not the car's. The devkit's `points_in_box`
    decides, on the points a KD-tree finds within each box's circumscribed sphere."""
    from nuscenes.utils.geometry_utils import points_in_box

    member = np.full(len(points_global), -1, np.int64)
    if not boxes or not len(points_global):
        return member
    centres = np.array([box.center for box in boxes])
    radii = np.array([np.linalg.norm(box.wlh) * wlh_factor / 2 for box in boxes]) * (1 + 1e-6) + 1e-6
    # a quick tree (unbalanced, big leaves): built once per sweep for a few dozen queries
    tree = cKDTree(points_global, leafsize=64, balanced_tree=False, compact_nodes=False)
    for b, (box, idx) in enumerate(zip(boxes, tree.query_ball_point(centres, radii))):
        if not idx:
            continue
        idx = np.asarray(idx)
        idx = idx[(member[idx] < 0) & points_in_box(box, points_global[idx].T, wlh_factor=wlh_factor)]
        if floor > 0:
            height = (points_global[idx] - box.center) @ box.rotation_matrix[:, 2]  # along the box's up axis
            idx = idx[height >= floor - wlh_factor * box.wlh[2] / 2]
        member[idx] = b
    return member


def mover_mask_reference(points_global: np.ndarray, boxes: list[Box]) -> np.ndarray:
    """`mover_mask` as the devkit gives it: every point against every box."""
    from nuscenes.utils.geometry_utils import points_in_box

    inside = np.zeros(len(points_global), bool)
    for box in boxes:
        inside |= points_in_box(box, points_global.T, wlh_factor=MARGIN)
    return inside
