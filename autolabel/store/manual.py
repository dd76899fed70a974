"""The manual 3D labels in the store (its ``manual`` group, written by ingest): reading them for training,
counting what annotators labelled."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.occ3d import Occ3DLabels
from .labels import LabelStore, read_frame


def manual_labels(store_path: Path, grid, exclude: set[str] = frozenset()) -> dict[str, Occ3DLabels]:
    """Token -> Occ3D labels of every ingested manual frame but those in `exclude` (empty when nothing
    was annotated yet). A region-level label (issue 21) carries `mask_annotated`, the voxels an annotator
    labelled (the manual group's confidence 255); a whole-frame label has None (every voxel)."""
    if not (store_path / "zarr.json").is_file():
        return {}
    manual = LabelStore.open(store_path, grid).manual()
    if manual is None:
        return {}
    out = {}
    done = manual.done()
    for i, token in enumerate(manual.tokens):
        if done[i] and token not in exclude:
            f = read_frame(manual, i)
            annotated = f["confidence"] == 255
            out[token] = Occ3DLabels(
                f["semantics"],
                f["mask_lidar"],
                f["mask_camera"],
                mask_annotated=None if annotated.all() else annotated.astype(np.uint8),
            )
    return out


def labelled_voxels(manual: dict[str, Occ3DLabels], shape) -> int:
    """Voxels labelled by annotators in `manual_labels`' frames: a whole frame counts the grid, a region-level
    label its annotated tiles."""
    whole = int(np.prod(shape))
    return sum(whole if lab.mask_annotated is None else int(lab.mask_annotated.sum()) for lab in manual.values())


def annotated_voxels(arrays, i: int) -> int:
    """Voxels of manual frame i labelled by an annotator (its confidence 255: the whole grid for a
    whole-frame label)."""
    return int((arrays.read(i, "confidence") == 255).sum())


def labelled_frames(store: LabelStore, tokens: list[str]) -> np.ndarray:
    """(N,) bool: which of `tokens` have ingested manual 3D labels."""
    manual = store.manual()
    if manual is None:
        return np.zeros(len(tokens), bool)
    done = manual.done()
    return np.array([bool(done[manual.index(t)]) if manual.has(t) else False for t in tokens])
