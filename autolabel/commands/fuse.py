"""``autolabel fuse RECIPE``: the training frames' labels from evidence fusion, once (fusion.enabled)."""

from __future__ import annotations

from .. import stages
from ..errors import DataError
from ..recipe import RESOLVED_RECIPE, load_recipe, save_recipe
from ..supervision.providers import resolve_device


def run(recipe_path: str, overrides: list[str], out: str | None, progress: bool = True) -> int:
    recipe = load_recipe(recipe_path, overrides, out)
    if not recipe.fusion.enabled:
        raise DataError(f"recipe {recipe_path}: fusion.enabled is false; set it (--set fusion.enabled=true) to fuse")
    resolve_device(recipe.device)  # under torchrun: join the process group before any rank touches the store
    save_recipe(recipe, recipe.run_dir / RESOLVED_RECIPE)
    s = stages.fuse(recipe, progress)
    per = s["seconds"] / max(s["labelled"], 1)
    print(f"fused labels {recipe.fusion_path}: {s['labelled']} of {s['frames']} frames fused ({per:.2f} s per frame)")
    return 0
