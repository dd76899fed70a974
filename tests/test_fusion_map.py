"""The map as evidence for the ground classes (`fusion.map_prior`): the synthetic world's semantic prior is
georeferenced as nuScenes's (nuscenes-devkit reads it), and fusion's votes follow it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from nuscenes.utils.map_mask import MapMask
from PIL import Image

from autolabel.data.nuscenes import NuScenesFrames
from autolabel.fusion.config import FusionConfig
from autolabel.fusion.evidence import frame_evidence
from autolabel.fusion.fuse import fuse
from autolabel.fusion.map_prior import OFF, ON, UNKNOWN, apply_map_prior, map_side
from autolabel.supervision.cache import SupervisionCache, supervise
from autolabel.supervision.providers import PrecomputedLabels
from autolabel.synth.writer import MAP_DILATION, semantic_prior
from occnet.classes import FLAT_CLASS_IDS, class_id
from tiny_models import TINY_GRID

ROAD, WALK, FLAT, TERRAIN = (class_id(n) for n in ("driveable_surface", "sidewalk", "other_flat", "terrain"))


def test_the_semantic_prior_png_is_read_by_the_devkit_where_the_world_has_road_and_walkway(tmp_path):
    ground = np.full((100, 100), TERRAIN, np.uint8)  # 20 m x 20 m of 0.2 m cells, [x, y]
    ground[40:50, 10:90] = ROAD  # x 8..10 m, y 2..18 m
    ground[50:55, 10:90] = WALK
    ground[60:65, 10:90] = FLAT
    Image.fromarray(semantic_prior(ground, 0.2)).save(tmp_path / "map.png")
    mask = MapMask(str(tmp_path / "map.png"), resolution=0.1)
    x = np.array([9.0, 10.5, 8.0 - 0.6 * MAP_DILATION, 8.0 - 1.5 * MAP_DILATION, 12.5, 9.0, 30.0])
    y = np.array([10.0, 10.0, 10.0, 10.0, 10.0, 18.0 + 1.5 * MAP_DILATION, 10.0])
    np.testing.assert_array_equal(mask.is_on_mask(x, y), [True, True, True, False, False, False, False])
    np.testing.assert_array_equal(map_side(mask, np.stack([x, y], 1)), [ON, ON, ON, OFF, OFF, OFF, UNKNOWN])


def test_the_prior_scales_only_the_ground_classes_the_map_rules_out():
    votes = torch.ones(3, 17)
    out = apply_map_prior(votes, torch.tensor([ON, OFF, UNKNOWN], dtype=torch.int8), 0.75)
    ruled_out = {ON: (TERRAIN,), OFF: (ROAD, WALK), UNKNOWN: ()}  # other flat lies inside the driveable area
    for row, side in enumerate((ON, OFF, UNKNOWN)):
        expect = torch.ones(17)
        expect[list(ruled_out[side])] = 0.25
        torch.testing.assert_close(out[row], expect)


def test_the_sample_s_placeholder_map_gives_no_prior(sample_root):
    frames = NuScenesFrames(sample_root, load_images=False, load_gt=False)
    token = frames.tokens[0]
    ego = frames.frame(token, images=False).lidar.ego2global[:2, 3]
    assert map_side(frames.semantic_prior(token), ego[None]) == UNKNOWN  # an 8 x 8 px file far from the pose


@pytest.fixture(scope="module")
def noisy(pool_world, tmp_path_factory):
    frames = NuScenesFrames(pool_world, "v1.0-synth", load_images=False, grid=TINY_GRID)
    path = tmp_path_factory.mktemp("fusion_map") / "noisy.zarr"
    supervise(frames, PrecomputedLabels(pool_world, variant="noisy"), path, (112, 200), progress=False)
    return frames, SupervisionCache.open(path)


def test_the_ego_drives_on_the_synthetic_world_s_prior(noisy):
    frames, _ = noisy
    for token in frames.tokens:
        ego = frames.frame(token, images=False).lidar.ego2global[:2, 3]
        assert map_side(frames.semantic_prior(token), ego[None]) == ON


def test_the_map_prior_names_the_ground_better(noisy):
    frames, cache = noisy
    right = {}
    for weight in (0.0, FusionConfig().map_prior):
        cfg = FusionConfig(window=1, map_prior=weight)
        hits = total = 0
        for token in frames.tokens:
            ev = frame_evidence(frames, cache, token, cfg, torch.device("cpu"))
            if weight:
                assert all(s.map_side is not None and len(s.map_side) == len(s.points) for s in ev.sweeps)
            f = fuse(ev.sweeps, ev.views, TINY_GRID, cfg, ev.target)
            gt = frames.frame(token, images=False).gt
            both = np.isin(f.semantics, FLAT_CLASS_IDS) & np.isin(gt.semantics, FLAT_CLASS_IDS)
            both &= gt.mask_camera.astype(bool)
            hits += (f.semantics == gt.semantics)[both].sum()
            total += both.sum()
        right[weight] = hits / total
    # measured 2026-11-30 on this world (window 1): ground voxels named right 86.8% -> 87.6% with map_prior 0.5
    assert right[FusionConfig().map_prior] > right[0.0] + 0.005


def test_map_prior_is_checked():
    with pytest.raises(ValueError, match="map_prior"):
        replace(FusionConfig(), map_prior=1.0)


def test_sweeps_without_a_map_get_no_prior():
    """A sweep built without map_side (a dataset without maps) fuses as with the prior off, beside one with."""
    from autolabel.fusion.fuse import Sweep, _map_side

    pts = torch.zeros(4, 3, dtype=torch.float64)
    bare = Sweep(pts, torch.zeros(3, dtype=torch.float64), torch.ones(4, dtype=torch.bool), torch.zeros(4), 0)
    assert (_map_side(bare) == UNKNOWN).all() and len(_map_side(bare)) == 4
    votes = torch.rand(4, 17)
    torch.testing.assert_close(apply_map_prior(votes, _map_side(bare), 0.5), votes)


def test_ground_the_map_rules_out_is_renamed_from_its_neighbours():
    """fusion.map_ground: off the prior, a sidewalk voxel among terrain becomes terrain; on it, terrain deep inside
    becomes the road around it, terrain within the margin of the prior's edge stays (the prior is dilated), and a
    ruled-out voxel with no allowed class near keeps its name."""
    from autolabel.fusion.map_prior import OFF, ON, rename_ruled_out_ground
    from kernels.grid import GridSpec
    from occnet.classes import FREE_ID

    grid = GridSpec(range_min=(-6.0, -6.0, -1.0), range_max=(6.0, 6.0, 1.0), voxel_size=0.5)  # 24 x 24 x 4
    road, walk, grass = class_id("driveable_surface"), class_id("sidewalk"), class_id("terrain")
    cells = np.full(grid.shape[:2], OFF, np.int8)
    cells[:, :12] = ON  # the prior covers y < 12
    vol = np.full(grid.shape, FREE_ID, np.uint8)
    vol[:, :12, 0], vol[:, 12:, 0] = road, grass
    vol[4, 4, 0] = grass  # deep inside the prior: not terrain
    vol[4, 11, 0] = grass  # at the prior's edge: within the margin, kept
    vol[4, 18, 0] = walk  # off the prior: not sidewalk
    vol[16:24, 16:24, 0] = FREE_ID
    vol[20, 20, 0] = road  # off the prior, but no terrain or other flat within reach
    sem = vol.reshape(-1).copy()
    changed = rename_ruled_out_ground(sem, cells, grid, radius=2, margin=2).reshape(grid.shape)
    out = sem.reshape(grid.shape)
    assert out[4, 4, 0] == road and out[4, 11, 0] == grass and out[4, 18, 0] == grass and out[20, 20, 0] == road
    assert changed.sum() == 2 and changed[4, 4, 0] and changed[4, 18, 0]
    with pytest.raises(ValueError, match="map_ground"):
        FusionConfig(map_ground=-1)
