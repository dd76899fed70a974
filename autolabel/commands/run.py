"""``autolabel run RECIPE``: the whole loop, resumable stage by stage, ending with a one-screen summary.
Also under ``torchrun --nproc-per-node N -m autolabel.cli run RECIPE`` (see autolabel.pipeline)."""

from __future__ import annotations

from occnet.distributed import is_main

from ..pipeline import run_recipe, summary_text
from ..recipe import load_recipe


def run(recipe_path: str, overrides: list[str], out: str | None) -> int:
    recipe = load_recipe(recipe_path, overrides, out)
    result = run_recipe(recipe)
    if is_main():  # under torchrun: one summary, from rank 0
        print(summary_text(recipe, result))
    return 0
