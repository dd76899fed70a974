"""The torch path of fusion's point-label rules (`fusion.rules.voxelize_votes`, on the device of its inputs)
against their NumPy reference (`voxelize_votes_reference`): semantics and points per voxel identical,
confidence to float32 rounding, on the synthetic world, the real nuScenes sample's window and small cases."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import autolabel.fusion.fuse as fuse_module
from autolabel.fusion.config import FusionConfig
from autolabel.fusion.evidence import frame_evidence
from autolabel.fusion.fuse import fuse
from autolabel.fusion.rules import label_voxels, name_voxels, voxelize_votes, voxelize_votes_reference
from kernels.grid import GridSpec
from occnet.classes import class_id
from test_fusion import FUSION_RULES, GRID, TRUCK, WALL, _named_points, world  # noqa: F401 (the fixture)
from tiny_models import TINY_GRID

ROOT = Path(__file__).resolve().parents[1]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, CUDA])]
RULES_OFF = {"close_surfaces": 0, "cluster_vote": 0.0}


def _numpy(x):
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else x


def assert_as_reference(args: tuple, kwargs: dict, device: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """voxelize_votes with its array arguments as tensors on `device` gives the reference's labels. Returns them."""
    ref = voxelize_votes_reference(*(_numpy(a) for a in args), **kwargs)
    on = [torch.as_tensor(_numpy(a)).to(device) if i < 6 else a for i, a in enumerate(args)]
    sem, conf, hits = voxelize_votes(*on, **kwargs)
    assert sem.dtype == ref[0].dtype and np.array_equal(sem, ref[0])
    assert hits.dtype == ref[2].dtype and np.array_equal(hits, ref[2])
    assert conf.dtype == ref[1].dtype
    np.testing.assert_allclose(conf, ref[1], rtol=2**-23, atol=0)  # float32 rounding (measured: identical)
    return ref


def _recorded_args(run) -> tuple[tuple, dict]:
    """The arguments of voxelize_votes that `fuse` hands to its two halves (name_voxels, label_voxels) during
    `run()`, as voxelize_votes takes them."""
    named, labelled = [], []

    def name(*a, **k):
        named.append(a)
        return name_voxels(*a, **k)

    def label(*a, **k):
        labelled.append((a, k))
        return label_voxels(*a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fuse_module, "name_voxels", name)
        mp.setattr(fuse_module, "label_voxels", label)
        run()
    *arrays, grid, rules = named[-1]
    (_, _, full_hits, _), kwargs = labelled[-1]
    return (*arrays, grid, full_hits, rules), kwargs


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("settings", [{}, RULES_OFF])
def test_small_cases_as_reference(device, settings):
    """The cases of test_fusion.py: a wall between two rings, a thing of split votes, a frame of only ground, and
    points no view named, with ghosts (points of other keyframes where the own rays pass)."""
    walls = [(2.1, y, z) for y in np.arange(-1.75, 2.0, 0.5) for z in (-0.75, 0.25)]
    cases = [
        _named_points(walls, [WALL] * len(walls)),
        _named_points([(2.1, 0.25, 0.1), (2.1, 0.75, 0.1), (2.1, 1.25, 0.1)], [WALL, WALL, TRUCK]),
        _named_points([(2.1, y, -0.9) for y in (-1.0, 0.0, 1.0)], [class_id("driveable_surface")] * 3),
        _named_points([(3.1, 0.1, 0.1), (1.6, 0.1, 0.1)], [WALL, TRUCK], own=[True, False]),
    ]
    tie = list(_named_points([(2.1, 0.25, 0.1)], [WALL]))
    tie[5][0, TRUCK] = 1.0  # an exact tie: the lower class wins on either path
    unnamed = list(_named_points([(2.1, 0.25, 0.1), (2.1, 0.3, -0.9)], [WALL, WALL]))
    unnamed[5][:] = 0
    for args in cases + [tuple(tie), tuple(unnamed)]:
        for cluster in (0.0, 4.0):
            kw = {"close_surfaces": 1, "cluster_vote": cluster} | settings
            assert_as_reference(args + ([], GRID, 1, FUSION_RULES), kw, device)


def test_a_frame_without_things_as_reference():
    """Only flat ground named (nothing to lean on, nothing to close): as the reference, and the ground named."""
    args = _named_points([(2.1, y, -0.9) for y in (-1.0, 0.0, 1.0)], [class_id("driveable_surface")] * 3)
    sem = assert_as_reference(args + ([], GRID, 1, FUSION_RULES), {"cluster_vote": 4.0, "close_surfaces": 1}, "cpu")[0]
    assert (sem == class_id("driveable_surface")).any()


@pytest.mark.parametrize("device", DEVICES)
def test_the_synthetic_world_as_reference(request, device):
    """Every frame of the pool world as `fuse` (window 1, noisy 2D labels) hands it to the rules."""
    frames, caches = request.getfixturevalue("world")  # test_fusion.py's
    cfg = FusionConfig(window=1)
    for token in frames.tokens:
        ev = frame_evidence(frames, caches["noisy"], token, cfg, torch.device(device))
        args, kwargs = _recorded_args(lambda: fuse(ev.sweeps, ev.views, TINY_GRID, cfg, ev.target))
        assert_as_reference(args, kwargs, device)
        assert_as_reference(args, kwargs | RULES_OFF, device)


@functools.lru_cache(maxsize=2)
def _sample_args(device: str) -> tuple[tuple, dict]:
    """voxelize_votes' arguments for the nuScenes sample's window (benchmarks/fusion_speed.py: +-3 keyframes x 10
    sweeps, 2.4 M points), as `fuse` with FusionConfig's defaults gives them. On the CPU only every 7th view
    votes (all 42 take 20 s there)."""
    spec = importlib.util.spec_from_file_location("fusion_speed", ROOT / "benchmarks" / "fusion_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    frames = bench.NuScenesFrames(bench.SAMPLE, "v1.0-mini", load_images=False)
    frame = frames.frame(frames.tokens[0], images=False)
    sweeps, views = bench.window(frame, 3, 10, (256, 704), torch.device(device))
    views = views if device == "cuda" else views[::7]
    return _recorded_args(lambda: fuse(sweeps, views, GridSpec(), FusionConfig(), 3))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("settings", [{}, RULES_OFF], ids=["all rules", "no closing or cluster vote"])
def test_the_nuscenes_sample_window_as_reference(device, settings):
    args, kwargs = _sample_args(device)
    sem = assert_as_reference(args, kwargs | settings, device)[0]
    assert (sem < 17).sum() > 10_000 and (sem == 17).sum() > 10_000  # a real frame: things, ground and free space
