"""Occ3D evaluation of a trained network on frames with ground truth (the recipe's validation scenes)."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from occnet.config import NetworkConfig
from occnet.inference import predict
from occnet.metrics import OccupancyMetric, OccupancyScores

from ..checkpoint import load_network, readout
from ..data.nuscenes import NuScenesFrames
from ..dts.config import DTSConfig
from ..errors import DataError
from ..network_input import FrameDataset


def evaluate_network(
    frames: NuScenesFrames,
    checkpoint: Path,
    network: NetworkConfig,
    dts: DTSConfig,
    device: torch.device,
    split: str = "val",
    weights: str = "student",
    progress: bool = True,
    where: str = "evaluate",
) -> OccupancyScores:
    """mIoU / geometric IoU of the student (or the teacher, depth-aware as configured) within mask_camera, over
    `frames` (opened with their ground truth; `split` names them in messages, `where` says whose they are)."""
    if len(frames) == 0:
        raise DataError(f"{where}: the {split} split has no frames (set data.val_scenes)")
    net = load_network(network, checkpoint, device, weights)
    model = net.model
    threshold = readout(dts, checkpoint).occupied_threshold
    dataset = FrameDataset(frames, network.image_size, labels="none", grid=network.grid)
    metric = OccupancyMetric()
    for i in tqdm(range(len(dataset)), desc=f"evaluate ({split})", disable=not progress):
        item = dataset[i]
        if not bool(item["has_gt"]):
            continue
        depth = item["depth"][None].to(device) if (weights == "teacher" and dts.depth_aware) else None
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
        raise DataError(f"{where}: no {split} frame has Occ3D ground truth (gts/)")
    return metric.compute()
