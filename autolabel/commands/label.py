"""``autolabel label RECIPE --round K``: the teacher labels the unlabeled pool into the store."""

from __future__ import annotations

from ..dataset import open_frames
from ..dts.label import label_round, labelling_store
from ..errors import DataError
from ..provenance import recipe_record
from ..recipe import RESOLVED_RECIPE, load_recipe, save_recipe
from ..supervision.providers import resolve_device
from ..training.rounds import checkpoint_path, fused_labels, open_cache


def run(recipe_path: str, overrides: list[str], out: str | None, k: int) -> int:
    recipe = load_recipe(recipe_path, overrides, out)
    device = resolve_device(recipe.device)  # under torchrun this also joins the process group, before any I/O
    frames = open_frames(recipe, "train", load_images=True, load_gt=False)
    cache, checkpoint = open_cache(recipe), checkpoint_path(recipe, k)
    if not checkpoint.is_file():  # checked before the store or the round's folder is written
        raise DataError(
            f"round {k}: the trained network {checkpoint} is missing; run `autolabel train --round {k}` first"
        )
    store = labelling_store(recipe.store_path, recipe.network.grid)
    save_recipe(recipe, recipe.round_dir(k) / "label" / RESOLVED_RECIPE)
    fused = fused_labels(recipe, training=False)
    s = label_round(
        frames, cache, store, k, recipe.network, recipe.dts, checkpoint, device, recipe_record(recipe), fused=fused
    )
    per = s["seconds"] / max(s["labelled"], 1)
    print(
        f"round {k}: {s['labelled']} frames labelled ({s['skipped']} already done) by the {s['weights']} at step "
        f"{s['teacher_step']}, {per:.2f} s per frame; store {recipe.store_path}"
    )
    return 0
