"""Pixel-level quality of cached 2D labels against exact 2D ground truth.

Ground truth is the synthetic world's exact maps (``labels2d/.../<CAM>.npz`` ``semantics``), the projected
nuScenes-lidarseg points, or a folder of 2D label maps (`truth2d.FolderTruth`), brought to the cache's resolution.
One confusion matrix over all
pixels that have ground truth (rows: truth 0..16, columns: prediction 0..16 and 255 = unlabelled);
IoU per class = TP / (TP + FP + FN) over the pixels the labels name (a pixel left 255 is ignored by
training, so it is no error; coverage reports how many there are), mIoU = mean over classes present in
the truth; coverage = share of pixels the labels name (all pixels, and pixels with ground truth).
Confidence AUROC: how well the labels' confidence separates their right pixels from their wrong ones
(labelled pixels with ground truth; 0.5 = no better than chance, 1 = every right pixel above every
wrong one), computed exactly from a (2, 256) histogram of the uint8 confidences (ties count one half).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    # (2, 256) int64: labelled pixels with truth by uint8 confidence; row 0 wrong, row 1 right
    confidence_hist: np.ndarray = field(default_factory=lambda: np.zeros((2, 256), np.int64))

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

    @property
    def confidence_auroc(self) -> float:
        """AUROC of confidence as a detector of right pixels (NaN without right or without wrong pixels)."""
        return histogram_auroc(self.confidence_hist)

    def as_dict(self) -> dict:
        auroc = self.confidence_auroc
        return {
            "miou": self.miou,
            "accuracy": self.accuracy,
            "coverage": self.coverage,
            "coverage_gt": self.coverage_gt,
            "confidence_auroc": None if np.isnan(auroc) else auroc,
            "pixels": self.pixels,
            "iou": {CLASS_NAMES[k]: (None if np.isnan(v) else float(v)) for k, v in enumerate(self.iou)},
            "confusion": self.confusion.tolist(),
        }

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
        auroc = self.confidence_auroc
        lines.append(f"{'confidence AUROC':<22}{'-' if np.isnan(auroc) else f'{auroc:.3f}':>8}")
        return "\n".join(lines)


def accumulate(confusion: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> None:
    """Add pixels with truth in 0..16 to the (17, 18) confusion matrix; predictions 255 go to column 17."""
    has = truth != IGNORE_ID
    t = truth[has].astype(np.int64)
    p = pred[has].astype(np.int64)
    p[p == IGNORE_ID] = N_CLASSES
    confusion += np.bincount(t * (N_CLASSES + 1) + p, minlength=N_CLASSES * (N_CLASSES + 1)).reshape(
        N_CLASSES, N_CLASSES + 1
    )


def accumulate_confidence(hist: np.ndarray, pred: np.ndarray, confidence: np.ndarray, truth: np.ndarray) -> None:
    """Add the labelled pixels with truth to the (2, 256) histogram: row = right (1) / wrong (0), column =
    confidence as uint8 (0..255; floats in [0, 1] are rounded to 255ths, as the cache stores them)."""
    if confidence.dtype != np.uint8:
        confidence = np.round(np.clip(confidence, 0, 1) * 255).astype(np.uint8)
    judged = (truth != IGNORE_ID) & (pred != IGNORE_ID)
    right = (pred[judged] == truth[judged]).astype(np.int64)
    hist += np.bincount(right * 256 + confidence[judged], minlength=512).reshape(2, 256)


def histogram_auroc(hist: np.ndarray) -> float:
    """Exact AUROC of a score given as a (2, n_bins) histogram (row 0 negatives, row 1 positives): the
    probability that a random positive scores above a random negative, ties counting one half."""
    neg, pos = hist[0].astype(np.float64), hist[1].astype(np.float64)
    if neg.sum() == 0 or pos.sum() == 0:
        return float("nan")
    below = np.cumsum(neg) - neg  # negatives in lower bins
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def evaluate_cache(cache: SupervisionCache, frames: NuScenesFrames, truth, progress: bool = True) -> Scores2D:
    """`truth` is a provider (PrecomputedLabels with variant exact, LidarsegLabels, or truth2d.FolderTruth)."""
    confusion = np.zeros((N_CLASSES, N_CLASSES + 1), np.int64)
    hist = np.zeros((2, 256), np.int64)
    labelled = total = 0
    done = cache.arrays.done()
    for i, token in enumerate(tqdm(cache.arrays.tokens, desc="eval-2d", disable=not progress)):
        if not done[i]:
            continue
        pred, conf, _ = cache.read(token)
        frame = frames.frame(token, images=False)
        rc = ResizeCrop.fit(frame.cameras[0].image_size, cache.image_size)
        gt = truth.label(frame, rc).semantics
        accumulate(confusion, pred, gt)
        accumulate_confidence(hist, pred, conf, gt)
        labelled += int((pred != IGNORE_ID).sum())
        total += pred.size
    n_gt = int(confusion.sum())
    return Scores2D(
        confusion, labelled / max(total, 1), float(confusion[:, :N_CLASSES].sum() / max(n_gt, 1)), n_gt, hist
    )
