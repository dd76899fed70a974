"""The occupancy threshold of a trained network, calibrated against LiDAR without any 3D label.

Why: a network trained by voxel rendering alone does not make the ground layer opaque. A camera ray meets
the ground at a grazing angle; the LiDAR return lies inside a 0.4 m voxel layer that the ray crosses for
metres before reaching it, so the rendered depth is only right if that layer stays half transparent
(occupancy o = 1 - exp(-sigma * voxel) of about 0.1-0.2, measured). Read out at o >= 0.5, such a network
calls the ground free. The threshold that separates occupied from free voxels is a property of the trained
density field, so it is measured on it: over training frames, the threshold whose occupied voxels best
match the voxels holding LiDAR returns, among the voxels LiDAR observed (crossed or hit). The result is
saved beside the checkpoint and read back by autolabel.checkpoint (`save_threshold`, `readout`).
"""

from __future__ import annotations

import torch

from occnet.inference import voxel_probabilities

from ..dts.pseudo import THRESHOLD_CANDIDATES, best_threshold, lidar_free_and_hits, lidar_iou_counts


@torch.no_grad()
def calibrate_threshold(model, dataset, device: torch.device, frames: int = 16) -> dict:
    """Threshold with the best IoU between predicted occupancy and LiDAR-hit voxels within LiDAR-observed
    voxels, over up to `frames` frames of `dataset` (items with depth maps). Returns threshold, its IoU and
    the IoU of every candidate."""
    model.eval()
    grid = model.cfg.grid
    inter = torch.zeros(len(THRESHOLD_CANDIDATES), dtype=torch.float64)
    union = torch.zeros_like(inter)
    picks = range(0, len(dataset), max(1, len(dataset) // frames))[:frames]
    for i in picks:
        item = dataset[i]
        batch = {k: item[k][None].to(device) for k in ("images", "intrinsics", "cam2ego", "depth")}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(batch["images"], batch["intrinsics"], batch["cam2ego"])
        occ = voxel_probabilities(out, float(min(grid.voxel_size)))[0][0]
        free, hit = lidar_free_and_hits(
            batch["depth"][0], batch["intrinsics"][0], batch["cam2ego"][0], grid, item["semantics"].to(device)
        )
        i_, u_ = lidar_iou_counts(occ, free, hit)
        inter += i_.cpu()
        union += u_.cpu()
    best, iou = best_threshold(inter, union)
    return {
        "threshold": best,
        "lidar_iou": max(iou),
        "frames": len(picks),
        "candidates": dict(zip(map(str, THRESHOLD_CANDIDATES), iou)),
    }
