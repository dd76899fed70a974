"""What the stages open from a recipe: its frames (generating the synthetic world first when the recipe asks
for one), the 2D supervision cache, the fused labels, a round's checkpoint, manifest and manual labels.

The run folder's layout lives here and in `Recipe` (run_dir, store_path, cache_path, fusion_path,
round_dir, delivery_dir): the library below the stages takes the paths and the opened objects.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from occnet.trainer import CHECKPOINT

from ..active.manifest import MANIFEST, SELECT_DIR, read_manifest
from ..data.nuscenes import NuScenesFrames
from ..data.occ3d import Occ3DLabels
from ..errors import DataError
from ..fusion.fused_labels import open_fused
from ..recipe import Recipe
from ..store.frame_arrays import FrameArrays
from ..store.manual import manual_labels
from ..supervision import cache as supervision_cache
from ..synth.writer import write_dataset
from .checks import check_dataroot


def ensure_dataset(recipe: Recipe, progress: bool = True) -> Path:
    """The dataset root; a synthetic world is written to a temp folder and renamed into place when
    complete, so that an interrupted generation is redone rather than used half-written."""
    check_dataroot(recipe)  # so that the data stage is never recorded done for a folder that holds no dataset
    root = recipe.dataroot
    if recipe.data.dataroot is None and not (root / recipe.version).is_dir():
        tmp = root.with_name(root.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        write_dataset(tmp, recipe.data.synth, recipe.network.grid, progress=progress)
        tmp.rename(root)
    return root


def open_frames(recipe: Recipe, split: str = "all", load_images: bool = True, load_gt: bool = True) -> NuScenesFrames:
    """Frames of the recipe's dataset: split = all | train | val. Training opens them with load_gt=False:
    ground truth in gts/ never reaches training except through ingested manual labels."""
    if split not in ("all", "train", "val"):
        raise ValueError(f"split must be all, train or val, got {split!r}")
    root = ensure_dataset(recipe)
    scenes, exclude = None, ()
    if split == "val":
        scenes = recipe.data.val_scenes
    elif split == "train":
        scenes, exclude = recipe.data.train_scenes, recipe.data.val_scenes
    return NuScenesFrames(
        root,
        recipe.version,
        sweeps=recipe.data.sweeps,
        load_images=load_images,
        load_gt=load_gt,
        grid=recipe.network.grid,
        scenes=scenes,
        exclude_scenes=exclude,
    )


def has_gts(recipe: Recipe) -> bool:
    """Whether the dataset holds Occ3D ground truth (gts/) to score rounds against."""
    return (recipe.dataroot / "gts").is_dir()


def open_cache(recipe: Recipe) -> supervision_cache.SupervisionCache:
    return supervision_cache.open_cache(recipe.cache_path)


def fused_labels(recipe: Recipe, training: bool) -> FrameArrays | None:
    """The run's fused labels (autolabel.fusion) where a round reads them, else None: training reads them for
    loss.fused_3d and for a teacher with dts.evidence: fusion, labelling for dts.evidence: fusion."""
    teacher = recipe.dts.evidence == "fusion" and (recipe.dts.enabled or not training)
    if not (teacher or (training and recipe.loss.fused_3d > 0)):
        return None
    return open_fused(recipe.fusion_path, recipe.network.grid)


def checkpoint_path(recipe: Recipe, k: int) -> Path:
    """Round k's training checkpoint (``<run>/round_<K>/train/checkpoint.pt``)."""
    return recipe.round_dir(k) / "train" / CHECKPOINT


def check_checkpoint(recipe: Recipe, k: int) -> Path:
    """Round k's trained network, which must exist (checked before a stage that reads it writes anything)."""
    checkpoint = checkpoint_path(recipe, k)
    if not checkpoint.is_file():
        raise DataError(
            f"round {k}: the trained network {checkpoint} is missing; run `autolabel train --round {k}` first"
        )
    return checkpoint


def select_dir(recipe: Recipe, k: int) -> Path:
    """Round k's selection: manifest.json / manifest.csv for tools, index.html for people."""
    return recipe.round_dir(k) / SELECT_DIR


def manifest_path(recipe: Recipe, k: int) -> Path:
    return select_dir(recipe, k) / MANIFEST


def export_dir(recipe: Recipe, k: int) -> Path:
    """Where the run's export stage writes round k's Occ3D files."""
    return recipe.run_dir / "export" / f"round_{k}"


def selected_from(recipe: Recipe, k: int) -> set[str]:
    """Tokens that round k or a later round selected for annotation. Round k does not train on their
    manual labels: they answer a later selection, so retraining round k of a finished run sees what it saw
    then. Manual labels that answer no selection of this run (given before it, or written directly by a
    benchmark's oracle) count for every round."""
    out: set[str] = set()
    j = k
    while manifest_path(recipe, j).is_file():
        out |= {row["token"] for row in read_manifest(manifest_path(recipe, j))["selected"]}
        j += 1
    return out


def round_manual_labels(recipe: Recipe, k: int) -> dict[str, Occ3DLabels]:
    """The manual 3D labels round k trains on (and counts): every ingested frame but those a selection of
    round k or later asked for (`selected_from`)."""
    return manual_labels(recipe.store_path, recipe.network.grid, selected_from(recipe, k))
