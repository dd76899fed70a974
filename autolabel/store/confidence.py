"""Confidence levels and per-class confidence thresholds: how every labeller's confidence is stored and cut.

A voxel's confidence in [0, 1] is stored as a uint8 level (`to_levels`: round(255 x confidence)). Per-class
thresholds: a confidence histogram (uint8 levels) per class over a set of frames; class c keeps the voxels
at or above the `drop_quantile` quantile of its own confidences, so that every class loses the same share of
its least confident voxels and rare classes are not wiped out by a global threshold. In the teacher's
training batches dropped voxels become 255 (the 3D loss ignores them, autolabel.dts.teacher); the Occ3D
export keeps their class and clears them from the masks instead (autolabel.store.export).
"""

from __future__ import annotations

import numpy as np
import torch

from occnet.classes import IGNORE_ID, NUM_CLASSES

LEVELS = 256  # confidence is stored as uint8


def to_levels(confidence: torch.Tensor) -> torch.Tensor:
    """Float confidence in [0, 1] -> uint8 levels (what the store keeps)."""
    return (confidence.float().clamp(0, 1) * (LEVELS - 1)).round().to(torch.uint8)


def confidence_histogram(semantics: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """(NUM_CLASSES, 256) int64 counts of confidence levels per class (voxels labelled 255 skipped)."""
    s = semantics.reshape(-1).long()
    keep = s != IGNORE_ID
    flat = s[keep] * LEVELS + levels.reshape(-1)[keep].long()
    return torch.bincount(flat, minlength=NUM_CLASSES * LEVELS).view(NUM_CLASSES, LEVELS)


def level_histogram(semantics: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """(NUM_CLASSES, 256) int64 counts of confidence levels per class (voxels labelled 255 skipped): what
    `confidence_histogram` counts, on uint8 arrays of any shape (a block of frames at once)."""
    key = semantics.astype(np.uint16) << 8 | confidence  # class * 256 + level; 255 * 256 + level: unlabelled
    counts = np.bincount(key.reshape(-1), minlength=1 << 16)
    return counts[: NUM_CLASSES * LEVELS].reshape(NUM_CLASSES, LEVELS).astype(np.int64)


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
