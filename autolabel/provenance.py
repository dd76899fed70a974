"""Provenance: what a cache, a labelling round or a manifest records about how it was made.

One home for the fields that several writers record: the package version, the creation time, a file's
SHA-256 (a checkpoint's), the 2D supervision a round was labelled from, the recipe that ran. Writers put
these into Zarr attributes or JSON files; readers (`autolabel inspect`, the export's ``export.json``)
show them. Nothing here depends on the rest of autolabel but `config_io`.
"""

from __future__ import annotations

import hashlib
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .config_io import to_dict

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def package_version() -> str:
    """The installed occ-autolabel version ("unknown" from a source tree that was never pip-installed)."""
    try:
        return version("occ-autolabel")
    except PackageNotFoundError:
        return "unknown"


def timestamp() -> str:
    """Local time with its UTC offset, as every ``created`` / ``exported`` field holds it."""
    return time.strftime(TIME_FORMAT)


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
