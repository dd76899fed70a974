"""``autolabel eval-2d RECIPE [--truth exact|lidarseg|DIR]``: pixel mIoU, accuracy, coverage, confidence AUROC
and a confusion matrix of the cached 2D labels, against the synthetic world's exact maps, projected
nuScenes-lidarseg points, or a folder of 2D label maps (`autolabel.supervision.truth2d`)."""

from __future__ import annotations

import json
from pathlib import Path

from occnet.classes import FREE_ID, OCC3D_CLASS_NAMES

from ..stages.inputs import open_frames
from ..recipe import load_recipe
from ..report.figures import confusion_png
from ..supervision.cache import SupervisionCache
from ..supervision.eval2d import evaluate_cache
from ..errors import DataError
from ..supervision.providers import LidarsegLabels, PrecomputedLabels
from ..supervision.truth2d import FolderTruth


def run(
    recipe_path: str, overrides: list[str], out: str | None, truth: str, progress: bool = True, table: str | None = None
) -> int:
    recipe = load_recipe(recipe_path, overrides, out)
    frames = open_frames(recipe, "all", load_images=False, load_gt=False)
    cache = SupervisionCache.open(recipe.cache_path)
    if truth == "exact":
        gt = PrecomputedLabels(frames.dataroot, recipe.supervision.precomputed.folder, "exact")
    elif truth == "lidarseg":
        gt = LidarsegLabels(frames.nusc, recipe.supervision.lidar_min_depth)
    else:
        gt = FolderTruth(truth, lambda token: frames.nusc.get("sample_data", token)["filename"])
    scores = evaluate_cache(cache, frames, gt, progress)
    if isinstance(gt, FolderTruth):
        if not gt.images_with_truth:
            raise DataError(
                f"--truth: no map under {truth} matches a camera image of the cached frames; name each map "
                f"by the image's sample_data token or file stem (e.g. {next(iter(gt.files))}.png is not one)"
            )
        unused = gt.unused()
        print(
            f"truth maps for {gt.images_with_truth} camera images"
            + (f"; {len(unused)} maps match no cached camera image (e.g. {unused[0]})" if unused else "")
        )
    folder = recipe.run_dir / "eval2d"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scores.json").write_text(
        json.dumps(
            {
                "truth": truth,
                "cache": str(cache.arrays.where),
                "provider": cache.arrays.attrs.get("provider"),
                **scores.as_dict(),
            },
            indent=1,
        )
    )
    names = list(OCC3D_CLASS_NAMES[:FREE_ID])
    png = confusion_png(
        scores.confusion,
        names,
        names + ["unlabelled"],
        folder / "confusion.png",
        f"2D labels ({cache.arrays.attrs.get('provider')}) vs {Path(truth).name} truth: mIoU {100 * scores.miou:.1f}",
    )
    print(scores.table())
    print(f"wrote {Path(folder) / 'scores.json'} and {png}")
    if table:
        row = append_row(Path(table), recipe.name, cache.arrays.attrs.get("provider"), truth, scores)
        print(f"added to {table}: {row}")
    return 0


TABLE_HEADER = (
    "| recipe | provider | truth | mIoU | accuracy | coverage | coverage (truth px) | confidence AUROC | truth px |\n"
    "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
)


def append_row(path: Path, recipe: str, provider: str, truth: str, scores) -> str:
    """One Markdown row per eval-2d run in a shared table (header written when the file is new), so runs of
    several providers on the same truth read as one table."""
    import math

    auroc = scores.confidence_auroc
    row = (
        f"| {recipe} | {provider} | {truth} | {100 * scores.miou:.1f} | {100 * scores.accuracy:.1f} | "
        f"{100 * scores.coverage:.1f} | {100 * scores.coverage_gt:.1f} | "
        f"{'-' if math.isnan(auroc) else f'{auroc:.3f}'} | "
        f"{scores.pixels} |"
    )
    new = not path.is_file()
    with path.open("a") as f:
        f.write((TABLE_HEADER if new else "") + row + "\n")
    return row
