"""The synthetic world: loadable nuScenes layout, geometry that agrees with itself, exact ground truth."""

from __future__ import annotations

import json
import multiprocessing

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from autolabel.cli import main
from autolabel.data.nuscenes import NuScenesFrames
from autolabel.supervision.lidar_depth import project_points
from autolabel.synth.primitives import contains
from autolabel.synth.truth import visible_voxels, voxelize
from autolabel.synth.world import C, generate_world
import autolabel.synth.writer as writer_module
from autolabel.synth.writer import SynthConfig, write_dataset
from kernels.grid import GridSpec
from occnet.classes import FREE_ID

VERSION = "v1.0-synth"
CFG = SynthConfig(scenes=1, frames_per_scene=2, seed=7, image_size=(112, 200), sweeps=1)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, CFG, progress=False)
    return root


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_devkit_and_frame_loader_read_it(synth_root):
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(VERSION, str(synth_root), verbose=False)
    assert len(nusc.sample) == 2 and len(nusc.scene) == 1
    assert len(nusc.sample_annotation) > 10 and len(nusc.instance) > 5
    assert {c["name"] for c in nusc.category} >= {"vehicle.car", "human.pedestrian.adult"}
    first = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    assert first["next"] and nusc.get("sample", first["next"])["prev"] == first["token"]
    ds = NuScenesFrames(synth_root, VERSION, sweeps=1)
    frame = ds[1]
    assert frame.gt is not None and frame.gt.semantics.shape == (200, 200, 16)
    assert all(c.image.shape == (112, 200, 3) for c in frame.cameras)
    assert (frame.lidar.time_lag > 0).any()  # the sweep was accumulated
    assert frame.lidar.points[:, 4].max() == 31  # 32 rings


def test_lidar_agrees_with_rendered_depth(synth_root):
    """Lidar points projected into the cameras land on the exact depth maps (unoccluded points)."""
    ds = NuScenesFrames(synth_root, VERSION)
    errors = []
    for frame in ds:
        for cam in frame.cameras:
            with np.load(synth_root / "labels2d" / frame.scene / frame.token / f"{cam.name}.npz") as z:
                exact = z["depth"]
            uv, depth, _ = project_points(frame.lidar, cam, min_depth=1.0)
            px = np.floor(uv).astype(int)
            d_map = exact[px[:, 1], px[:, 0]]
            seen = (d_map > 0) & (depth < d_map + 0.5)  # not hidden behind something nearer in the image
            errors.append(np.abs(depth[seen] - d_map[seen]))
    err = np.concatenate(errors)
    assert len(err) > 500
    assert np.median(err) < 0.05


def test_voxels_agree_with_primitives():
    world = generate_world(3)
    grid = GridSpec()
    pose = world.ego_pose(0.0)
    prims = world.primitives_at(0.0)
    sem = voxelize(world, prims, pose, grid)
    world2ego = np.linalg.inv(pose)
    checked = 0
    for i in range(len(prims)):
        centre = prims.params[i, :3].copy()
        if prims.kind[i] == 1:  # cylinder: params are cx, cy, z0, z1
            centre[2] = (prims.params[i, 2] + prims.params[i, 3]) / 2
        ego = world2ego[:3, :3] @ centre + world2ego[:3, 3]
        idx = grid.world_to_index(ego)
        if not grid.contains_index(idx):
            continue
        # the voxel holding the primitive's centre is occupied (by it or by a solid that fills more of it)
        assert sem[tuple(idx)] != FREE_ID
        # a voxel whose every sample lies inside this primitive alone takes its class
        pts = grid.index_to_world(idx) + (
            np.stack(np.meshgrid(*[[-0.13, 0, 0.13]] * 3, indexing="ij"), -1).reshape(-1, 3)
        )
        world_pts = pts @ pose[:3, :3].T + pose[:3, 3]
        others = [
            j for j in range(len(prims)) if j != i and contains(int(prims.kind[j]), prims.params[j], world_pts).any()
        ]
        if (
            contains(int(prims.kind[i]), prims.params[i], world_pts).all()
            and not others
            and world_pts[:, 2].min() > 0.01
        ):
            assert sem[tuple(idx)] == prims.cls[i]
            checked += 1
    assert checked > 20
    # the road under the ego is driveable surface (z layer holding the ground), the air above is free
    ego_idx = grid.world_to_index(np.array([0.0, 0.0, -0.1]))
    assert sem[tuple(ego_idx)] == C["driveable_surface"]
    assert sem[tuple(grid.world_to_index(np.array([0.0, 0.0, 1.0])))] == FREE_ID


