"""``autolabel eval-2d RECIPE``: pixel mIoU, accuracy, coverage, confidence AUROC and a confusion matrix of
the cached 2D labels."""
from __future__ import annotations

import json
from pathlib import Path

from occnet.classes import FREE_ID, OCC3D_CLASS_NAMES

from ..dataset import open_frames
from ..recipe import load_recipe
from ..report.figures import confusion_png
from ..supervision.cache import SupervisionCache
from ..supervision.eval2d import evaluate_cache
from ..supervision.providers import LidarsegLabels, PrecomputedLabels


def run(recipe_path: str, overrides: list[str], out: str | None, truth: str, progress: bool = True) -> int:
    recipe = load_recipe(recipe_path, overrides, out)
    frames = open_frames(recipe, "all", load_images=False, load_gt=False)
    cache = SupervisionCache.open(recipe.cache_path)
    if truth == "exact":
        gt = PrecomputedLabels(frames.dataroot, recipe.supervision.precomputed.folder, "exact")
    else:
        gt = LidarsegLabels(frames.nusc, recipe.supervision.lidar_min_depth)
    scores = evaluate_cache(cache, frames, gt, progress)
    folder = recipe.run_dir / "eval2d"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scores.json").write_text(json.dumps({"truth": truth, "cache": str(cache.arrays.where),
                                                    "provider": cache.arrays.attrs.get("provider"), **scores.as_dict()}, indent=1))
    names = list(OCC3D_CLASS_NAMES[:FREE_ID])
    png = confusion_png(scores.confusion, names, names + ["unlabelled"], folder / "confusion.png",
                        f"2D labels ({cache.arrays.attrs.get('provider')}) vs {truth} truth: mIoU {100 * scores.miou:.1f}")
    print(scores.table())
    print(f"wrote {Path(folder) / 'scores.json'} and {png}")
    return 0
