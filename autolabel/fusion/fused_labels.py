"""Opening the fused labels of a run: a label store whose round 0 `fuse_round` wrote (``<run>/fusion.zarr``)."""

from __future__ import annotations

from pathlib import Path

from kernels.grid import GridSpec

from ..errors import DataError
from ..store.frame_arrays import FrameArrays
from ..store.labels import LabelStore


def open_fused(path: Path, grid: GridSpec) -> FrameArrays:
    """The fused labels at `path` (the run's fusion.zarr), for training targets and the teacher's evidence."""
    if not (path / "zarr.json").is_file():
        raise DataError(f"no fused labels at {path}; run the fuse stage first (`autolabel run` with fusion.enabled)")
    return LabelStore.open(path, grid).round(0)
