"""The occupancy threshold of a trained network, calibrated against LiDAR without any 3D label.

Why: a network trained by voxel rendering alone does not make the ground layer opaque. A camera ray meets
the ground at a grazing angle; the LiDAR return lies inside a 0.4 m voxel layer that the ray crosses for
metres before reaching it, so the rendered depth is only right if that layer stays half transparent
(occupancy o = 1 - exp(-sigma * voxel) of about 0.1-0.2, measured). Read out at o >= 0.5, such a network
calls the ground free. The threshold that separates occupied from free voxels is a property of the trained
density field, so it is measured on it: over training frames, the threshold whose occupied voxels best
match the voxels holding LiDAR returns, among the voxels LiDAR observed (crossed or hit).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from occnet.inference import voxel_probabilities

from ..dts.pseudo import lidar_free_and_hits

THRESHOLD_FILE = "occupancy_threshold.json"
CANDIDATES = (0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


@torch.no_grad()
def calibrate_threshold(model, dataset, device: torch.device, frames: int = 16) -> dict:
    """Threshold with the best IoU between predicted occupancy and LiDAR-hit voxels within LiDAR-observed
    voxels, over up to `frames` frames of `dataset` (items with depth maps). Returns threshold, its IoU and
    the IoU of every candidate."""
    model.eval()
    grid = model.cfg.grid
    inter = torch.zeros(len(CANDIDATES), dtype=torch.float64)
    union = torch.zeros(len(CANDIDATES), dtype=torch.float64)
    picks = range(0, len(dataset), max(1, len(dataset) // frames))[:frames]
    for i in picks:
        item = dataset[i]
        batch = {k: item[k][None].to(device) for k in ("images", "intrinsics", "cam2ego", "depth")}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(batch["images"], batch["intrinsics"], batch["cam2ego"])
        occ = voxel_probabilities(out, float(min(grid.voxel_size)))[0][0]
        free, hit = lidar_free_and_hits(batch["depth"][0], batch["intrinsics"][0], batch["cam2ego"][0], grid)
        seen = free | hit
        o, h = occ[seen], hit[seen]
        for j, th in enumerate(CANDIDATES):
            pred = o >= th
            inter[j] += float((pred & h).sum())
            union[j] += float((pred | h).sum())
    iou = (inter / union.clamp_min(1)).tolist()
    best = max(range(len(CANDIDATES)), key=lambda j: iou[j])
    return {"threshold": CANDIDATES[best], "lidar_iou": iou[best], "frames": len(picks),
            "candidates": dict(zip(map(str, CANDIDATES), iou))}


def save_threshold(folder: Path, result: dict) -> None:
    (folder / THRESHOLD_FILE).write_text(json.dumps(result, indent=1))


def load_threshold(checkpoint: Path, default: float) -> float:
    """The calibrated threshold saved beside a checkpoint, else `default`."""
    path = Path(checkpoint).parent / THRESHOLD_FILE
    return float(json.loads(path.read_text())["threshold"]) if path.is_file() else default
