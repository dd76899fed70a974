"""Accumulated LiDAR sweeps without the ghosts of moving things (issue 23): sweep points inside the boxes of
vehicles, people and animals at the sweep's time are dropped; the keyframe sweep is never filtered."""

from __future__ import annotations

import numpy as np
import pytest

import autolabel.data.nuscenes as nuscenes_module
from autolabel.data.movers import box_members, box_pose, boxes_at, is_moving_category
from autolabel.data.nuscenes import NuScenesFrames
from autolabel.supervision.lidar_depth import lidar_depth_maps
from autolabel.synth.writer import SynthConfig, write_dataset
from tiny_models import TINY_GRID

SWEEPS = 5


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweeps")
    write_dataset(
        root,
        SynthConfig(scenes=1, frames_per_scene=2, seed=7, image_size=(112, 200), sweeps=SWEEPS),
        grid=TINY_GRID,
        progress=False,
    )
    return root


def _depth_errors(root, monkeypatch, filtered: bool, sweeps: int = SWEEPS) -> tuple[int, int]:
    """(pixels with a LiDAR depth, of them returns more than 1 m in front of the exact surface: ghosts)."""
    if not filtered:
        monkeypatch.setattr(nuscenes_module, "mover_mask", lambda points, boxes: np.zeros(len(points), bool))
    ds = NuScenesFrames(root, "v1.0-synth", sweeps=sweeps, load_images=False, grid=TINY_GRID)
    seen = ghost = 0
    for token in ds.tokens:
        f = ds.frame(token, images=False)
        depth = lidar_depth_maps(f)
        exact = np.stack([np.load(root / "labels2d" / f.scene / token / f"{c.name}.npz")["depth"] for c in f.cameras])
        has = depth > 0
        seen += int(has.sum())
        ghost += int((has & (depth < exact - 1.0)).sum())
    monkeypatch.undo()
    return seen, ghost


def test_sweeps_lose_the_ghosts_of_moving_objects(world, monkeypatch):
    # measured 2026-11-29 on this world: ghost share 2.3% from the keyframe sweeps alone (camera and LiDAR
    # times differ, parallax), 5.3% with 5 sweeps unfiltered, 3.6% filtered
    key = _depth_errors(world, monkeypatch, True, sweeps=0)
    raw = _depth_errors(world, monkeypatch, False)
    kept = _depth_errors(world, monkeypatch, True)
    assert kept[1] / kept[0] < raw[1] / raw[0] - 0.01
    assert kept[0] > 1.5 * key[0]  # the static world's sweep points stay: depth maps still densify
    assert key == _depth_errors(world, monkeypatch, False, sweeps=0)  # the keyframe sweep is never filtered


def test_boxes_move_between_keyframes(world):
    ds = NuScenesFrames(world, "v1.0-synth", load_images=False, grid=TINY_GRID)
    nusc = ds.nusc
    second = nusc.get("sample", ds.tokens[1])
    first = nusc.get("sample", second["prev"])

    def centres(sample):
        anns = [nusc.get("sample_annotation", a) for a in sample["anns"]]
        return {a["instance_token"]: np.array(a["translation"]) for a in anns if is_moving_category(a["category_name"])}

    c0, c1 = centres(first), centres(second)
    both = [i for i in c1 if i in c0 and np.linalg.norm(c1[i] - c0[i]) > 0.5]
    assert both, "the world has no object that moved between the keyframes"
    mid = (first["timestamp"] + second["timestamp"]) // 2
    boxes = boxes_at(nusc, second, mid)
    got = {tuple(np.round(b.center, 6)) for b in boxes}
    for inst in both:
        assert tuple(np.round((c0[inst] + c1[inst]) / 2, 6)) in got
    assert len(boxes_at(nusc, first, first["timestamp"])) == len(centres(first))  # the first keyframe: no prev


def test_moving_categories():
    assert all(is_moving_category(c) for c in ("vehicle.car", "vehicle.bus.rigid", "human.pedestrian.adult", "animal"))
    assert not any(
        is_moving_category(c)
        for c in ("movable_object.barrier", "static_object.bicycle_rack", "movable_object.trafficcone")
    )


def test_mover_mask_is_the_devkits(world):
    """The KD-tree path against the devkit's `points_in_box` over every point (`mover_mask_reference`): the same
    mask for boxes of any orientation, points scattered around them and on their enlarged faces and corners, and
    for the synthetic world's own sweeps and boxes."""
    from nuscenes.utils.data_classes import Box
    from pyquaternion import Quaternion

    from autolabel.data.movers import MARGIN, MoverBoxes, mover_mask, mover_mask_reference

    rng = np.random.default_rng(0)
    boxes = [
        Box(rng.uniform(-30, 30, 3), rng.uniform(0.5, 6, 3), Quaternion(rng.normal(size=4)).normalised)
        for _ in range(40)
    ]
    points = [rng.uniform(-35, 35, (20000, 3))]
    for box in boxes:  # the enlarged boxes' corners, a hair inside and outside, and points near their faces
        corners = box.corners(wlh_factor=MARGIN).T
        points += [corners, box.center + (corners - box.center) * 0.999999, box.center + (corners - box.center) * 1.01]
        points.append(box.center + rng.uniform(-0.6, 0.6, (200, 3)) * box.wlh * MARGIN)
    points = np.concatenate(points)
    want = mover_mask_reference(points, boxes)
    assert 1000 < want.sum() < len(points) - 1000
    np.testing.assert_array_equal(mover_mask(points, boxes), want)
    assert not mover_mask(points, []).any() and mover_mask(points[:0], boxes).shape == (0,)

    ds = NuScenesFrames(world, "v1.0-synth", sweeps=SWEEPS, load_images=False, grid=TINY_GRID)
    sample = ds.nusc.get("sample", ds.tokens[1])
    movers = MoverBoxes(ds.nusc, sample).at(sample["timestamp"])
    assert movers
    pts = np.concatenate([b.center + rng.uniform(-4, 4, (500, 3)) for b in movers])
    np.testing.assert_array_equal(mover_mask(pts, movers), mover_mask_reference(pts, movers))


def test_box_members_finds_each_point_s_box_above_its_floor():
    from nuscenes.utils.data_classes import Box
    from pyquaternion import Quaternion

    # a 4 m long car (x along its length), turned 90 degrees: it spans y in [8, 12], x in [-1, 1], z in [0, 1.5]
    car = Box([0.0, 10.0, 0.75], [2.0, 4.0, 1.5], Quaternion(axis=[0, 0, 1], angle=np.pi / 2))
    other = Box([5.0, 0.0, 0.75], [2.0, 4.0, 1.5], Quaternion())
    pts = np.array(
        [
            [0.0, 11.5, 1.0],  # in the car
            [1.5, 10.0, 1.0],  # beside it: inside only were the box not turned
            [0.0, 9.0, 0.1],  # the road under it (the lowest 0.2 m)
            [5.5, 0.5, 0.5],  # in the other
            [20.0, 0.0, 0.0],
        ]
    )
    assert box_members(pts, [car, other], floor=0.2).tolist() == [0, -1, -1, 1, -1]
    assert box_members(pts, [car, other], floor=0.0).tolist() == [0, -1, 0, 1, -1]
    assert box_members(pts, []).tolist() == [-1] * 5
    pose = box_pose(car)
    np.testing.assert_allclose(pose[:3, :3] @ [2.0, 0, 0] + pose[:3, 3], [0.0, 12.0, 0.75], atol=1e-12)
