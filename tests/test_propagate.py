"""Manual labels carried to the other keyframes of their scene (rounds.propagate, issue 21)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autolabel.active.propagate import PropagatedLabels, carried_classes, carry
from autolabel.data.nuscenes import NuScenesFrames
from autolabel.data.occ3d import Occ3DLabels
from autolabel.recipe import RoundsConfig
from kernels.grid import GridSpec
from occnet.classes import DYNAMIC_CLASS_IDS, FREE_ID, class_id
from tiny_models import TINY_GRID

GRID = GridSpec(range_min=(-2, -2, -1), range_max=(2, 2, 0.6), voxel_size=0.4)  # 10 x 10 x 4


def _source(rng) -> Occ3DLabels:
    sem = rng.integers(0, 18, GRID.shape).astype(np.uint8)
    cam = (rng.random(GRID.shape) < 0.8).astype(np.uint8)
    return Occ3DLabels(sem, cam, cam)


def test_carry_moves_static_labels_through_the_poses():
    """Identity poses: exactly the source's observed static voxels (free too with static_free; never a mover
    or `others`). The target one voxel further along x: the same labels one index lower."""
    rng = np.random.default_rng(0)
    src = _source(rng)
    eye = np.eye(4)
    for free in (False, True):
        sem, mask = carry(src, eye, eye, GRID, carried_classes(free))
        want = src.mask_camera.astype(bool) & ~np.isin(src.semantics, (*DYNAMIC_CLASS_IDS, class_id("others")))
        if not free:
            want &= src.semantics != FREE_ID
        np.testing.assert_array_equal(mask, want)
        np.testing.assert_array_equal(sem[mask], src.semantics[mask])
    ahead = np.eye(4)
    ahead[0, 3] = 0.4  # the target's ego stands one voxel further along x (global x = target x + 0.4)
    sem, mask = carry(src, eye, ahead, GRID, carried_classes(True))
    base_sem, base_mask = carry(src, eye, eye, GRID, carried_classes(True))
    np.testing.assert_array_equal(mask[:-1], base_mask[1:])
    np.testing.assert_array_equal(sem[:-1][mask[:-1]], base_sem[1:][mask[:-1]])
    assert not mask[-1].any()  # the last x slice lies outside the source's grid


def test_a_region_label_carries_only_its_annotated_voxels():
    rng = np.random.default_rng(1)
    src = _source(rng)
    annotated = np.zeros(GRID.shape, np.uint8)
    annotated[:5] = 1
    region = Occ3DLabels(src.semantics, src.mask_lidar, src.mask_camera, mask_annotated=annotated)
    _, mask = carry(region, np.eye(4), np.eye(4), GRID, carried_classes(True))
    assert mask[:5].any() and not mask[5:].any()


@pytest.fixture(scope="module")
def world(pool_world):
    """conftest's 2 x 3 world (a session fixture most workers have built already)."""
    return NuScenesFrames(pool_world, "v1.0-synth", load_images=False, grid=TINY_GRID)


def test_propagated_labels_are_right_where_they_reach(world):
    """One annotated keyframe (its exact labels) in the first scene: the scene's other keyframes get partial
    labels that agree with their own exact labels (within mask_camera) on almost every carried voxel; the other
    scene gets none; the annotated keyframe its own labels; iteration and length count what was annotated."""
    scene0 = [t for t in world.tokens if world.scene_of(t) == world.scene_names[0]]
    other = [t for t in world.tokens if t not in scene0]
    manual = {scene0[0]: world.meta(scene0[0]).gt}
    labels = PropagatedLabels(manual, world, TINY_GRID, "static_free")
    assert labels[scene0[0]] is manual[scene0[0]]
    assert list(labels) == [scene0[0]] and len(labels) == 1
    with pytest.raises(KeyError):
        labels[other[0]]
    assert labels.get(other[0]) is None
    for token in scene0[1:]:
        lab, gt = labels[token], world.meta(token).gt
        got = lab.mask_annotated.astype(bool) & gt.mask_camera.astype(bool)
        assert got.sum() > 0.3 * gt.mask_camera.sum()  # most of what the camera sees
        assert (lab.semantics[got] == gt.semantics[got]).mean() > 0.97
        np.testing.assert_array_equal(lab.mask_camera, lab.mask_annotated)
    static = PropagatedLabels(manual, world, TINY_GRID, "static")[scene0[1]]
    assert not (static.semantics[static.mask_annotated.astype(bool)] == FREE_ID).any()


