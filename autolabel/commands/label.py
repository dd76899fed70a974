"""``autolabel label RECIPE --round K``: the teacher labels the unlabeled pool into the store."""

from __future__ import annotations

from .. import stages
from ..recipe import RESOLVED_RECIPE, load_recipe, save_recipe
from ..stages.checks import check_dataroot
from ..stages.inputs import check_checkpoint, open_cache
from ..supervision.providers import resolve_device


def run(recipe_path: str, overrides: list[str], out: str | None, k: int) -> int:
    recipe = load_recipe(recipe_path, overrides, out)
    resolve_device(recipe.device)  # under torchrun this also joins the process group, before any I/O
    check_dataroot(recipe)
    open_cache(recipe)
    check_checkpoint(recipe, k)  # checked before the store or the round's folder is written
    save_recipe(recipe, recipe.round_dir(k) / "label" / RESOLVED_RECIPE)
    s = stages.label(recipe, k)
    per = s["seconds"] / max(s["labelled"], 1)
    print(
        f"round {k}: {s['labelled']} frames labelled ({s['skipped']} already done) by the {s['weights']} at step "
        f"{s['teacher_step']}, {per:.2f} s per frame; store {recipe.store_path}"
    )
    return 0
