"""Occ3D evaluation of a trained network on frames with ground truth (the recipe's validation scenes)."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from occnet.inference import predict
from occnet.metrics import OccupancyMetric, OccupancyScores

from ..checkpoint import load_network, readout
from ..dataset import open_frames
from ..errors import DataError
from ..network_input import FrameDataset
from ..recipe import Recipe
from ..supervision.providers import resolve_device


def evaluate_checkpoint(
    recipe: Recipe, checkpoint: Path, split: str = "val", use_teacher: bool = False, progress: bool = True
) -> OccupancyScores:
    """mIoU / geometric IoU of the student (or the teacher, depth-aware as configured) within mask_camera."""
    device = resolve_device(recipe.device)
    frames = open_frames(recipe, split, load_images=True, load_gt=True)
    if len(frames) == 0:
        raise DataError(f"recipe {recipe.name}: the {split} split has no frames (set data.val_scenes)")
    model = load_network(recipe.network, checkpoint, device, "teacher" if use_teacher else "student").model
    threshold = readout(recipe.dts, checkpoint).occupied_threshold
    dataset = FrameDataset(frames, recipe.network.image_size, labels="none", grid=recipe.network.grid)
    metric = OccupancyMetric()
    for i in tqdm(range(len(dataset)), desc=f"evaluate ({split})", disable=not progress):
        item = dataset[i]
        if not bool(item["has_gt"]):
            continue
        depth = item["depth"][None].to(device) if (use_teacher and recipe.dts.depth_aware) else None
        sem, _ = predict(
            model,
            item["images"][None].to(device),
            item["intrinsics"][None].to(device),
            item["cam2ego"][None].to(device),
            depth,
            occupied_threshold=threshold,
        )
        metric.update(sem[0].cpu(), item["gt_semantics"], item["gt_mask"])
    if metric.confusion.sum() == 0:
        raise DataError(f"recipe {recipe.name}: no {split} frame has Occ3D ground truth (gts/)")
    return metric.compute()
