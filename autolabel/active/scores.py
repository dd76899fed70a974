"""Acquisition scores of one frame from the network's voxel outputs (pure tensor functions).

- uncertainty: class-frequency-weighted mean entropy of each voxel's 18-way distribution (17 classes x
  occupancy, and free) within mask_camera; the weight of a voxel is that of its predicted class, so that
  voxels of rare classes count more;
- disagreement: share of mask_camera voxels whose teacher and student labels differ;
- rendering residual: how badly the current model renders the frame's own LiDAR depth (mean absolute
  log error) and 2D labels (cross-entropy) -- needs no 3D labels and works before any teacher exists.
"""

from __future__ import annotations

import torch

from occnet.classes import FREE_ID, NUM_CLASSES


def voxel_distribution(density: torch.Tensor, logits: torch.Tensor, voxel_size: float) -> torch.Tensor:
    """(..., X, Y, Z) density and (..., K) logits -> (..., 18) probabilities: o * softmax, then 1 - o for free."""
    occ = -torch.expm1(-density.float() * voxel_size)
    return torch.cat([occ[..., None] * logits.float().softmax(-1), (1 - occ)[..., None]], -1)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """(..., C) probabilities -> (...) entropy in nats."""
    p = probs.clamp_min(1e-12)
    return -(p * p.log()).sum(-1)


def class_weights(histogram: torch.Tensor, power: float = 0.5) -> torch.Tensor:
    """(18,) predicted-voxel counts over the pool -> (18,) weights (1 / frequency) ** power, scaled so that
    the voxel-weighted mean weight is 1; classes never predicted get the largest weight seen."""
    freq = histogram.double() / histogram.sum().clamp_min(1)
    w = torch.where(freq > 0, freq.clamp_min(1e-12) ** -power, torch.zeros_like(freq))
    w = torch.where(freq > 0, w, w.max())
    return (w / (w * freq).sum().clamp_min(1e-12)).float()


def entropy_by_class(probs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """probs (X, Y, Z, 18), mask (X, Y, Z) -> per predicted class: sum of voxel entropies and voxel count
    within the mask, each (18,)."""
    p = probs[mask.bool()]
    lab = p.argmax(-1)
    sums = torch.zeros(NUM_CLASSES, device=p.device).index_add_(0, lab, entropy(p))
    return sums, torch.bincount(lab, minlength=NUM_CLASSES).float()


def weighted_uncertainty(sums: torch.Tensor, counts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(..., 18) entropy sums and counts, (18,) class weights -> (...) mean voxel entropy where each voxel
    weighs as its predicted class."""
    w = weights.to(sums.device)
    return (sums * w).sum(-1) / (counts * w).sum(-1).clamp_min(1e-12)


def uncertainty(probs: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> float:
    """probs (X, Y, Z, 18), mask (X, Y, Z) -> class-weighted mean voxel entropy within the mask."""
    return float(weighted_uncertainty(*entropy_by_class(probs, mask), weights))


def disagreement(teacher_labels: torch.Tensor, student_labels: torch.Tensor, mask: torch.Tensor) -> float:
    m = mask.bool()
    if not m.any():
        return 0.0
    return float((teacher_labels[m] != student_labels[m]).float().mean())


def occupied_voxels(probs: torch.Tensor, mask: torch.Tensor) -> int:
    """Visible voxels predicted occupied: what a dense 3D annotator has to label."""
    return int((probs[mask.bool()].argmax(-1) != FREE_ID).sum())
