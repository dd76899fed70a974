"""The installed packages satisfy pyproject's requirements, and the requirements hold what the code needs."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
REQUIREMENTS = [Requirement(r) for r in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]]


def test_zarr_requirement_has_atomic_chunk_writes():
    """Issue 23: zarr's atomic chunk writes (the stores' crash safety relies on them) came in 3.1.3."""
    zarr = next(r for r in REQUIREMENTS if r.name == "zarr")
    assert Version("3.1.2") not in zarr.specifier and Version("3.1.3") in zarr.specifier


@pytest.mark.parametrize("req", REQUIREMENTS, ids=lambda r: r.name)
def test_installed_version_satisfies_pyproject(req):
    try:
        installed = Version(version(req.name))
    except PackageNotFoundError:
        pytest.fail(f"{req.name} is not installed")
    public = Version(installed.public)  # torch 2.14.1+cu130 is the release 2.14.1 for the specifier
    assert public in req.specifier, f"{req.name} {installed} does not satisfy pyproject's {req}"
