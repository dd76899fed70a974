"""Per-voxel predictions: Occ3D semantics (free = 17) and confidence."""

from __future__ import annotations

import torch

from .classes import FREE_ID
from .network import OccupancyNetwork


@torch.no_grad()
def predict(
    model: OccupancyNetwork,
    images: torch.Tensor,
    intrinsics: torch.Tensor,
    cam2ego: torch.Tensor,
    depth_maps: torch.Tensor | None = None,
    occupied_threshold: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched inference.

    Returns semantics (B, X, Y, Z) uint8 — the most likely class where the occupancy probability
    o = 1 - exp(-sigma * voxel) reaches `occupied_threshold`, else free (17) — and confidence
    (B, X, Y, Z) float32: max class probability x o for occupied voxels, 1 - o for free ones.
    """
    was_training = model.training
    model.eval()
    try:
        cuda = images.is_cuda
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out = model(images, intrinsics, cam2ego, depth_maps)
        return voxel_labels(*voxel_probabilities(out, float(min(model.cfg.grid.voxel_size))), occupied_threshold)
    finally:
        model.train(was_training)


def voxel_probabilities(out, voxel_size: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Network output -> occupancy probability o = 1 - exp(-sigma * voxel), best class (int64) and its
    probability, each (B, X, Y, Z)."""
    occ = -torch.expm1(-out.density.float() * voxel_size)
    pcls, cls = out.logits.float().softmax(-1).max(-1)
    return occ, cls, pcls


def voxel_labels(
    occ: torch.Tensor, cls: torch.Tensor, pcls: torch.Tensor, occupied_threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Semantics (uint8, free = 17 where o < threshold) and confidence (pcls * o, or 1 - o for free)."""
    occupied = occ >= occupied_threshold
    semantics = torch.where(occupied, cls, torch.full_like(cls, FREE_ID)).to(torch.uint8)
    return semantics, torch.where(occupied, pcls * occ, 1 - occ)