def _slow_visible(occupied, origin, direction, grid, step=0.002):
    """Independent reference: march in tiny steps, collecting voxels until the first occupied one."""
    seen = set()
    lo, hi = np.array(grid.range_min), np.array(grid.range_max)
    t = 0.0
    while t < 200:
        p = origin + t * direction
        if np.all(p >= lo) and np.all(p < hi):
            idx = tuple(grid.world_to_index(p))
            seen.add(idx)
            if occupied[idx]:
                break
        elif seen:
            break
        t += step
    return seen


def test_visibility_matches_a_slow_ray_march():
    grid = GridSpec(range_min=(-8, -8, -1), range_max=(8, 8, 3), voxel_size=0.4)
    rng = np.random.default_rng(0)
    occupied = rng.random(grid.shape) < 0.03
    origin = np.array([0.13, -0.27, 1.1])
    dirs = rng.normal(size=(12, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    for d in dirs:
        fast = visible_voxels(occupied, origin, d[None], grid)
        slow = _slow_visible(occupied, origin, d, grid)
        got = set(map(tuple, np.argwhere(fast)))
        # the slow march can only miss voxels that a ray clips for less than its step
        assert slow <= got and len(got - slow) <= 1


def test_masks_are_consistent(synth_root):
    frame = NuScenesFrames(synth_root, VERSION)[0]
    gt = frame.gt
    assert gt.mask_camera.sum() > 1000 and gt.mask_lidar.sum() > 1000
    occ = gt.semantics != FREE_ID
    # every visible occupied voxel is a first hit: something visible and occupied exists
    assert (occ & (gt.mask_camera > 0)).sum() > 100
    classes = set(np.unique(gt.semantics[gt.mask_camera > 0]).tolist())
    assert {C["driveable_surface"], C["manmade"], FREE_ID} <= classes or {C["driveable_surface"], FREE_ID} <= classes


def test_same_seed_same_bytes_other_seed_differs(synth_root, tmp_path):
    again = tmp_path / "again"
    write_dataset(again, CFG, progress=False)
    assert _digest(again) == _digest(synth_root)
    other = tmp_path / "other"
    write_dataset(other, SynthConfig(scenes=1, frames_per_scene=1, seed=8, image_size=(112, 200)), progress=False)
    a = next((synth_root / "samples" / "CAM_FRONT").iterdir()).read_bytes()
    b = next((other / "samples" / "CAM_FRONT").iterdir()).read_bytes()
    assert a != b


def test_scenes_in_worker_processes_give_the_same_bytes(tmp_path):
    cfg = SynthConfig(scenes=2, frames_per_scene=1, seed=3, image_size=(48, 80))
    write_dataset(tmp_path / "one", cfg, progress=False)
    write_dataset(tmp_path / "two", cfg, progress=False, workers=2)
    assert _digest(tmp_path / "two") == _digest(tmp_path / "one")
    assert len(json.loads((tmp_path / "two" / cfg.version / "scene.json").read_text())) == 2


def test_scene_workers_run_one_thread_each():
    """The scene pool's initializer leaves each worker one thread, torch's and NumPy's BLAS's alike (the BLAS
    pool otherwise has one thread per core: 2 on the CI machine, 16 on the GPU machine, in every worker)."""
    with multiprocessing.get_context("spawn").Pool(1, initializer=writer_module._one_thread) as pool:
        assert pool.apply(torch.get_num_threads) == 1
        pools = pool.apply(threadpool_info)
    assert any(p["user_api"] == "blas" for p in pools)
    assert all(p["num_threads"] == 1 for p in pools)


def test_noisy_labels_differ_from_exact_but_mostly_agree(synth_root):
    """The default (noisy) maps mostly agree with the exact ones; the hard maps agree less."""
    agree, total = {"noisy": 0, "hard": 0}, {"noisy": 0, "hard": 0}
    for f in sorted((synth_root / "labels2d").rglob("*.npz")):
        with np.load(f) as z:
            for variant in agree:
                exact, noisy, conf = z["semantics"], z[f"{variant}_semantics"], z[f"{variant}_confidence"]
                both = (exact != 255) & (noisy != 255)
                agree[variant] += (exact[both] == noisy[both]).sum()
                total[variant] += both.sum()
                assert conf.dtype == np.uint8 and (conf[noisy == 255] == 0).all()
    assert 0.6 < agree["noisy"] / total["noisy"] < 1.0
    assert agree["hard"] / total["hard"] < agree["noisy"] / total["noisy"] - 0.03


def test_v1_maps_of_a_v2_world_are_the_v1_profile_s_default_maps(tmp_path):
    """The `v1` precomputed variant of a v2 world holds exactly what a world of the v1 profile gives as its
    default maps: v1 against v2 on one world is the first release's noise model against the new one."""
    cfg = SynthConfig(scenes=1, frames_per_scene=1, seed=4, image_size=(48, 80))
    write_dataset(tmp_path / "v2", cfg, progress=False)
    write_dataset(tmp_path / "v1", replace(cfg, noise_profile="v1"), progress=False)
    files = sorted((tmp_path / "v2" / "labels2d").rglob("*.npz"))
    assert files
    for f in files:
        with np.load(f) as v2, np.load(tmp_path / "v1" / f.relative_to(tmp_path / "v2")) as v1:
            assert np.array_equal(v2["v1_semantics"], v1["noisy_semantics"])
            assert np.array_equal(v2["v1_confidence"], v1["noisy_confidence"])
            assert not np.array_equal(v2["noisy_semantics"], v1["noisy_semantics"])


def test_cli_synth_with_preview(tmp_path, capsys):
    out = tmp_path / "w"
    assert (
        main(["synth", str(out), "--scenes", "1", "--frames-per-scene", "1", "--image-size", "64x112", "--preview"])
        == 0
    )
    assert "wrote 1 frames" in capsys.readouterr().out
    from PIL import Image

    im = Image.open(out / "preview.png")
    assert im.size[0] > 3 * 112 and im.size[1] == 6 * 64
    assert main(["synth", str(out), "--image-size", "big"]) == 2
    assert "HEIGHTxWIDTH" in capsys.readouterr().err
    assert main(["synth", str(out), "--noise-profile", "v3"]) == 2
    assert "noise_profile must be one of v2, v1, got 'v3'" in capsys.readouterr().err


@pytest.mark.parametrize("profile", ["v1", "v2"])
def test_noise_regions_stay_bounded_for_ground_at_the_horizon(profile):
    """Ground hits near the horizon lie kilometres away; their stuff regions must not blow up the
    region count (it once tried to allocate an array indexed by cells 1e9 m away)."""
    from autolabel.synth.noise import make_noisy_labels

    rng = np.random.default_rng(0)
    sem = np.full((40, 60), C["driveable_surface"], np.uint8)
    sem[:10] = 255  # sky
    inst = np.zeros((40, 60), np.int32)
    depth = np.full((40, 60), 20.0, np.float32)
    xy = np.stack(np.meshgrid(np.linspace(0, 30, 60), np.linspace(0, 30, 40)), -1).astype(np.float32)
    xy[10:12] = 1e9  # the horizon
    xy[:10] = np.nan
    labels, conf = make_noisy_labels(profile, sem, inst, depth, xy, 0.5, rng)[:2]
    assert labels.shape == sem.shape and (labels[:10] == 255).all() and (conf[:10] == 0).all()
    assert (labels[12:] != 255).mean() > 0.5


# ---- noise model v2 ----------------------------------------------------------------------------------
def _toy_view(
    seed: int = 0,
    h: int = 120,
    w: int = 200,
    objects: int = 40,
    size: tuple[int, int] = (8, 12),
    depth_of_objects: float | None = None,
):
    """A camera-like map: sky on top, a manmade wall band, then ground (road, a sidewalk strip, terrain)
    whose depth and world xy fall towards the bottom rows, and `objects` car boxes of `size` pixels;
    returns semantics, instance, depth, world xy as the renderer gives them."""
    r = np.random.default_rng(seed)
    sem = np.full((h, w), C["driveable_surface"], np.uint8)
    sem[:, : w // 5] = C["sidewalk"]
    sem[:, -w // 6 :] = C["terrain"]
    sem[: h // 6] = 255
    sem[h // 6 : h // 3] = C["manmade"]
    inst = np.zeros((h, w), np.int32)
    inst[h // 6 : h // 3] = 1
    rows = np.linspace(80.0, 3.0, h)
    depth = np.tile(rows[:, None], (1, w)).astype(np.float32)
    xy = np.stack(np.meshgrid(np.linspace(-20, 20, w), rows), -1).astype(np.float32)
    for i in range(objects):
        y, x = r.integers(h // 3, h - size[0]), r.integers(0, w - size[1])
        sem[y : y + size[0], x : x + size[1]] = C["car"]
        inst[y : y + size[0], x : x + size[1]] = 2 + i
        if depth_of_objects is not None:
            depth[y : y + size[0], x : x + size[1]] = depth_of_objects
    depth[: h // 6] = 0
    xy[: h // 6] = np.nan
    return sem, inst, depth, xy


def _pixel_auroc(labels, conf, sem) -> float:
    from autolabel.supervision.eval2d import accumulate_confidence, histogram_auroc

    hist = np.zeros((2, 256), np.int64)
    accumulate_confidence(hist, labels, conf, sem)
    return histogram_auroc(hist)


def test_v1_profile_reproduces_the_first_release_byte_for_byte():
    """noisy_labels_v1 is the first release's model unchanged: the same rng gives the same bytes
    (hash taken from the code before noise model v2)."""
    from autolabel.synth.noise import noisy_labels_v1

    r = np.random.default_rng(11)
    h, w = 60, 100
    sem = np.full((h, w), 11, np.uint8)
    sem[:15] = 255
    sem[15:25] = 15
    sem[40:, :30] = 13
    inst = np.zeros((h, w), np.int32)
    inst[15:25] = 1
    for i in range(6):
        y, x = r.integers(20, 55), r.integers(0, 90)
        sem[y : y + 5, x : x + 8] = 4
        inst[y : y + 5, x : x + 8] = 2 + i
    depth = np.tile(np.linspace(80, 3, h)[:, None], (1, w)).astype(np.float32)
    xy = np.stack(np.meshgrid(np.linspace(-20, 20, w), np.linspace(80, 3, h)), -1).astype(np.float32)
    xy[:15] = np.nan
    depth[:15] = 0
    labels, conf = noisy_labels_v1(sem, inst, depth, xy, 0.5, np.random.default_rng(4))
    assert hashlib.sha256(labels.tobytes() + conf.tobytes()).hexdigest()[:16] == "337cba8d7d622683"


def test_v2_is_deterministic_and_level_zero_is_exact():
    from autolabel.synth.noise import noisy_labels_v2

    maps = _toy_view()
    a = noisy_labels_v2(*maps, 0.3, np.random.default_rng(1))
    b = noisy_labels_v2(*maps, 0.3, np.random.default_rng(1))
    c = noisy_labels_v2(*maps, 0.3, np.random.default_rng(2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and not np.array_equal(a[0], c[0])
    assert a[0].dtype == np.uint8 and a[1].dtype == np.uint8 and (a[1][a[0] == 255] == 0).all()
    exact, conf = noisy_labels_v2(*maps, 0.0, np.random.default_rng(1))[:2]
    np.testing.assert_array_equal(exact, maps[0])
    assert (conf[exact != 255] > 0).all()


@pytest.mark.parametrize("target", [0.5, 0.65, 0.8])
def test_v2_confidence_auroc_tracks_its_one_parameter(target):
    """Confidence comes from the simulated classifier's belief plus score noise; the noise scale is set so
    that the pixel AUROC (confidence vs correctness) is the parameter: 0.5 = confidence says nothing.
    The noise-free belief is the ceiling of the parameter; with naming errors only (no merges, spills or
    boundary moves, which the classifier cannot see) it lies at 0.87-0.9 on this view."""
    from autolabel.synth.noise import NoiseRates, noisy_labels_v2

    rates = replace(NoiseRates(), confidence_auroc=target, merge=0, spill=0, boundary=0)
    got = []
    for seed in range(3):
        maps = _toy_view(seed, objects=60)
        labels, conf = noisy_labels_v2(*maps, 0.3, np.random.default_rng(seed), rates)[:2]
        got.append(_pixel_auroc(labels, conf, maps[0]))
    assert np.mean(got) == pytest.approx(target, abs=0.03), got
    # per image too, within what a few dozen wrong masks allow: the score noise alone separates them by
    # chance a little (0.56 at most here), so 0.5 is not always exactly reachable
    assert all(abs(g - target) < 0.07 for g in got), got


def _grow_reference(mask, valid, name_x, k_x):
    """noise._grow as it was first written: every step works on whole images (the box around the
    growing masks), the direct reading of its rule. The test below holds the fast form to it."""
    from autolabel.synth.noise import _shift

    m = len(k_x) - 1
    mask = mask.copy()
    for i in range(1, int(k_x.max()) + 1):  # one pixel per step, in 4 directions
        grow = k_x >= i
        rows, cols = np.flatnonzero(grow[mask].any(1)), np.flatnonzero(grow[mask].any(0))
        if len(rows) == 0:
            break
        win = np.s_[max(rows[0] - 1, 0) : rows[-1] + 2, max(cols[0] - 1, 0) : cols[-1] + 2]
        sub, v = mask[win], valid[win]
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            nb = _shift(sub, dy, dx, m)
            take = v & grow[nb] & (name_x[nb] != name_x[sub])
            sub = np.where(take, nb, sub)
        mask[win] = sub
    return mask


def test_v2_mask_growth_matches_the_whole_image_reference(monkeypatch):
    """noise._grow works on the masks' borders only; it must give the bytes of the whole-image loop, on
    camera-like views up to level 1 (spills grow a dozen steps, growing masks meet and push each other)
    and on random masks that touch the image's edges, share names, or are unnamed."""
    from autolabel.synth import noise

    fast = []
    for seed, level in [(0, 0.3), (1, 0.6), (2, 1.0), (3, 1.0)]:
        maps = _toy_view(seed, h=100, w=320, objects=50)
        fast.append(noise.noisy_labels_v2(*maps, level, np.random.default_rng(seed))[:2])
    r = np.random.default_rng(0)
    for _ in range(20):
        m = int(r.integers(2, 30))
        blocks = r.integers(0, m + 1, (8, 12))  # m: no mask
        mask = np.kron(blocks, np.ones((5, 5), np.int64))[: r.integers(20, 41), : r.integers(20, 61)]
        mask = mask.astype(np.int32)
        valid = mask < m
        name_x = np.r_[r.choice(np.array([1, 2, 3, 255], np.uint8), m), 255].astype(np.uint8)
        k_x = np.r_[r.integers(0, 8, m) * (r.random(m) < 0.7), 0]
        got = noise._grow(mask.copy(), valid, name_x, k_x)
        np.testing.assert_array_equal(got, _grow_reference(mask, valid, name_x, k_x))
    monkeypatch.setattr(noise, "_grow", _grow_reference)
    for (seed, level), (labels, conf) in zip([(0, 0.3), (1, 0.6), (2, 1.0), (3, 1.0)], fast):
        maps = _toy_view(seed, h=100, w=320, objects=50)
        ref_labels, ref_conf = noise.noisy_labels_v2(*maps, level, np.random.default_rng(seed))[:2]
        np.testing.assert_array_equal(labels, ref_labels)
        np.testing.assert_array_equal(conf, ref_conf)


def test_v2_confidence_of_right_and_wrong_pixels_overlaps():
    """v1 drew confidence from correctness (right U[0.7, 1], renamed U[0.35, 0.8]); v2's right and wrong
    pixels share the same range of confidences."""
    from autolabel.synth.noise import noisy_labels_v2

    maps = _toy_view(3, objects=60)
    labels, conf = noisy_labels_v2(*maps, 0.5, np.random.default_rng(3))[:2]
    named = (labels != 255) & (maps[0] != 255)
    right, wrong = conf[named & (labels == maps[0])], conf[named & (labels != maps[0])]
    assert len(wrong) > 100
    assert np.quantile(wrong, 0.75) > np.quantile(right, 0.25)


def test_v2_runner_ups_are_the_classifier_s_next_names_and_share_what_its_confidence_leaves():
    """The runner-ups are other classes than the name, none where the name is none, their confidences and the
    name's sum to at most 1, and where the name is wrong they hold the true class far more often than two
    random other classes would (2/16); the exact maps (level 0) have none."""
    from autolabel.synth.noise import RUNNER_UPS, noisy_labels_v2

    hits = wrong = 0
    for seed in range(3):
        maps = _toy_view(seed, objects=60)
        labels, conf, alt, alt_conf = noisy_labels_v2(*maps, 0.5, np.random.default_rng(seed))
        assert alt.shape == alt_conf.shape == (RUNNER_UPS, *labels.shape) and alt.dtype == alt_conf.dtype == np.uint8
        assert not ((alt == labels[None]) & (alt != 255)).any()
        assert (alt[:, labels == 255] == 255).all() and (alt_conf[:, labels == 255] == 0).all()
        assert ((alt == 255) == (alt_conf == 0)).all()
        assert (conf.astype(int) + alt_conf.astype(int).sum(0) <= 255 + RUNNER_UPS).all()  # rounding
        bad = (labels != 255) & (maps[0] != 255) & (labels != maps[0])
        hits += (alt[:, bad] == maps[0][bad]).any(0).sum()
        wrong += bad.sum()
    assert wrong > 500 and hits / wrong > 0.3  # 0.39 measured; edge and spill errors have no runner-up to fix them
    _, _, alt, alt_conf = noisy_labels_v2(*_toy_view(0), 0.0, np.random.default_rng(0))
    assert (alt == 255).all() and (alt_conf == 0).all()


def test_v2_renaming_rises_with_distance_and_falls_with_size():
    from autolabel.synth.noise import NoiseRates, noisy_labels_v2

    rates = replace(NoiseRates(), merge=0, spill=0, boundary=0, miss_small=0, miss_thin=0, miss_far=0)

    def renamed(depth, size):
        wrong = total = 0
        for seed in range(4):
            maps = _toy_view(seed, objects=30, size=size, depth_of_objects=depth)
            labels, _ = noisy_labels_v2(*maps, 0.3, np.random.default_rng(seed), rates)[:2]
            cars = maps[0] == C["car"]
            wrong += (labels[cars] != C["car"]).sum()
            total += cars.sum()
        return wrong / total

    near, far = renamed(8.0, (10, 16)), renamed(60.0, (10, 16))
    small = renamed(20.0, (2, 3))
    large = renamed(20.0, (14, 22))
    assert far > near + 0.1, (near, far)
    assert small > 1.4 * large, (small, large)


def test_v2_misses_small_thin_and_distant_things():
    from autolabel.synth.noise import NoiseRates, noisy_labels_v2

    rates = replace(NoiseRates(), merge=0, spill=0, boundary=0)  # nothing grows over a missed object

    def missed(depth, size):
        gone = total = 0
        for seed in range(4):
            maps = _toy_view(seed, objects=30, size=size, depth_of_objects=depth)
            labels, _ = noisy_labels_v2(*maps, 0.3, np.random.default_rng(seed), rates)[:2]
            for i in np.unique(maps[1][maps[0] == C["car"]]):
                gone += (labels[maps[1] == i] == 255).all()
                total += 1
        return gone / total

    assert missed(70.0, (2, 2)) > 0.5  # small and far: mostly left unlabelled
    assert missed(70.0, (2, 2)) > missed(8.0, (12, 20)) + 0.2
    assert missed(8.0, (12, 2)) > missed(8.0, (12, 20)) + 0.1  # thin: a pole-like box


def test_v2_under_and_over_segmentation():
    """A merged pedestrian takes the name of the wall behind it; a large instance is cut into parts."""
    from autolabel.synth.noise import NoiseRates, _segments, noisy_labels_v2

    sem, inst, depth, xy = _toy_view(0, objects=0)
    sem[25:38, 50:56] = C["pedestrian"]  # standing in front of the wall (rows 20..40)
    inst[25:38, 50:56] = 99
    rates = replace(NoiseRates(), merge=1.0, spill=0, boundary=0, miss_small=0, miss_thin=0, miss_far=0, signal=60.0)
    labels, _ = noisy_labels_v2(sem, inst, depth, xy, 0.3, np.random.default_rng(0), rates)[:2]
    assert (labels[25:38, 50:56] == C["manmade"]).all()
    seg = _segments(sem, inst, xy, sem != 255, NoiseRates())
    assert len(np.unique(seg[inst == 1])) > 1  # the wall spans 40 m of ground: several parts


def test_sensors_do_not_depend_on_the_noise_profile(tmp_path):
    """Images, lidar, tables and ground truth of a seed are the same bytes under v1 and v2: only the 2D
    label maps differ (a benchmark comparing the profiles compares labels, not sensor noise)."""
    cfg = SynthConfig(scenes=1, frames_per_scene=1, seed=3, image_size=(48, 80))
    write_dataset(tmp_path / "v2", cfg, progress=False)
    write_dataset(tmp_path / "v1", replace(cfg, noise_profile="v1"), progress=False)
    a, b = _digest(tmp_path / "v2"), _digest(tmp_path / "v1")
    assert a.keys() == b.keys()
    differ = sorted(k for k in a if a[k] != b[k])
    assert differ and all(k.startswith("labels2d/") for k in differ)


def test_noise_profile_is_validated():
    with pytest.raises(ValueError, match="noise_profile must be one of v2, v1, got 'v3'"):
        SynthConfig(noise_profile="v3")
    from autolabel.synth.noise import NoiseRates

    with pytest.raises(ValueError, match="NoiseRates.merge is a probability"):
        NoiseRates(merge=2.0)
    with pytest.raises(ValueError, match="confidence_auroc must lie in"):
        NoiseRates(confidence_auroc=0.3)


@pytest.mark.parametrize("r2", [0, 1, 2, 50, 100])
def test_disc_dilation_is_the_distance_transform_threshold(r2):
    """The map's dilation (rows dilated by a running maximum, shifted and ORed) marks the pixels whose squared
    distance to a marked pixel's centre is at most r2: the Euclidean distance transform's nearest pixel, by its
    exact integer offsets, is the reference (how the maps were made before)."""
    from scipy.ndimage import distance_transform_edt

    from autolabel.synth.writer import disc_dilation

    rng = np.random.default_rng(r2)
    mask = rng.random((97, 83)) < 0.004
    mask[40:44, 10:70] = True  # a road-like band next to scattered pixels, and pixels on the edges
    mask[0, 5] = mask[96, 80] = True
    _, (i, j) = distance_transform_edt(~mask, return_indices=True)
    rows, cols = np.indices(mask.shape)
    want = (rows - i) ** 2 + (cols - j) ** 2 <= r2
    np.testing.assert_array_equal(disc_dilation(mask, r2), want)


def test_ground_raster_is_the_full_raster_tests():
    """_paint_ground tests each cell by 1D profiles across and along the roads; the same tests on every cell of
    the full (n, n) raster (its form before) give the same classes and paint, medians and crossings included."""
    from autolabel.synth.world import LANE, _lay_roads, _paint_ground

    extent = 120.0
    for seed in range(12):
        roads = _lay_roads(np.random.default_rng(seed), extent)
        ground, paint = _paint_ground(roads, extent)
        n = ground.shape[0]
        X, Y = np.meshgrid((np.arange(n) + 0.5) * 0.2, (np.arange(n) + 0.5) * 0.2, indexing="ij")
        want = np.full((n, n), C["terrain"], np.uint8)
        lines = np.zeros((n, n), bool)
        across = [(Y - r.pos) if r.axis == 0 else (X - r.pos) for r in roads]
        for r, a in zip(roads, across):
            want[np.abs(a) < r.half_width + r.sidewalk] = C["sidewalk"]
        for r, a in zip(roads, across):
            want[np.abs(a) < r.half_width] = C["driveable_surface"]
        for i, (r, a) in enumerate(zip(roads, across)):
            crossing = np.zeros((n, n), bool)
            for j, (r2, a2) in enumerate(zip(roads, across)):
                if j != i and r2.axis != r.axis:
                    crossing |= np.abs(a2) < r2.half_width + r2.sidewalk
            if r.median:
                want[(np.abs(a) < 1.0) & ~crossing] = C["other_flat"]
            dash = (np.mod(X if r.axis == 0 else Y, 9.0) < 4.5) & ~crossing
            offsets = ([0.0] if not r.median else []) + (
                [s * (LANE + (1.0 if r.median else 0.0)) for s in (-1, 1)] if r.lanes == 2 else []
            )
            for off in offsets:
                lines |= (np.abs(a - off) < 0.08) & dash
            for s in (-1, 1):
                lines |= (np.abs(a - s * r.carriage_half) < 0.08) & ~crossing
        np.testing.assert_array_equal(ground, want)
        np.testing.assert_array_equal(paint, lines & (want == C["driveable_surface"]))


def test_a_world_s_noise_rates_reach_its_noisy_maps(tmp_path):
    """SynthConfig.noise_rates are the rates the writer's noise model v2 uses (benchmarks/noise_components.py makes
    worlds that leave one part of the noise out): with the classifier's signal x 100 the named pixels of the same
    scene agree with the exact maps more often, and nothing but the noisy maps changes."""
    from autolabel.synth.noise import NoiseRates

    grid = GridSpec(range_min=(-12.8, -12.8, -1.0), range_max=(12.8, 12.8, 2.2), voxel_size=0.4)
    agree, front = [], []
    for name, rates in (("as_is", NoiseRates()), ("naming", replace(NoiseRates(), signal=NoiseRates().signal * 100))):
        root = tmp_path / name
        write_dataset(root, SynthConfig(1, 1, 3, (48, 80), noise_rates=rates), grid, progress=False, workers=1)
        exact, noisy = [], []
        for path in sorted((root / "labels2d").rglob("*.npz")):
            with np.load(path) as z:
                exact.append(z["semantics"])
                noisy.append(z["noisy_semantics"])
        exact, noisy = np.stack(exact), np.stack(noisy)
        named = noisy != 255
        agree.append((noisy[named] == exact[named]).mean())
        front.append(next((root / "samples" / "CAM_FRONT").iterdir()).read_bytes())
    assert agree[1] > agree[0] + 0.05 and front[0] == front[1]  # 0.83 -> 0.96 measured
