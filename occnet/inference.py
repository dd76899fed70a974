"""Per-voxel predictions: Occ3D semantics (free = 17) and confidence."""
from __future__ import annotations

import torch

from .network import OccupancyNetwork


@torch.no_grad()
def predict(model: OccupancyNetwork, images: torch.Tensor, intrinsics: torch.Tensor, cam2ego: torch.Tensor,
            depth_maps: torch.Tensor | None = None, occupied_threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched inference.

    Returns semantics (B, X, Y, Z) uint8 — the most likely class where the occupancy probability
    o = 1 - exp(-sigma * voxel) reaches `occupied_threshold`, else free (= num_classes) — and confidence
    (B, X, Y, Z) float32: max class probability x o for occupied voxels, 1 - o for free ones.
    """
    was_training = model.training
    model.eval()
    try:
        cuda = images.is_cuda
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out = model(images, intrinsics, cam2ego, depth_maps)
        voxel = float(min(model.cfg.grid.voxel_size))
        occ = -torch.expm1(-out.density.float() * voxel)
        probs = out.logits.float().softmax(-1)
        pmax, cls = probs.max(-1)
        occupied = occ >= occupied_threshold
        semantics = torch.where(occupied, cls, torch.full_like(cls, model.cfg.num_classes)).to(torch.uint8)
        confidence = torch.where(occupied, pmax * occ, 1 - occ)
        return semantics, confidence
    finally:
        model.train(was_training)
