"""``autolabel select RECIPE --round K --budget N`` and ``autolabel ingest RECIPE --round K DIR``."""

from __future__ import annotations

import json
from dataclasses import replace

from .. import stages
from ..active.config import check_region_budget
from ..errors import DataError
from ..recipe import load_recipe


def select(recipe_path: str, overrides: list[str], out: str | None, k: int, budget: float | None) -> int:
    recipe = load_recipe(recipe_path, overrides, out)
    if budget is not None:
        recipe.selection = replace(recipe.selection, budget=budget)
        try:
            check_region_budget(recipe.selection, recipe.network.grid.shape)
        except ValueError as exc:
            raise DataError(f"--budget: {exc}") from None
    selection = stages.select(recipe, k)  # under torchrun: every rank scores its share, rank 0 selects
    if selection is None:
        return 0
    pool, picks, strategy, path = selection.pool, selection.picks, selection.strategy, selection.manifest
    lab = pool.labelled
    region = (
        f", {sum(len(p.tiles) for p in picks)} tiles, {sum(p.voxels for p in picks)} voxels" if pool.regions else ""
    )
    if recipe.selection.points:  # issue 24: what the annotators label, in their units (the manifest has them per frame)
        rows = json.loads(path.read_text())["selected"]
        region += f"; {sum(r['points'] for r in rows)} LiDAR points and {sum(r['boxes'] for r in rows)} boxes to label"
    annotated = {t for t, done in zip(pool.tokens, lab) if done}
    partial = sum(c.token in annotated for c in pool.candidates)  # annotated by tiles, offering the others
    again = f", {partial} of them with tiles left to label" if partial else ""
    scored = f"pool not scored ({strategy} reads no score)"
    if pool.scored_by:
        by = f"{len(pool.scored_by)} process(es) ({', '.join(map(str, pool.scored_by))} frames)"
        scored = (
            f"pool scored by its fused labels, no network, in {by}" if strategy == "fusion" else f"pool scored by {by}"
        )
    print(
        f"round {k}: {len(picks)} frames{region} selected by {strategy} from {len(pool.candidates)} candidate "
        f"frames ({int(lab.sum())} already annotated{again}); {scored}"
    )
    for p in picks:
        tiles = f"  tiles {sorted(p.tiles)} ({p.voxels} voxels)" if pool.regions else ""
        print(f"  {p.candidate.scene} {p.candidate.token}  {p.reason}{tiles}")
    print(f"manifest {path} (+ manifest.csv, index.html for the annotators)")
    return 0


def ingest(recipe_path: str, overrides: list[str], out: str | None, k: int, folder: str) -> int:
    recipe = load_recipe(recipe_path, overrides, out)
    s = stages.ingest_folder(recipe, k, folder)
    print(
        f"round {k}: {len(s['added'])} frames ingested, {len(s['unchanged'])} already there unchanged, "
        f"{len(s['missing'])} of the manifest not delivered; {s['voxels_added']} labelled voxels added; "
        f"{s['manual_total']} frames with manual 3D labels ({s['manual_voxels']} labelled voxels)"
    )
    return 0
