"""The manual 3D labels in the store (its ``manual`` group, written by ingest): reading them for training,
counting what annotators labelled."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from ..data.occ3d import Occ3DLabels
from .frame_arrays import FrameArrays
from .labels import LabelStore, read_frame


class ManualLabels(Mapping[str, Occ3DLabels]):
    """Token -> Occ3D labels of ingested manual frames, each read from the store's ``manual`` group when asked for:
    a round at nuScenes scale holds thousands of them (about 2.5 MB each as arrays: 4 GB at 1,500 frames), and
    training's DataLoader workers would each see them all. A region-level label (issue 21) carries
    `mask_annotated`, the voxels an annotator labelled (the manual group's confidence 255); a whole-frame label
    has None (every voxel)."""

    def __init__(self, arrays: FrameArrays | None = None, exclude: set[str] = frozenset()):
        self.arrays = arrays
        self.rows: dict[str, int] = {}
        if arrays is not None:
            done = arrays.done()
            self.rows = {t: i for i, t in enumerate(arrays.tokens) if done[i] and t not in exclude}

    def __getitem__(self, token: str) -> Occ3DLabels:
        f = read_frame(self.arrays, self.rows[token])
        annotated = f["confidence"] == 255
        return Occ3DLabels(
            f["semantics"],
            f["mask_lidar"],
            f["mask_camera"],
            mask_annotated=None if annotated.all() else annotated.astype(np.uint8),
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def manual_labels(store_path: Path, grid, exclude: set[str] = frozenset()) -> ManualLabels:
    """The ingested manual frames but those in `exclude` (`ManualLabels`; empty when nothing was annotated yet)."""
    if not (store_path / "zarr.json").is_file():
        return ManualLabels()
    return ManualLabels(LabelStore.open(store_path, grid).manual(), exclude)


def labelled_voxels(manual: Mapping[str, Occ3DLabels], shape) -> int:
    """Voxels labelled by annotators in `manual_labels`' frames: a whole frame counts the grid, a region-level
    label its annotated tiles. Reads only each frame's confidence from a `ManualLabels`."""
    if isinstance(manual, ManualLabels):
        return sum(annotated_voxels(manual.arrays, i) for i in manual.rows.values())
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
