"""Shared fixtures: the real nuScenes sample and writable copies of it."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SAMPLE_ROOT = Path(__file__).parent / "data" / "nuscenes-sample"
SAMPLE_TOKEN = "ca9a282c9e77460f8360f564131a8af5"


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
