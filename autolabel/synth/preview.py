"""Contact sheet of one frame of a dataset in nuScenes layout: the six cameras, their label maps,
and a bird's-eye view of the Occ3D ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from occnet.classes import FREE_ID, colorize

from ..data.nuscenes import NuScenesFrames
from ..supervision.precomputed import LABELS_2D_DIR


def bev(semantics: np.ndarray) -> np.ndarray:
    """(X, Y, Z) classes -> (X, Y, 3) RGB of the top-most occupied voxel, x forward up, y left left."""
    occ = semantics != FREE_ID
    top = np.where(occ.any(2), occ.shape[2] - 1 - np.argmax(occ[:, :, ::-1], axis=2), -1)
    cls = np.where(top >= 0, np.take_along_axis(semantics, np.maximum(top, 0)[..., None], 2)[..., 0], FREE_ID)
    return colorize(cls)[::-1, ::-1]


def contact_sheet(root: str | Path, version: str, index: int = 0) -> Image.Image:
    ds = NuScenesFrames(root, version)
    frame = ds[index]
    maps = Path(root) / LABELS_2D_DIR / frame.scene / frame.token
    cams = [c.image for c in frame.cameras]
    exact, noisy = [], []
    for cam in frame.cameras:
        with np.load(maps / f"{cam.name}.npz") as z:
            exact.append(colorize(z["semantics"]))
            noisy.append(colorize(z["noisy_semantics"]))

    def grid(images):
        return np.concatenate([np.concatenate(images[:3], 1), np.concatenate(images[3:], 1)], 0)

    left = np.concatenate([grid(cams), grid(exact), grid(noisy)], 0)
    if frame.gt is not None:
        b = Image.fromarray(bev(frame.gt.semantics))
        side = left.shape[0] // 2
        b = np.asarray(b.resize((side, side), Image.NEAREST))
        right = np.full((left.shape[0], side, 3), 255, np.uint8)
        right[:side] = b
        left = np.concatenate([left, right], 1)
    return Image.fromarray(left)
