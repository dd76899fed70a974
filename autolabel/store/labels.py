"""The pseudo-label store: one Zarr v3 store per project, one group per labelling round.

    labels.zarr/                 attrs: format, grid, class_names
      round_<K>/                 FrameArrays (one frame per chunk), attrs: provenance, scenes
        semantics    (N, X, Y, Z) uint8  teacher classes after LiDAR filtering (free = 17), not thresholded
        confidence   (N, X, Y, Z) uint8  round(255 * confidence)
        mask_camera  (N, X, Y, Z) uint8  Occ3D visibility from the cameras, against the predicted occupancy
        mask_lidar   (N, X, Y, Z) uint8  Occ3D visibility from the lidar, against the predicted occupancy
        histogram    (N, 18, 256) uint32 per class, the count of each confidence level (derived on write;
                                         rounds written before 2026-11-30 have none)
        tokens (N,), done (N,)
      manual/                    manual 3D labels ingested by annotation rounds (same arrays)

Confidence thresholds are not baked into the store: per-class thresholds (a quantile of each class's
confidences over the whole round) are applied when labels are exported or evaluated, so one store
serves any precision / coverage trade-off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from kernels.grid import GridSpec
from occnet.classes import NUM_CLASSES, OCC3D_CLASS_NAMES

from ..errors import DataError
from .confidence import LEVELS, level_histogram
from .frame_arrays import ABSENT, ArraySpec, FrameArrays, jsonable, mismatch, open_root

FORMAT = "occ-autolabel-labels/1"
ARRAYS = ("semantics", "confidence", "mask_camera", "mask_lidar")
MANUAL = "manual"
# what a round reopened for writing must share with the run that created it (the labeller's identity: checkpoint
# or fusion settings, its 2D supervision) and the grid's layout; the sources that ran too while frames are left
# (`LabelStore.create_round`)
ROUND_MUST_MATCH = (
    "checkpoint_sha256",
    "labeller",
    "fusion",
    "supervision_provider",
    "supervision_settings",
    "grid",
    "class_names",
)


def label_specs(grid: GridSpec) -> list[ArraySpec]:
    return [
        ArraySpec("semantics", grid.shape, "uint8", 255),
        ArraySpec("confidence", grid.shape, "uint8", 0),
        ArraySpec("mask_camera", grid.shape, "uint8", 0),
        ArraySpec("mask_lidar", grid.shape, "uint8", 0),
    ]


# per frame, the (class, confidence level) counts of its labelled voxels, derived from semantics and confidence when
# the frame is written: export and evaluation sum these for the round's per-class thresholds instead of reading
# every frame's semantics and confidence a second time (issue 23). Groups written before it have none.
HISTOGRAM = ArraySpec("histogram", (NUM_CLASSES, LEVELS), "uint32", 0)


class RoundArrays(FrameArrays):
    """A round's group (pseudo-labels or fused labels): the four label arrays, and `histogram` when the group
    has it (derived on write: writers hand over the four)."""

    @property
    def inputs(self) -> dict[str, ArraySpec]:
        return {name: spec for name, spec in self.specs.items() if name != HISTOGRAM.name}

    def write_frames(self, indices: Sequence[int], **arrays: np.ndarray) -> None:
        if HISTOGRAM.name in self.specs and HISTOGRAM.name not in arrays and {"semantics", "confidence"} <= set(arrays):
            sem, conf = np.asarray(arrays["semantics"]), np.asarray(arrays["confidence"])
            arrays[HISTOGRAM.name] = np.stack([level_histogram(s, c) for s, c in zip(sem, conf)]).astype(np.uint32)
        super().write_frames(indices, **arrays)


def round_specs(root, k: int, grid: GridSpec) -> list[ArraySpec]:
    """The arrays of round k's group: the label arrays, and the histogram unless the group was written without
    one (a store made before it keeps working; its export reads the frames for the histogram)."""
    group = root[round_name(k)] if round_name(k) in root else None
    old = group is not None and "tokens" in group and HISTOGRAM.name not in group
    return label_specs(grid) + ([] if old else [HISTOGRAM])


def round_name(k: int) -> str:
    return f"round_{k}"


class LabelStore:
    """Open with `LabelStore(path, grid, create=True)` to write, `LabelStore.open(path)` to read."""

    def __init__(self, path: str | Path, grid: GridSpec | None = None, create: bool = False):
        self.path = Path(path)
        if create:
            if grid is None:
                raise ValueError("LabelStore: a new store needs its GridSpec")
            self.root = open_root(self.path, "a")
            attrs = {"format": FORMAT, "grid": grid.to_dict(), "class_names": list(OCC3D_CLASS_NAMES)}
            found = dict(self.root.attrs)
            if not found:
                self.root.attrs.update(jsonable(attrs))
            else:
                self._check(found, jsonable(attrs))
        else:
            self.root = open_root(self.path, "r")
            found = dict(self.root.attrs)
            if found.get("format") != FORMAT:
                raise DataError(
                    f"{self.path}: not a pseudo-label store (format {found.get('format')!r}, expected {FORMAT!r})"
                )
            if grid is not None:
                self._check(found, jsonable({"grid": grid.to_dict(), "class_names": list(OCC3D_CLASS_NAMES)}))
        self.grid = GridSpec.from_dict(dict(self.root.attrs)["grid"])

    @classmethod
    def open(cls, path: str | Path, grid: GridSpec | None = None) -> "LabelStore":
        return cls(path, grid, create=False)

    def _check(self, found: dict, expected: dict) -> None:
        for key in ("grid", "class_names"):
            if key in expected and found.get(key) != expected[key]:
                raise DataError(
                    f"{self.path}: store was written with {key} = {found.get(key)!r}, this run has "
                    f"{expected[key]!r}; use another store path"
                )
        if found.get("format") not in (None, FORMAT):
            raise DataError(f"{self.path}: not a pseudo-label store (format {found.get('format')!r})")

    # ---- rounds ---------------------------------------------------------------------------------
    def rounds(self) -> list[int]:
        names = [n for n in self.root.group_keys() if n.startswith("round_")]
        return sorted(int(n.split("_", 1)[1]) for n in names)

    def create_round(self, k: int, tokens: Sequence[str], scenes: Sequence[str], provenance: dict) -> FrameArrays:
        """Open round k for writing (created if new). An existing one must come from the same checkpoint, or the
        same fusion settings, the same 2D supervision, and frames; while it has frames left to label, also from
        the same sources (`provenance.sources_digest`): else DataError, as a resumed round would hold frames of
        two labellers. A finished round opens under other sources (nothing will be written to it)."""
        attrs = {
            **provenance,
            "scenes": list(scenes),
            "grid": self.grid.to_dict(),
            "class_names": list(OCC3D_CLASS_NAMES),
        }
        where = f"{self.path} round {k}"
        arrays = RoundArrays.create_or_open(
            self.root, round_name(k), round_specs(self.root, k, self.grid), tokens, attrs, ROUND_MUST_MATCH, where
        )
        stored, wanted = arrays.attrs.get("code_digest", ABSENT), attrs.get("code_digest")
        if "code_digest" in attrs and stored != wanted and not arrays.done().all():
            raise DataError(
                f"{where}: has frames left to label and was started by other code "
                f"({mismatch('code_digest', stored, wanted)}): resumed, it would hold frames of two labellers. "
                f"Finish it with the code that started it, or delete round {k} to label it again"
            )
        return arrays

    def round(self, k: int) -> FrameArrays:
        if k not in self.rounds():
            raise DataError(f"{self.path}: round {k} does not exist (rounds: {self.rounds() or 'none'})")
        return RoundArrays.open(
            self.root, round_name(k), round_specs(self.root, k, self.grid), where=f"{self.path} round {k}"
        )

    def manual(
        self, tokens: Sequence[str] = (), scenes: Sequence[str] = (), create: bool = False
    ) -> FrameArrays | None:
        """The manual-label group (None if absent and not created)."""
        if MANUAL in self.root:
            return FrameArrays.open(self.root, MANUAL, label_specs(self.grid), where=f"{self.path} manual labels")
        if not create:
            return None
        return FrameArrays.create_or_open(
            self.root,
            MANUAL,
            label_specs(self.grid),
            tokens,
            {"scenes": list(scenes), "grid": self.grid.to_dict()},
            ("grid",),
            where=f"{self.path} manual labels",
        )

    def scene_of(self, arrays: FrameArrays) -> dict[str, str]:
        return dict(zip(arrays.tokens, arrays.attrs["scenes"]))


def read_frame(arrays: FrameArrays, i: int) -> dict[str, np.ndarray]:
    return {name: arrays.read(i, name) for name in ARRAYS}
