"""Shared fixtures: the real nuScenes sample and writable copies of it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SAMPLE_ROOT = Path(__file__).parent / "data" / "nuscenes-sample"
SAMPLE_TOKEN = "ca9a282c9e77460f8360f564131a8af5"
MAX_WORKERS = 4  # `-n auto` (pyproject.toml): at most this many test processes, each with its share of the cores


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def pytest_xdist_auto_num_workers(config) -> int:
    return max(1, min(MAX_WORKERS, _cores()))


def pytest_configure(config) -> None:
    """In a pytest-xdist worker, torch's CPU threads (and those of the processes a test starts: CLI runs,
    torchrun, benchmark harnesses) are the worker's share of the cores. Each worker would otherwise start one
    thread per core: two workers on 2 cores ran the learning test 3.2 times slower than alone (298 s against 92 s)."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = str(max(1, _cores() // int(workers)))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, threads)
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config, items) -> None:
    """The tests marked slow(SECONDS) first, the longest first: the workers take a contiguous share of the list
    each and steal from one another's end, so a minutes-long test left to the end of a share would run alone."""

    def longest_first(item) -> float:
        mark = item.get_closest_marker("slow")
        return -mark.args[0] if mark else 0.0

    items.sort(key=longest_first)  # stable: the rest keep their order


@pytest.fixture(scope="session")
def sample_root() -> Path:
    return SAMPLE_ROOT


@pytest.fixture(scope="session")
def sample_frame():
    from autolabel.data.nuscenes import NuScenesFrames

    return NuScenesFrames(SAMPLE_ROOT)[0]


@pytest.fixture
def sample_copy(tmp_path: Path) -> Path:
    """A writable copy of the real sample, for tests that corrupt it."""
    dst = tmp_path / "nuscenes-sample"
    shutil.copytree(SAMPLE_ROOT, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A small synthetic world (1 scene, 2 keyframes, 112x200 images, grid TINY_GRID) with exact and noisy 2D maps."""
    from tiny_models import synth_world

    return synth_world(tmp_path_factory.mktemp("world"), scenes=1, frames=2, seed=5)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """Paths of tiny randomly initialised SAM (checkpoint), CLIP, OWLv2, SAM 2, SAM 3, Grounding DINO and
    Florence-2 (model folders)."""
    from tiny_models import (
        save_florence2,
        save_grounding_dino,
        save_sam2,
        save_sam3,
        save_tiny_clip,
        save_tiny_owlv2,
        save_tiny_sam,
    )

    d = tmp_path_factory.mktemp("models")
    return {
        "sam": str(save_tiny_sam(d / "sam.pth")),
        "clip": str(save_tiny_clip(d / "clip")),
        "owl": str(save_tiny_owlv2(d / "owl")),
        "sam2": str(save_sam2(d / "sam2")),
        "sam3": str(save_sam3(d / "sam3")),
        "gdino": str(save_grounding_dino(d / "gdino")),
        "florence2": str(save_florence2(d / "florence2")),
    }


@pytest.fixture(scope="session")
def pool_world(tmp_path_factory) -> Path:
    """2 scenes x 3 keyframes of the synthetic world at 112x200, grid TINY_GRID."""
    from tiny_models import synth_world

    return synth_world(tmp_path_factory.mktemp("pool"), scenes=2, frames=3, seed=11)


@pytest.fixture(scope="session")
def trained(pool_world, tmp_path_factory) -> Path:
    """A run folder with supervision, a trained round 0 and its labels (tests that change it copy it first)."""
    from tiny_models import write_recipe

    from autolabel.cli import main

    folder = tmp_path_factory.mktemp("trained")
    recipe = write_recipe(folder, pool_world)
    for cmd in (["supervise"], ["train", "--round", "0"], ["label", "--round", "0"]):
        assert main([cmd[0], str(recipe), *cmd[1:]]) == 0
    return folder
