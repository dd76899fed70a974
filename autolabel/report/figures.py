"""PNG figures (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure as PNG (folders made) and free it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def confusion_png(
    confusion: np.ndarray, rows_names: Sequence[str], col_names: Sequence[str], path: str | Path, title: str
) -> Path:
    """Row-normalised confusion matrix (rows: ground truth, columns: prediction), shares in percent."""
    plt = pyplot()
    rows = confusion.sum(1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros(confusion.shape, float), where=rows > 0)
    n, m = confusion.shape
    fig, ax = plt.subplots(figsize=(0.45 * m + 3, 0.45 * n + 2.5))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(m), list(col_names), rotation=70, ha="right", fontsize=8)
    ax.set_yticks(range(n), list(rows_names), fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title, fontsize=10)
    for i in range(n):
        for j in range(m):
            if share[i, j] >= 0.01:
                ax.text(
                    j,
                    i,
                    f"{100 * share[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if share[i, j] > 0.5 else "black",
                )
    fig.tight_layout()
    return save_figure(fig, path)


def coverage_curve_png(curve: Sequence[dict], path: str | Path, title: str) -> Path:
    """Pseudo-label precision / coverage trade-off: mIoU and geometric IoU of kept voxels against the
    kept share of mask_camera, one point per drop quantile."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    cov = [100 * c["coverage"] for c in curve]
    ax.plot(cov, [c["miou"] for c in curve], "o-", label="mIoU of kept voxels")
    ax.plot(cov, [c["geometric_iou"] for c in curve], "s--", label="geometric IoU of kept voxels")
    for c, x in zip(curve, cov):
        ax.annotate(f"q={c['drop_quantile']:g}", (x, c["miou"]), textcoords="offset points", xytext=(3, 4), fontsize=7)
    ax.set_xlabel("coverage: kept share of mask_camera voxels (%)")
    ax.set_ylabel("IoU (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
