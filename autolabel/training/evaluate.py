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
    weights: tuple[str, ...] = ("student",),
    progress: bool = True,
    where: str = "evaluate",
) -> dict[str, OccupancyScores]:
    """mIoU / geometric IoU within mask_camera over `frames` (opened with their ground truth; `split` names them in
    messages, `where` says whose they are), per network of the checkpoint named in `weights`: the student, the
    teacher (depth-aware as configured) or both, read from one pass over the frames."""
    if len(frames) == 0:
        raise DataError(f"{where}: the {split} split has no frames (set data.val_scenes)")
    models = {w: load_network(network, checkpoint, device, w).model for w in weights}
    threshold = readout(dts, checkpoint).occupied_threshold
    dataset = FrameDataset(frames, network.image_size, labels="none", grid=network.grid)
    metrics = {w: OccupancyMetric() for w in weights}
    for i in tqdm(range(len(dataset)), desc=f"evaluate ({split})", disable=not progress):
        item = dataset[i]
        if not bool(item["has_gt"]):
            continue
        inputs = [item[k][None].to(device) for k in ("images", "intrinsics", "cam2ego")]  # once for every network
        depth = item["depth"][None].to(device) if ("teacher" in models and dts.depth_aware) else None
        for w, model in models.items():
            sem, _ = predict(model, *inputs, depth if w == "teacher" else None, occupied_threshold=threshold)
            metrics[w].update(sem[0].cpu(), item["gt_semantics"], item["gt_mask"])
    if any(m.confusion.sum() == 0 for m in metrics.values()):
        raise DataError(f"{where}: no {split} frame has Occ3D ground truth (gts/)")
    return {w: m.compute() for w, m in metrics.items()}
