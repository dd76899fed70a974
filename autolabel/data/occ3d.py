"""Occ3D ground-truth files: ``gts/<scene_name>/<sample_token>/labels.npz``.

Each file holds ``semantics`` (uint8, X x Y x Z, ids 0..17, 255 unknown), ``mask_lidar`` and
``mask_camera`` (uint8 0/1, same shape). Exported pseudo-labels add ``mask_confident`` (uint8 0/1:
the voxel's confidence clears its class threshold) and ``label_source`` (a string: "manual" for a frame
whose labels an annotator delivered, "pseudo" for the teacher's; issue 21); Occ3D readers that load only
the three standard arrays skip both. A region-level delivery or export (issue 21) may add ``mask_annotated``
(uint8 0/1: the voxels an annotator labelled). Written atomically (temp file + rename) so that a crash never leaves
a half-written
file under the final name, and byte-reproducibly.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kernels.grid import GridSpec
from occnet.classes import FREE_ID, IGNORE_ID, NUM_CLASSES

from ..errors import DataError
from .npz import save_npz

LABEL_KEYS = ("semantics", "mask_lidar", "mask_camera")
CONFIDENT_KEY = "mask_confident"  # optional: written by the pseudo-label export
SOURCE_KEY = "label_source"  # optional: written by the export, one of SOURCES
ANNOTATED_KEY = "mask_annotated"  # optional: region-level annotation (issue 21), 1 = labelled by an annotator
# region: annotated tiles + pseudo-labels elsewhere (mask_annotated: the tiles, and with rounds.export_propagate
# what the scene's other annotated keyframes carry to the rest of the frame); carried: labels carried from the
# scene's annotated keyframes (mask_annotated: the carried voxels, rounds.export_propagate) + pseudo-labels elsewhere
SOURCES = ("manual", "pseudo", "region", "carried")


@dataclass
class Occ3DLabels:
    """One frame's Occ3D labels; every array is (X, Y, Z) uint8."""

    semantics: np.ndarray
    mask_lidar: np.ndarray
    mask_camera: np.ndarray
    mask_confident: np.ndarray | None = None  # exports only (see export_occ3d)
    source: str | None = None  # exports only: one of SOURCES
    # region-level labels: voxels an annotator labelled (None: all); a carried export: the carried voxels
    mask_annotated: np.ndarray | None = None


def carried_kept(semantics: np.ndarray, carried: np.ndarray, now: np.ndarray) -> np.ndarray:
    """(X, Y, Z) bool: the carried voxels a keyframe takes over its own labels. semantics (X, Y, Z) uint8: the
    classes carried from an annotated keyframe of the scene; carried (X, Y, Z) bool: where they reach; now (X, Y,
    Z) uint8: the keyframe's own labels (pseudo- or fused labels: FREE_ID free, IGNORE_ID unobserved).

    A carried free voxel never clears what the keyframe's own labels see occupied: a car may have moved into what
    was free at the annotated keyframe's time (clearing such voxels cost 3 mIoU of the export on the development
    world, BENCHMARKS.md). The export and training apply this one rule."""
    occupied_now = (now != FREE_ID) & (now != IGNORE_ID)
    return carried & ((semantics != FREE_ID) | ~occupied_now)


def labels_path(root: str | os.PathLike, scene_name: str, sample_token: str) -> Path:
    """Path of a frame's labels under a dataset root (or any folder holding ``gts/``)."""
    return Path(root) / "gts" / scene_name / sample_token / "labels.npz"


def validate_labels(labels: Occ3DLabels, grid: GridSpec, where: str) -> None:
    """Raise DataError naming `where` and the field if shapes, dtypes or values are wrong."""
    keys = _keys(labels)
    for key in keys:
        arr = getattr(labels, key)
        if not isinstance(arr, np.ndarray):
            raise DataError(f"{where}: field '{key}' must be a numpy array, got {type(arr).__name__}")
        if arr.shape != grid.shape:
            raise DataError(f"{where}: field '{key}' has shape {arr.shape}, expected {grid.shape} for {grid}")
        if arr.dtype != np.uint8:
            raise DataError(f"{where}: field '{key}' has dtype {arr.dtype}, expected uint8")
    if labels.source is not None and labels.source not in SOURCES:
        raise DataError(f"{where}: field '{SOURCE_KEY}' is {labels.source!r}, expected one of {SOURCES}")
    sem = labels.semantics
    bad = (sem >= NUM_CLASSES) & (sem != IGNORE_ID)
    if bad.any():
        raise DataError(
            f"{where}: field 'semantics' holds ids {sorted(np.unique(sem[bad]).tolist())[:8]} outside "
            f"0..{NUM_CLASSES - 1} and {IGNORE_ID}"
        )
    for key in keys[1:]:
        if getattr(labels, key).max(initial=0) > 1:
            raise DataError(f"{where}: field '{key}' must hold only 0 and 1")


def _keys(labels: Occ3DLabels) -> tuple[str, ...]:
    return (
        LABEL_KEYS
        + ((CONFIDENT_KEY,) if labels.mask_confident is not None else ())
        + ((ANNOTATED_KEY,) if labels.mask_annotated is not None else ())
    )


def _source(arr: np.ndarray) -> str:
    """The stored label_source (a one-element string array) as a string."""
    return str(arr.reshape(-1)[0]) if arr.size == 1 else repr(arr.tolist())


def read_labels(path: str | os.PathLike, grid: GridSpec | None = None) -> Occ3DLabels:
    """Read and validate one ``labels.npz``; raises DataError naming the file and field."""
    path = Path(path)
    grid = grid or GridSpec()
    if not path.is_file():
        raise DataError(f"{path}: Occ3D label file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in LABEL_KEYS if k not in data.files]
            if missing:
                raise DataError(
                    f"{path}: missing key(s) {missing}; an Occ3D labels.npz holds {list(LABEL_KEYS)}, found "
                    f"{data.files}"
                )
            labels = Occ3DLabels(
                **{k: data[k] for k in LABEL_KEYS},
                mask_confident=data[CONFIDENT_KEY] if CONFIDENT_KEY in data.files else None,
                source=_source(data[SOURCE_KEY]) if SOURCE_KEY in data.files else None,
                mask_annotated=data[ANNOTATED_KEY] if ANNOTATED_KEY in data.files else None,
            )
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
    validate_labels(labels, grid, str(path))
    return labels


def write_labels(path: str | os.PathLike, labels: Occ3DLabels, grid: GridSpec | None = None) -> Path:
    """Validate and write ``labels.npz`` atomically (compressed, byte-reproducible). Returns the path."""
    path = Path(path)
    validate_labels(labels, grid or GridSpec(), str(path))
    arrays = {k: getattr(labels, k) for k in _keys(labels)}
    if labels.source is not None:
        arrays[SOURCE_KEY] = np.array([labels.source])  # one element (.npz stores arrays)
    return save_npz(path, arrays)