def test_the_recipe_names_the_modes():
    assert RoundsConfig(propagate="static_free").propagate == "static_free"
    with pytest.raises(ValueError, match="rounds.propagate must be one of"):
        RoundsConfig(propagate="everything")
    with pytest.raises(ValueError, match="mode must be one of"):
        PropagatedLabels({}, None, GRID, "none")


@pytest.mark.parametrize("grid", [GRID, GridSpec()], ids=["small", "nuscenes"])
def test_the_voxel_lookup_is_the_metric_one(grid):
    """carry's lattice of voxel coordinates finds, for every target voxel, the source voxel that holds the target
    voxel's metric centre moved through the poses in float64 (`GridSpec` world <-> index), on a small grid and
    on the Occ3D-nuScenes one (200 x 200 x 16, the lattice's sums over 200 steps)."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(2)
    span = np.asarray(grid.range_max) - np.asarray(grid.range_min)
    for _ in range(5):
        poses = []
        for _ in range(2):
            pose = np.eye(4)
            pose[:3, :3] = Rotation.from_euler("z", rng.uniform(-3, 3)).as_matrix()
            pose[:3, 3] = rng.uniform(-0.4, 0.4, 3) * span * [1, 1, 0.1]
            poses.append(pose)
        ids = np.arange(grid.num_voxels).reshape(grid.shape)
        src = Occ3DLabels((ids % 17).astype(np.uint8), np.ones(grid.shape, np.uint8), (ids % 5 > 0).astype(np.uint8))
        sem, mask = carry(src, poses[0], poses[1], grid, carried_classes(True) | True)
        metric = grid.index_to_world(np.argwhere(np.ones(grid.shape, bool)))
        moved = metric @ (np.linalg.inv(poses[0]) @ poses[1])[:3, :3].T + (np.linalg.inv(poses[0]) @ poses[1])[:3, 3]
        idx = grid.world_to_index(moved)
        inside = grid.contains_index(idx)
        seen = np.zeros(len(idx), bool)
        seen[inside] = src.mask_camera[tuple(idx[inside].T)].astype(bool)  # only observed source voxels carry
        assert 0 < seen.sum() < inside.sum()
        np.testing.assert_array_equal(mask.reshape(-1), seen)
        want = src.semantics[tuple(idx[seen].T)]
        np.testing.assert_array_equal(sem.reshape(-1)[seen], want)


def test_training_reads_the_carried_labels(tiny_world, tmp_path, monkeypatch):
    """The train stage with rounds.propagate hands training the carried labels beside the manual ones (whose
    frames alone set the labelled share of batches and the counts); a dataset item of a keyframe that only
    carried labels reach is a partial label: its 3D loss counts the carried voxels, the teacher the rest."""
    from tiny_models import write_recipe

    from autolabel.network_input import FrameDataset
    from autolabel.recipe import load_recipe
    from autolabel.stages import steps

    frames = NuScenesFrames(tiny_world, "v1.0-synth", grid=TINY_GRID)
    first, second = frames.tokens
    manual = {first: frames.meta(first).gt}
    recipe = load_recipe(write_recipe(tmp_path, tiny_world), ["rounds.propagate=static_free"])
    got: dict = {}
    monkeypatch.setattr(steps, "round_manual_labels", lambda r, k: manual)
    monkeypatch.setattr(steps, "open_cache", lambda r: None)
    fused = object()  # the run's fused labels: carried free space never clears what they see occupied
    monkeypatch.setattr(steps, "fused_labels", lambda r, training: fused)
    monkeypatch.setattr(steps, "train_round", lambda *a, **kw: got.update(kw) or {})
    steps.train(recipe, 1)
    assert got["manual"] is manual and isinstance(got["labels3d"], PropagatedLabels)
    assert got["labels3d"].now is fused and got["fused"] is fused
    got["labels3d"].now = None  # the stand-in has nothing to read

    item = FrameDataset(frames, (64, 112), labels="exact", indices=[1], manual=got["labels3d"])[0]
    carried = got["labels3d"][second].mask_annotated
    assert item["has_gt"] and 0 < int(item["gt_annotated"].sum()) == int(carried.sum()) < carried.size
    assert not item["gt_mask"][~torch.from_numpy(carried.astype(bool))].any()

    recipe = load_recipe(write_recipe(tmp_path, tiny_world))  # the default: manual labels alone
    steps.train(recipe, 1)
    assert got["labels3d"] is None


def _pseudo_store(world, tmp_path):
    """A label store whose round 0 holds the same pseudo-labels for every keyframe of `world` (manmade, free in
    the upper half; confidence 1 or 100): (the store, the pseudo-labels)."""
    from autolabel.store.labels import LabelStore

    tokens = list(world.tokens)
    store = LabelStore(tmp_path / "labels.zarr", TINY_GRID, create=True)
    rnd = store.create_round(0, tokens, [world.scene_of(t) for t in tokens], {"labeller": "test"})
    pseudo = np.full(TINY_GRID.shape, class_id("manmade"), np.uint8)
    pseudo[..., TINY_GRID.shape[2] // 2 :] = FREE_ID
    conf = np.where(np.arange(TINY_GRID.num_voxels).reshape(TINY_GRID.shape) % 2 == 0, 1, 100).astype(np.uint8)
    ones = np.ones(TINY_GRID.shape, np.uint8)
    for i in range(len(tokens)):
        rnd.write(i, semantics=pseudo, confidence=conf, mask_camera=ones, mask_lidar=ones)
    return store, pseudo


def _annotate(store, world, token, tiles=None):
    """Ingest `token`'s exact labels into the store's manual labels: the whole keyframe, or only `tiles` ((X,
    Y, Z) bool, a region-level label)."""
    tokens = list(world.tokens)
    gt = world.meta(token).gt
    man = store.manual(tokens, [world.scene_of(t) for t in tokens], create=True)
    ann = np.ones(TINY_GRID.shape, bool) if tiles is None else tiles
    man.write(
        tokens.index(token),
        semantics=gt.semantics,
        mask_lidar=gt.mask_lidar,
        mask_camera=gt.mask_camera,
        confidence=np.where(ann, 255, 0).astype(np.uint8),
    )


def _half_tiles() -> np.ndarray:
    tiles = np.zeros(TINY_GRID.shape, bool)
    tiles[: TINY_GRID.shape[0] // 2] = True
    return tiles


def test_a_region_keyframe_takes_what_the_others_carry_outside_its_tiles(world):
    """A keyframe with region-level labels keeps its tiles and takes what the scene's other annotated keyframe
    carries everywhere else (it used to get its tiles alone); a keyframe annotated whole keeps its own labels."""
    scene0 = [t for t in world.tokens if world.scene_of(t) == world.scene_names[0]]
    tiles = _half_tiles()
    gt1 = world.meta(scene0[1]).gt
    region = Occ3DLabels(gt1.semantics, gt1.mask_lidar, gt1.mask_camera, mask_annotated=tiles.astype(np.uint8))
    manual = {scene0[0]: world.meta(scene0[0]).gt, scene0[1]: region}
    labels = PropagatedLabels(manual, world, TINY_GRID, "static_free")
    assert labels[scene0[0]] is manual[scene0[0]]
    lab = labels[scene0[1]]
    alone = PropagatedLabels({scene0[0]: manual[scene0[0]]}, world, TINY_GRID, "static_free")[scene0[1]]
    fill = alone.mask_annotated.astype(bool) & ~tiles
    assert fill.any()
    np.testing.assert_array_equal(lab.mask_annotated.astype(bool), tiles | fill)
    np.testing.assert_array_equal(lab.semantics[tiles], gt1.semantics[tiles])
    np.testing.assert_array_equal(lab.semantics[fill], alone.semantics[fill])
    np.testing.assert_array_equal(lab.mask_camera[tiles], gt1.mask_camera[tiles])
    assert lab.mask_camera[fill].all()
    # alone in its scene, a region keyframe has its own labels
    assert PropagatedLabels({scene0[1]: region}, world, TINY_GRID, "static_free")[scene0[1]] is region


def test_carried_free_space_never_clears_what_the_fused_labels_see_occupied(world, tmp_path):
    """With `now` (training passes the fused labels), a carried free voxel where those say occupied is not
    carried; where they say free or saw nothing (255) it is, and carried classes always are."""
    scene0 = [t for t in world.tokens if world.scene_of(t) == world.scene_names[0]]
    store, pseudo = _pseudo_store(world, tmp_path)
    now = store.round(0)
    i = now.index(scene0[1])
    fused = pseudo.copy()
    fused[1::3] = 255  # unobserved slices
    ones = np.ones(TINY_GRID.shape, np.uint8)
    now.write(i, semantics=fused, confidence=now.read(i, "confidence"), mask_camera=ones, mask_lidar=ones)
    manual = {scene0[0]: world.meta(scene0[0]).gt}
    plain = PropagatedLabels(manual, world, TINY_GRID, "static_free")[scene0[1]]
    kept = PropagatedLabels(manual, world, TINY_GRID, "static_free", now=now)[scene0[1]]
    occupied = (fused != FREE_ID) & (fused != 255)
    carried = plain.mask_annotated.astype(bool)
    want = carried & ((plain.semantics != FREE_ID) | ~occupied)
    assert (carried & ~want).any() and (want & (plain.semantics == FREE_ID)).any()
    np.testing.assert_array_equal(kept.mask_annotated.astype(bool), want)
    np.testing.assert_array_equal(kept.semantics[want], plain.semantics[want])


def test_the_export_writes_carried_labels_over_the_pseudo_labels(world, tmp_path):
    """A round's export with the carried labels: the annotated keyframe holds its manual labels, the other
    keyframes of its scene the carried classes where they reach (label_source 'carried', mask_annotated the
    carried voxels, confident there whatever the thresholds) and the pseudo-labels elsewhere; the other scene
    keeps its pseudo-labels. Without `carried` nothing changes from before."""
    from autolabel.data.occ3d import labels_path, read_labels
    from autolabel.store.export import export_occ3d
    from autolabel.store.manual import manual_labels

    tokens = list(world.tokens)
    scene0 = [t for t in tokens if world.scene_of(t) == world.scene_names[0]]
    store, pseudo = _pseudo_store(world, tmp_path)
    _annotate(store, world, scene0[0])
    carried = PropagatedLabels(manual_labels(store.path, TINY_GRID), world, TINY_GRID, "static_free")

    s = export_occ3d(store, 0, tmp_path / "out", 0.6, progress=False, carried=carried)
    assert s["frames_manual"] == 1 and s["frames_carried"] == len(scene0) - 1 == len(s["carried_tokens"])
    assert s["frames_pseudo"] == len(tokens) - len(scene0)
    read = {t: read_labels(labels_path(tmp_path / "out", world.scene_of(t), t), TINY_GRID) for t in tokens}
    assert read[scene0[0]].source == "manual"
    for t in scene0[1:]:
        lab, want = read[t], carried[t]
        # carried classes replace the pseudo-labels; carried free never clears an occupied pseudo-label
        on = want.mask_annotated.astype(bool) & ((want.semantics != FREE_ID) | (pseudo == FREE_ID))
        assert lab.source == "carried" and 0 < on.sum() < want.mask_annotated.sum()
        np.testing.assert_array_equal(lab.mask_annotated, on)
        np.testing.assert_array_equal(lab.semantics[on], want.semantics[on])
        np.testing.assert_array_equal(lab.semantics[~on], pseudo[~on])
        assert lab.mask_confident[on].all()
        assert not lab.mask_confident[~on].all()  # the thresholds still drop pseudo-labels
    assert all(read[t].source == "pseudo" and read[t].mask_annotated is None for t in tokens if t not in scene0)

    plain = export_occ3d(store, 0, tmp_path / "plain", 0.6, progress=False)
    assert plain["frames_carried"] == 0 and plain["frames_pseudo"] == len(tokens) - 1


def test_the_export_carries_into_a_region_keyframe_outside_its_tiles(world, tmp_path):
    """A keyframe with region-level labels in a scene with another annotated keyframe: its tiles hold the
    annotator's labels, the rest what the other carries there (by the export's free-space rule, confident,
    in mask_annotated) and the pseudo-labels elsewhere; without `carried` its tiles alone (as before)."""
    from autolabel.data.occ3d import labels_path, read_labels
    from autolabel.store.export import export_occ3d
    from autolabel.store.manual import manual_labels

    scene0 = [t for t in world.tokens if world.scene_of(t) == world.scene_names[0]]
    store, pseudo = _pseudo_store(world, tmp_path)
    tiles = _half_tiles()
    _annotate(store, world, scene0[0])
    _annotate(store, world, scene0[1], tiles)
    carried = PropagatedLabels(manual_labels(store.path, TINY_GRID), world, TINY_GRID, "static_free")
    alone = PropagatedLabels({scene0[0]: world.meta(scene0[0]).gt}, world, TINY_GRID, "static_free")[scene0[1]]
    fill = alone.mask_annotated.astype(bool) & ~tiles & ((alone.semantics != FREE_ID) | (pseudo == FREE_ID))
    assert fill.any()
    gt1 = world.meta(scene0[1]).gt
    for out, want in (("with", fill), ("without", np.zeros_like(fill))):
        s = export_occ3d(store, 0, tmp_path / out, 0.6, progress=False, carried=carried if out == "with" else None)
        assert s["region_tokens"] == [scene0[1]]
        lab = read_labels(labels_path(tmp_path / out, world.scene_of(scene0[1]), scene0[1]), TINY_GRID)
        assert lab.source == "region"
        np.testing.assert_array_equal(lab.mask_annotated.astype(bool), tiles | want)
        np.testing.assert_array_equal(lab.semantics[tiles], gt1.semantics[tiles])
        np.testing.assert_array_equal(lab.semantics[want], alone.semantics[want])
        rest = ~tiles & ~want
        np.testing.assert_array_equal(lab.semantics[rest], pseudo[rest])
        assert lab.mask_confident[tiles | want].all()


def test_the_export_stage_carries_as_the_recipe_says(tiny_world, tmp_path, monkeypatch):
    from tiny_models import write_recipe

    from autolabel.recipe import load_recipe
    from autolabel.stages import steps

    frames = NuScenesFrames(tiny_world, "v1.0-synth", grid=TINY_GRID)
    manual = {frames.tokens[0]: frames.meta(frames.tokens[0]).gt}
    got: dict = {}
    monkeypatch.setattr(steps, "manual_labels", lambda path, grid: manual)
    monkeypatch.setattr(steps, "LabelStore", type("S", (), {"open": staticmethod(lambda path: None)}))
    monkeypatch.setattr(steps, "export_occ3d", lambda *a, **kw: got.update(kw) or {"frames": 2})
    steps.export(load_recipe(write_recipe(tmp_path, tiny_world)), 0)  # the default: static_free
    assert isinstance(got["carried"], PropagatedLabels) and got["carried"].manual is manual
    assert got["carried"].carried[FREE_ID]
    steps.export(load_recipe(write_recipe(tmp_path, tiny_world), ["rounds.export_propagate=static"]), 0)
    assert not got["carried"].carried[FREE_ID]
    steps.export(load_recipe(write_recipe(tmp_path, tiny_world), ["rounds.export_propagate=none"]), 0)
    assert got["carried"] is None
    with pytest.raises(ValueError, match="rounds.export_propagate must be one of"):
        RoundsConfig(export_propagate="everything")
