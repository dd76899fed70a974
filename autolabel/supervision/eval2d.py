"""Pixel-level quality of cached 2D labels against exact 2D ground truth.

Ground truth is either the synthetic world's exact maps (``labels2d/.../<CAM>.npz`` ``semantics``) or the
projected nuScenes-lidarseg points, brought to the cache's resolution. One confusion matrix over all
pixels that have ground truth (rows: truth 0..16, columns: prediction 0..16 and 255 = unlabelled);
IoU per class = TP / (TP + FP + FN) over the pixels the labels name (a pixel left 255 is ignored by
training, so it is no error; coverage reports how many there are), mIoU = mean over classes present in
the truth; coverage = share of pixels the labels name (all pixels, and pixels with ground truth).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from occnet.classes import FREE_ID, IGNORE_ID
from occnet.classes import OCC3D_CLASS_NAMES as CLASS_NAMES

from ..data.nuscenes import NuScenesFrames
from ..data.transforms import ResizeCrop
from .cache import SupervisionCache

N_CLASSES = FREE_ID  # 17 label classes; column N_CLASSES of the confusion matrix counts unlabelled pixels


@dataclass
class Scores2D:
    confusion: np.ndarray  # (17, 18) int64
    coverage: float  # labelled share of all pixels
    coverage_gt: float  # labelled share of pixels with ground truth
    pixels: int

    @property
    def iou(self) -> np.ndarray:
        """(17,) IoU per class, NaN for classes absent from truth and prediction."""
        c = self.confusion[:, :N_CLASSES].astype(np.float64)
        tp = np.diag(c)
        denom = c.sum(1) + c.sum(0) - tp  # unlabelled pixels are neither: coverage reports them
        return np.divide(tp, denom, out=np.full(N_CLASSES, np.nan), where=denom > 0)

    @property
    def miou(self) -> float:
        present = self.confusion.sum(1) > 0
        return float(np.nanmean(self.iou[present])) if present.any() else float("nan")

    @property
    def accuracy(self) -> float:
        """Share of labelled ground-truth pixels named correctly."""
        labelled = self.confusion[:, :N_CLASSES].sum()
        return float(np.trace(self.confusion[:, :N_CLASSES]) / labelled) if labelled else float("nan")

    def as_dict(self) -> dict:
        return {"miou": self.miou, "accuracy": self.accuracy, "coverage": self.coverage, "coverage_gt": self.coverage_gt,
                "pixels": self.pixels, "iou": {CLASS_NAMES[k]: (None if np.isnan(v) else float(v)) for k, v in enumerate(self.iou)},
                "confusion": self.confusion.tolist()}

    def table(self) -> str:
        lines = [f"{'class':<22}{'IoU':>8}{'truth px':>12}"]
        for k in range(N_CLASSES):
            n = int(self.confusion[k].sum())
            v = self.iou[k]
            lines.append(f"{CLASS_NAMES[k]:<22}{'-' if np.isnan(v) else f'{100 * v:.1f}':>8}{n:>12}")
        lines.append(f"{'mIoU':<22}{100 * self.miou:>8.1f}")
        lines.append(f"{'accuracy (labelled)':<22}{100 * self.accuracy:>8.1f}")
        lines.append(f"{'coverage (all px)':<22}{100 * self.coverage:>8.1f}")
        lines.append(f"{'coverage (truth px)':<22}{100 * self.coverage_gt:>8.1f}")
        return "\n".join(lines)


def accumulate(confusion: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> None:
    """Add pixels with truth in 0..16 to the (17, 18) confusion matrix; predictions 255 go to column 17."""
    has = truth != IGNORE_ID
    t = truth[has].astype(np.int64)
    p = pred[has].astype(np.int64)
    p[p == IGNORE_ID] = N_CLASSES
    confusion += np.bincount(t * (N_CLASSES + 1) + p, minlength=N_CLASSES * (N_CLASSES + 1)).reshape(N_CLASSES, N_CLASSES + 1)


def evaluate_cache(cache: SupervisionCache, frames: NuScenesFrames, truth, progress: bool = True) -> Scores2D:
    """`truth` is a provider (PrecomputedLabels with variant exact, or LidarsegLabels)."""
    confusion = np.zeros((N_CLASSES, N_CLASSES + 1), np.int64)
    labelled = total = 0
    done = cache.arrays.done()
    for i, token in enumerate(tqdm(cache.arrays.tokens, desc="eval-2d", disable=not progress)):
        if not done[i]:
            continue
        pred, _, _ = cache.read(token)
        frame = frames.frame(token, images=False)
        rc = ResizeCrop.fit(frame.cameras[0].image_size, cache.image_size)
        gt, _ = truth.label(frame, rc)
        accumulate(confusion, pred, gt)
        labelled += int((pred != IGNORE_ID).sum())
        total += pred.size
    n_gt = int(confusion.sum())
    return Scores2D(confusion, labelled / max(total, 1), float(confusion[:, :N_CLASSES].sum() / max(n_gt, 1)), n_gt)
