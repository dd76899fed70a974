"""Pseudo-labels from teacher predictions: LiDAR filtering and per-class confidence thresholds.

LiDAR filtering uses the LiDAR depth maps (the returns the cameras see, at the network's resolution):
each pixel with a depth is a ray from the camera centre to its return. Voxels the ray crosses before the
return are free (confidence 1: LiDAR saw through them); the return's voxel is occupied and takes the
teacher's best class (with that class's probability as confidence), even where the teacher said free.

Per-class thresholds: a confidence histogram (uint8 levels) per class over a set of frames; class c
keeps the voxels at or above the `drop_quantile` quantile of its own confidences, so that every class
loses the same share of its least confident voxels and rare classes are not wiped out by a global
threshold. Dropped voxels become 255 (unknown).
"""
from __future__ import annotations

import torch

from kernels.grid import GridSpec
from occnet.classes import FREE_ID, IGNORE_ID, NUM_CLASSES
from occnet.visibility import ray_voxels

LEVELS = 256  # confidence is stored as uint8


def depth_rays(depth: torch.Tensor, K: torch.Tensor, cam2ego: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rays of the pixels with a LiDAR depth. depth (N, H, W) z-depth, K (N, 3, 3), cam2ego (N, 4, 4).

    Returns origins (R, 3), unit directions (R, 3) and distances to the return (R,) in the ego frame.
    """
    cam, v, u = torch.nonzero(depth > 0, as_tuple=True)
    z = depth[cam, v, u].double()
    pix = torch.stack([u.double() + 0.5, v.double() + 0.5, torch.ones_like(z)], 1)
    xyz = torch.linalg.solve(K.double()[cam], pix[..., None])[..., 0] * z[:, None]  # camera frame point
    T = cam2ego.double()[cam]
    point = (T[:, :3, :3] @ xyz[..., None])[..., 0] + T[:, :3, 3]
    origin = T[:, :3, 3]
    vec = point - origin
    dist = vec.norm(dim=1)
    return origin, vec / dist[:, None], dist


def lidar_free_and_hits(depth: torch.Tensor, K: torch.Tensor, cam2ego: torch.Tensor,
                        grid: GridSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, Y, Z) bool grids: voxels LiDAR rays cross before their return (free) and return voxels (hit)."""
    origin, dirs, dist = depth_rays(depth, K, cam2ego)
    hit = torch.zeros(grid.num_voxels, dtype=torch.bool, device=depth.device)
    if len(dist) == 0:
        return hit.view(grid.shape), hit.view(grid.shape).clone()
    point = origin + dirs * dist[:, None]
    lo = torch.tensor(grid.range_min, device=depth.device, dtype=torch.float64)
    vs = torch.tensor(grid.voxel_size, device=depth.device, dtype=torch.float64)
    idx = torch.floor((point - lo) / vs).long()
    shape = torch.tensor(grid.shape, device=depth.device)
    inside = ((idx >= 0) & (idx < shape)).all(1)
    idx = idx[inside]
    hit[(idx[:, 0] * grid.shape[1] + idx[:, 1]) * grid.shape[2] + idx[:, 2]] = True
    hit = hit.view(grid.shape)
    free = ray_voxels(origin, dirs, grid, t_max=dist) & ~hit
    return free, hit


def apply_lidar(semantics: torch.Tensor, confidence: torch.Tensor, cls: torch.Tensor, pcls: torch.Tensor,
                free: torch.Tensor, hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All (X, Y, Z): LiDAR-free voxels -> free with confidence 1; return voxels -> teacher class, pcls."""
    semantics = torch.where(free, torch.full_like(semantics, FREE_ID), semantics)
    confidence = torch.where(free, torch.ones_like(confidence), confidence)
    semantics = torch.where(hit, cls.to(semantics.dtype), semantics)
    confidence = torch.where(hit, pcls.to(confidence.dtype), confidence)
    return semantics, confidence


def to_levels(confidence: torch.Tensor) -> torch.Tensor:
    """Float confidence in [0, 1] -> uint8 levels (what the store keeps)."""
    return (confidence.float().clamp(0, 1) * (LEVELS - 1)).round().to(torch.uint8)


def confidence_histogram(semantics: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """(NUM_CLASSES, 256) int64 counts of confidence levels per class (voxels labelled 255 skipped)."""
    s = semantics.reshape(-1).long()
    keep = s != IGNORE_ID
    flat = s[keep] * LEVELS + levels.reshape(-1)[keep].long()
    return torch.bincount(flat, minlength=NUM_CLASSES * LEVELS).view(NUM_CLASSES, LEVELS)


def class_thresholds(histogram: torch.Tensor, drop_quantile: float) -> torch.Tensor:
    """(NUM_CLASSES,) uint8-level thresholds: the lowest level at which a class's cumulative count
    exceeds drop_quantile of its voxels (0 for classes with none: nothing to drop)."""
    cum = histogram.cumsum(1)
    total = cum[:, -1:]
    below = cum <= drop_quantile * total  # levels whose voxels all fall inside the dropped share
    return torch.where(total[:, 0] > 0, below.sum(1), torch.zeros_like(total[:, 0]))


def threshold(semantics: torch.Tensor, levels: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """semantics with 255 where a voxel's level is below its class's threshold."""
    s = semantics.long()
    known = s != IGNORE_ID
    t = thresholds.to(s.device)[s.clamp(max=NUM_CLASSES - 1)]
    keep = known & (levels.long() >= t)
    return torch.where(keep, semantics, torch.full_like(semantics, IGNORE_ID))
