"""Checks of a recipe that need no work, made before a stage writes anything: the dataset folder and its
tables, the annotator, the backbone file (`autolabel.pipeline.preflight` runs them all before a run)."""

from __future__ import annotations

import json
from pathlib import Path

from occnet.network import backbone_state

from ..data.nuscenes import check_version_folder
from ..errors import DataError
from ..recipe import Recipe

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


# torchvision's ImageNet weights of each backbone (IMAGENET1K_V1 for resnet18 / resnet34, V2 for resnet50 / resnet101)
BACKBONE_DOWNLOADS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-cd907fc2.pth",
}


def check_backbone(recipe: Recipe) -> None:
    """network.backbone_weights, when set, must be a torchvision state dict of network.backbone (keys and
    shapes): a DataError naming the key and the file otherwise, before any work."""
    net = recipe.network
    if net.backbone_weights is None:
        return
    try:
        backbone_state(net.backbone, net.backbone_weights)
    except ValueError as exc:
        hint = (
            (
                f": put a torchvision {net.backbone} state dict there (e.g. {BACKBONE_DOWNLOADS[net.backbone]}) or "
                f"unset the key for random initialisation"
            )
            if not Path(net.backbone_weights).exists()
            else ""
        )
        raise DataError(f"network.backbone_weights {net.backbone_weights}: {exc}{hint}") from None
