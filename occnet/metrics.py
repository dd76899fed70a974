"""Occ3D occupancy metric: one confusion matrix accumulated over a whole evaluation set.

Following Occ3D: voxels outside ``mask_camera`` (and ground-truth voxels marked 255) are dropped;
IoU_c = TP_c / (TP_c + FP_c + FN_c) from the accumulated matrix; mIoU is the mean over classes
0..16 of the classes that occur (in ground truth or prediction) at least once in the set — a class
absent from both has an undefined IoU (NaN) and is skipped, as Occ3D's ``nanmean`` does. "free"
(17) takes part in the matrix, so false free / false occupied predictions lower the class IoUs,
but it is not averaged. Geometric IoU treats every class 0..16 as "occupied" against free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .classes import FREE_ID, IGNORE_ID, NUM_CLASSES, NUM_SEMANTIC_CLASSES, OCC3D_CLASS_NAMES


@dataclass
class OccupancyScores:
    """What `OccupancyMetric.compute` returns. IoUs are fractions in [0, 1] (NaN = class absent)."""

    per_class_iou: np.ndarray  # (18,), free included
    miou: float  # mean over classes 0..16 that occur
    geometric_iou: float  # occupied (0..16) vs free
    confusion: np.ndarray  # (18, 18) int64, rows = ground truth, columns = prediction
    class_names: tuple[str, ...] = field(default=OCC3D_CLASS_NAMES)

    def as_dict(self) -> dict:
        """JSON-friendly dict: IoUs in percent, NaN as None."""

        def pct(v: float) -> float | None:
            return None if np.isnan(v) else round(float(v) * 100.0, 2)

        return {
            "miou": pct(self.miou),
            "geometric_iou": pct(self.geometric_iou),
            "per_class_iou": {n: pct(v) for n, v in zip(self.class_names, self.per_class_iou)},
        }

    def table(self) -> str:
        """A plain-text table of per-class IoU, mIoU and geometric IoU (percent)."""
        rows = [f"{'class':<22}{'IoU %':>8}"]
        for name, v in zip(self.class_names, self.per_class_iou):
            rows.append(f"{name:<22}{'-' if np.isnan(v) else f'{v * 100:.2f}':>8}")
        rows.append(f"{'mIoU (0..16)':<22}{self.miou * 100:>8.2f}")
        rows.append(f"{'geometric IoU':<22}{self.geometric_iou * 100:>8.2f}")
        return "\n".join(rows)


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class OccupancyMetric:
    """Accumulates an (18, 18) confusion matrix over frames.

    >>> m = OccupancyMetric()
    >>> for pred, gt, mask in frames: m.update(pred, gt, mask)
    >>> scores = m.compute()
    """

    def __init__(self) -> None:
        self.confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)

    def reset(self) -> None:
        self.confusion[:] = 0

    def update(self, pred, gt, mask=None) -> None:
        """Add one or more frames.

        Args:
            pred: (..., X, Y, Z) integer class ids in 0..17 (numpy or torch).
            gt: same shape, ids in 0..17 or 255 (ignored).
            mask: same shape, non-zero where the voxel counts (Occ3D ``mask_camera``); None = all.
        """
        pred_np, gt_np = _to_numpy(pred), _to_numpy(gt)
        if pred_np.shape != gt_np.shape:
            raise ValueError(f"OccupancyMetric.update: pred shape {pred_np.shape} != gt shape {gt_np.shape}")
        keep = gt_np != IGNORE_ID
        if mask is not None:
            mask_np = _to_numpy(mask)
            if mask_np.shape != gt_np.shape:
                raise ValueError(f"OccupancyMetric.update: mask shape {mask_np.shape} != gt shape {gt_np.shape}")
            keep &= mask_np.astype(bool)
        p = pred_np[keep].astype(np.int64)
        g = gt_np[keep].astype(np.int64)
        if p.size and (p.min() < 0 or p.max() >= NUM_CLASSES):
            raise ValueError(
                f"OccupancyMetric.update: prediction ids must lie in 0..{NUM_CLASSES - 1}, got {p.min()}..{p.max()}"
            )
        if g.size and (g.min() < 0 or g.max() >= NUM_CLASSES):
            raise ValueError(
                f"OccupancyMetric.update: ground-truth ids must lie in 0..{NUM_CLASSES - 1} or {IGNORE_ID}"
            )
        self.confusion += np.bincount(g * NUM_CLASSES + p, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)

    def merge(self, other: "OccupancyMetric") -> None:
        """Add another accumulator's counts (e.g. from another process)."""
        self.confusion += other.confusion

    def compute(self) -> OccupancyScores:
        cm = self.confusion.astype(np.float64)
        tp = np.diag(cm)
        union = cm.sum(0) + cm.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)
        sem = iou[:NUM_SEMANTIC_CLASSES]
        miou = float(np.nanmean(sem)) if np.any(~np.isnan(sem)) else float("nan")
        occ = slice(0, FREE_ID)
        geo_tp = cm[occ, occ].sum()
        geo_fp = cm[FREE_ID, occ].sum()  # free in truth, occupied predicted
        geo_fn = cm[occ, FREE_ID].sum()  # occupied in truth, free predicted
        denom = geo_tp + geo_fp + geo_fn
        geo = float(geo_tp / denom) if denom > 0 else float("nan")
        return OccupancyScores(per_class_iou=iou, miou=miou, geometric_iou=geo, confusion=self.confusion.copy())
