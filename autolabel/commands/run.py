"""``autolabel run RECIPE``: the whole loop, resumable stage by stage, ending with a one-screen summary."""
from __future__ import annotations

from ..pipeline import run_recipe, summary_text
from ..recipe import load_recipe


def run(recipe_path: str, overrides: list[str], out: str | None) -> int:
    recipe = load_recipe(recipe_path, overrides, out)
    result = run_recipe(recipe)
    print(summary_text(recipe, result))
    return 0
