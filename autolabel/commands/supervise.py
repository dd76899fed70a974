"""``autolabel supervise RECIPE``: compute the 2D supervision of every frame into the cache, once."""

from __future__ import annotations

from .. import stages
from ..recipe import RESOLVED_RECIPE, load_recipe, save_recipe
from ..stages.checks import check_dataroot
from ..supervision.providers import check_models, resolve_device


def run(recipe_path: str, overrides: list[str], out: str | None, progress: bool = True) -> int:
    recipe = load_recipe(recipe_path, overrides, out)
    sup = recipe.supervision
    resolve_device(sup.device)  # under torchrun: join the process group before any rank touches the cache
    check_dataroot(recipe)
    check_models(sup)  # model paths, before any work
    save_recipe(recipe, recipe.run_dir / RESOLVED_RECIPE)
    s = stages.supervise(recipe, progress)
    per = s["seconds"] / max(s["computed"], 1)
    print(
        f"supervision cache {recipe.cache_path}: {s['frames']} frames ({s['computed']} computed, {s['skipped']} "
        f"already there) with provider {sup.provider} at {recipe.network.image_size[1]}x{recipe.network.image_size[0]}"
    )
    if s["computed"]:
        print(f"  {s['seconds']:.1f} s ({per:.2f} s per frame), {100 * s['coverage']:.1f}% of pixels labelled")
    return 0
