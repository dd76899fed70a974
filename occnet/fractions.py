"""Confidences travel from the loaders to the device as uint8 levels (0..255) and become fractions there.

The supervision cache and the fused-label store keep confidence as round(255 x c); the loaders used to divide
on the host and move float32 (4 bytes a pixel or voxel, about a quarter of a training batch at nuScenes size).
Now they hand over the stored bytes and `batch_fractions` decodes them on the device through the same 256-entry
table the host's readers index (`SupervisionCache.read`), so the values are bit-identical to the host's (a CUDA
division by a scalar multiplies by its reciprocal, which can differ in the last bit).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

# level -> fraction: the one decoding of a stored uint8 confidence, on the host (SupervisionCache.read) and the device
LEVEL_FRACTIONS = np.arange(256, dtype=np.uint8).astype(np.float32) / 255
FRACTION_KEYS = ("confidence", "aux_confidence", "fused_confidence")  # batch entries that may arrive as levels


def to_fraction(t: torch.Tensor) -> torch.Tensor:
    """uint8 levels (any shape) -> float32 fractions on t's device; a float tensor is returned as it is."""
    if t.dtype != torch.uint8:
        return t
    return _table(t.device)[t.long()]


def batch_fractions(batch: dict) -> dict:
    """The batch with its FRACTION_KEYS entries as float32 fractions (the other entries untouched)."""
    return {k: to_fraction(v) if k in FRACTION_KEYS and torch.is_tensor(v) else v for k, v in batch.items()}


@functools.lru_cache(maxsize=None)
def _table(device: torch.device) -> torch.Tensor:
    return torch.from_numpy(LEVEL_FRACTIONS).to(device)
