"""The pseudo-label store: one Zarr v3 store per project, one group per labelling round.

    labels.zarr/                 attrs: format, grid, class_names
      round_<K>/                 FrameArrays (one frame per chunk), attrs: provenance, scenes
        semantics    (N, X, Y, Z) uint8  teacher classes after LiDAR filtering (free = 17), not thresholded
        confidence   (N, X, Y, Z) uint8  round(255 * confidence)
        mask_camera  (N, X, Y, Z) uint8  Occ3D visibility from the cameras, against the predicted occupancy
        mask_lidar   (N, X, Y, Z) uint8  Occ3D visibility from the lidar, against the predicted occupancy
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
from occnet.classes import OCC3D_CLASS_NAMES

from ..errors import DataError
from .frame_arrays import ArraySpec, FrameArrays, jsonable, open_root

FORMAT = "occ-autolabel-labels/1"
ARRAYS = ("semantics", "confidence", "mask_camera", "mask_lidar")
MANUAL = "manual"


def label_specs(grid: GridSpec) -> list[ArraySpec]:
    return [
        ArraySpec("semantics", grid.shape, "uint8", 255),
        ArraySpec("confidence", grid.shape, "uint8", 0),
        ArraySpec("mask_camera", grid.shape, "uint8", 0),
        ArraySpec("mask_lidar", grid.shape, "uint8", 0),
    ]


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
        """Open round k for writing (created if new; an existing one must come from the same checkpoint, or
        the same fusion settings, and frames, else DataError)."""
        attrs = {
            **provenance,
            "scenes": list(scenes),
            "grid": self.grid.to_dict(),
            "class_names": list(OCC3D_CLASS_NAMES),
        }
        return FrameArrays.create_or_open(
            self.root,
            round_name(k),
            label_specs(self.grid),
            tokens,
            attrs,
            ("checkpoint_sha256", "labeller", "fusion", "grid", "class_names"),
            where=f"{self.path} round {k}",
        )

    def round(self, k: int) -> FrameArrays:
        if k not in self.rounds():
            raise DataError(f"{self.path}: round {k} does not exist (rounds: {self.rounds() or 'none'})")
        return FrameArrays.open(self.root, round_name(k), label_specs(self.grid), where=f"{self.path} round {k}")

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
