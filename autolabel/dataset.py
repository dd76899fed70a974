"""The recipe's frames: the dataset opened through nuscenes-devkit, generated first when the recipe
asks for the synthetic world and none exists yet."""

from __future__ import annotations

import shutil
from pathlib import Path

from .data.nuscenes import NuScenesFrames, check_version_folder
from .errors import DataError
from .recipe import Recipe

NUSCENES_DOWNLOAD = (
    "download nuScenes (v1.0-trainval or v1.0-mini: the metadata tables, samples/ and sweeps/) from "
    "https://www.nuscenes.org/download and unpack it there, or point data.dataroot at your copy"
)


def check_dataroot(recipe: Recipe) -> None:
    """A recipe naming a dataset folder must find its tables there (a synthetic world is generated instead)."""
    if recipe.data.dataroot is None:
        return
    root = Path(recipe.data.dataroot)
    if not root.is_dir():
        raise DataError(f"data.dataroot {root} does not exist: {NUSCENES_DOWNLOAD}")
    try:
        check_version_folder(root, recipe.data.version)
    except DataError as exc:
        raise DataError(f"data.dataroot / data.version: {exc}") from None


def is_synthetic_world(root: Path, version: str) -> bool:
    """Whether a dataset folder holds a world written by `autolabel synth` (every log's vehicle is
    "synthetic"), whose gts/ is exact ground truth that a simulated annotator may copy."""
    import json

    try:
        logs = json.loads((Path(root) / version / "log.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(logs) and all(isinstance(r, dict) and r.get("vehicle") == "synthetic" for r in logs)


def check_annotator(recipe: Recipe) -> None:
    """The simulated (oracle) annotator copies the dataset's gts/ as if annotators had delivered it. On a
    synthetic world that is the experiment; on real data it would pass the benchmark's ground truth off as
    manual labels, so it is refused unless the recipe says `rounds.oracle_on_real_data: true`."""
    rounds = recipe.rounds
    if rounds.annotator != "oracle" or rounds.count < 2 or rounds.oracle_on_real_data or recipe.data.dataroot is None:
        return
    if not is_synthetic_world(Path(recipe.data.dataroot), recipe.version):
        raise DataError(
            f"rounds.annotator oracle copies {recipe.data.dataroot}/gts as manual labels, but that folder is "
            f"not a synthetic world; use rounds.annotator folder for real annotations, or set "
            f"rounds.oracle_on_real_data: true for a simulation study on this dataset's ground truth"
        )


def ensure_dataset(recipe: Recipe, progress: bool = True) -> Path:
    """The dataset root; a synthetic world is written to a temp folder and renamed into place when
    complete, so that an interrupted generation is redone rather than used half-written."""
    check_dataroot(recipe)  # so that the data stage is never recorded done for a folder that holds no dataset
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
