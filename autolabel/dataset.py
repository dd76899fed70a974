"""The recipe's frames: the dataset opened through nuscenes-devkit, generated first when the recipe
asks for the synthetic world and none exists yet."""
from __future__ import annotations

import shutil
from pathlib import Path

from .data.nuscenes import NuScenesFrames
from .recipe import Recipe


def ensure_dataset(recipe: Recipe, progress: bool = True) -> Path:
    """The dataset root; a synthetic world is written to a temp folder and renamed into place when
    complete, so that an interrupted generation is redone rather than used half-written."""
    root = recipe.dataroot
    if recipe.data.dataroot is None and not (root / recipe.version).is_dir():
        from .synth.writer import write_dataset

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
    return NuScenesFrames(root, recipe.version, sweeps=recipe.data.sweeps, load_images=load_images, load_gt=load_gt,
                          grid=recipe.network.grid, scenes=scenes, exclude_scenes=exclude)
