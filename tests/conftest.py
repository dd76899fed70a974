"""Shared fixtures: the real nuScenes sample and writable copies of it."""

from __future__ import annotations

import json
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


def _made_once(tmp_path_factory, name: str, make):
    """A session fixture's folder, made once for all the run's xdist workers rather than once in each (the pattern
    of pytest-xdist's documentation): the first worker to ask makes it under the folder the workers' temporary
    folders share, the others wait on its lock and read it. `make(folder)` fills the folder and returns a
    JSON-serialisable value (a path, a dict of paths), stored beside it for the workers that reuse it. The
    fixtures using this are deterministic and read-only to the tests (a test that changes one copies it first)."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return make(tmp_path_factory.mktemp(name))
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # pytest-of-<user>/pytest-<n>: one per run, shared by its workers
    folder, value = shared / f"once-{name}", shared / f"once-{name}.json"
    with FileLock(str(shared / f"once-{name}.lock")):
        if not value.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a worker that failed half-way left it
            folder.mkdir()
            value.write_text(json.dumps(make(folder)))
    return json.loads(value.read_text())


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

    return Path(_made_once(tmp_path_factory, "world", lambda d: str(synth_world(d, scenes=1, frames=2, seed=5))))


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

    def make(d: Path) -> dict:
        return {
            "sam": str(save_tiny_sam(d / "sam.pth")),
            "clip": str(save_tiny_clip(d / "clip")),
            "owl": str(save_tiny_owlv2(d / "owl")),
            "sam2": str(save_sam2(d / "sam2")),
            "sam3": str(save_sam3(d / "sam3")),
            "gdino": str(save_grounding_dino(d / "gdino")),
            "florence2": str(save_florence2(d / "florence2")),
        }

    return _made_once(tmp_path_factory, "models", make)


@pytest.fixture(scope="session")
def pool_world(tmp_path_factory) -> Path:
    """2 scenes x 3 keyframes of the synthetic world at 112x200, grid TINY_GRID."""
    from tiny_models import synth_world

    return Path(_made_once(tmp_path_factory, "pool", lambda d: str(synth_world(d, scenes=2, frames=3, seed=11))))


@pytest.fixture(scope="session")
def trained(pool_world, tmp_path_factory) -> Path:
    """A run folder with supervision, a trained round 0 and its labels (tests that change it copy it first)."""
    from tiny_models import write_recipe

    from autolabel.cli import main

    def make(folder: Path) -> str:
        recipe = write_recipe(folder, pool_world)
        for cmd in (["supervise"], ["train", "--round", "0"], ["label", "--round", "0"]):
            assert main([cmd[0], str(recipe), *cmd[1:]]) == 0
        return str(folder)

    return Path(_made_once(tmp_path_factory, "trained", make))
