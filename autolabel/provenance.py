"""Provenance: what a cache, a labelling round or a manifest records about how it was made.

One home for the fields that several writers record: the package version and its sources' digest, the
creation time, a file's SHA-256 (a checkpoint's), the 2D supervision a round was labelled from, the recipe that
ran, the machine a stage ran on. Writers put these into Zarr attributes or JSON files; readers (`autolabel
inspect`, the export's ``export.json``) show them. Nothing here depends on the rest of autolabel but
`config_io`.
"""

from __future__ import annotations

import hashlib
import os
import platform
import time
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path

import torch

from .config_io import to_dict

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def package_version() -> str:
    """The installed occ-autolabel version ("unknown" from a source tree that was never pip-installed)."""
    try:
        return version("occ-autolabel")
    except PackageNotFoundError:
        return "unknown"


SOURCE_PACKAGES = ("autolabel", "occnet", "kernels")
SOURCE_SUFFIXES = (".py", ".cpp", ".cu", ".h", ".cuh")


@cache
def sources_digest() -> str:
    """The first 16 hex digits of SHA-256 over this install's sources (the paths and bytes of the Python, C++ and
    CUDA files of autolabel, occnet and kernels). A labelling round records it and resumes only under the same
    digest: fusion has changed its labels without a new setting (3d3f064), and the package version does not move
    with an editable install's edits, so equal settings and versions do not certify equal labels."""
    h = hashlib.sha256()
    for name in SOURCE_PACKAGES:
        spec = find_spec(name)  # the package's folder, without importing it
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        files = sorted(p for p in root.rglob("*") if p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts)
        for path in files:
            h.update(f"{name}/{path.relative_to(root).as_posix()}".encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def timestamp() -> str:
    """Local time with its UTC offset, as every ``created`` / ``exported`` field holds it."""
    return time.strftime(TIME_FORMAT)


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def machine() -> dict:
    """{cpu, cores, gpu (None without CUDA), torch} of this process, recorded beside each stage in stages.json: a
    run's numbers repeat on one machine, not across machines (CPU kernels round differently and a few hundred
    training steps carry it: BENCHMARKS.md, the quickstart), so comparing two runs starts with comparing these."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def supervision_source(cache_attrs) -> dict:
    """The 2D supervision a round was made from: the cache's provider and its settings."""
    return {
        "supervision_provider": cache_attrs.get("provider"),
        "supervision_settings": cache_attrs.get("provider_settings"),
    }


def recipe_record(recipe) -> dict:
    """The resolved recipe and its digest (a `Recipe`; None gives None for both)."""
    return {
        "recipe": to_dict(recipe) if recipe is not None else None,
        "recipe_digest": recipe.digest() if recipe is not None else None,
    }
