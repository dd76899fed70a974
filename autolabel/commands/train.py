"""``autolabel train RECIPE --round K``: rendering-supervised training (+ DTS, + manual 3D labels)."""

from __future__ import annotations

from .. import stages
from ..recipe import RESOLVED_RECIPE, load_recipe, save_recipe
from ..stages.checks import check_backbone, check_dataroot
from ..stages.inputs import open_cache
from ..supervision.providers import resolve_device


def run(recipe_path: str, overrides: list[str], out: str | None, k: int) -> int:
    recipe = load_recipe(recipe_path, overrides, out)
    resolve_device(recipe.device)  # under torchrun: join the process group first
    check_dataroot(recipe)
    if k == 0:  # later rounds start from the previous round's checkpoint, not the file
        check_backbone(recipe)
    open_cache(recipe)  # checked before the round's folder is written
    save_recipe(recipe, recipe.round_dir(k) / "train" / RESOLVED_RECIPE)
    s = stages.train(recipe, k)
    last = s["last"] or {}
    print(
        f"round {k}: {s['steps']} steps on {s['frames']} frames ({s['manual_frames']} with manual 3D labels); "
        f"checkpoint {s['checkpoint']}"
    )
    if last:
        print("  last step: " + ", ".join(f"{key} {v:.4f}" for key, v in last.items()))
    return 0
