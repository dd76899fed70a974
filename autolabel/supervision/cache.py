"""The 2D supervision cache: per frame and camera, semantics, confidence and LiDAR depth, computed once.

Zarr v3 store (`FrameArrays` group ``supervision``), one frame per chunk::

    semantics  (N, n_cams, h, w) uint8   class ids, 255 = none
    confidence (N, n_cams, h, w) uint8   round(255 * confidence)
    depth      (N, n_cams, h, w) float32 LiDAR z-depth in metres, 0 = none
    tokens (N,), done (N,)

at the network's input resolution (h, w): the maps are exactly what training consumes, and depth is
projected at that resolution (downsampling a sparse full-resolution map would drop points). The group's
attributes record the image size, cameras, provider and its settings; a cache made with other values
is refused rather than mixed.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from occnet.distributed import barrier, is_main, rank, world_size
from occnet.trainer import default_workers

from ..data.frame import CAMERA_NAMES
from ..data.nuscenes import NuScenesFrames
from ..data.transforms import ResizeCrop
from ..store.frame_arrays import ArraySpec, FrameArrays, open_root
from .lidar_depth import lidar_depth_maps
from .providers import LabelProvider

GROUP = "supervision"
MATCH = ("image_size", "cameras", "provider", "provider_settings", "lidar_depth")


def cache_specs(n_cams: int, hw: tuple[int, int]) -> list[ArraySpec]:
    return [ArraySpec("semantics", (n_cams, *hw), "uint8", 255), ArraySpec("confidence", (n_cams, *hw), "uint8", 0),
            ArraySpec("depth", (n_cams, *hw), "float32", 0.0)]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("occ-autolabel")
    except PackageNotFoundError:
        return "unknown"


class SupervisionCache:
    """Read / write access to a supervision cache."""

    def __init__(self, arrays: FrameArrays):
        self.arrays = arrays
        self.image_size = tuple(arrays.attrs["image_size"])

    @classmethod
    def create_or_open(cls, path: str | Path, tokens: Sequence[str], image_size: tuple[int, int], provider: LabelProvider,
                       lidar_depth: dict, extra: dict | None = None) -> "SupervisionCache":
        attrs = {"image_size": list(image_size), "cameras": list(CAMERA_NAMES), "provider": provider.name,
                 "provider_settings": provider.provenance(), "lidar_depth": lidar_depth,
                 "package_version": _version(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra or {})}
        root = open_root(path, "a")
        arrays = FrameArrays.create_or_open(root, GROUP, cache_specs(len(CAMERA_NAMES), image_size), tokens, attrs,
                                            MATCH, where=f"supervision cache {path}")
        return cls(arrays)

    @classmethod
    def open(cls, path: str | Path) -> "SupervisionCache":
        root = open_root(path, "r")
        # the specs' shapes come from the stored arrays; reading needs only the names
        return cls(FrameArrays.open(root, GROUP, [], where=f"supervision cache {path}"))

    def read(self, token: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """semantics (n_cams, h, w) uint8, confidence (n_cams, h, w) float32, depth (n_cams, h, w) float32."""
        from ..errors import DataError

        i = self.arrays.index(token)
        if not self.arrays.is_done(i):  # per item in training: never read the whole done array
            raise DataError(f"{self.arrays.where}: frame {token} has not been computed; run `autolabel supervise` first")
        sem = self.arrays.read(i, "semantics")
        conf = self.arrays.read(i, "confidence").astype(np.float32) / 255
        return sem, conf, self.arrays.read(i, "depth")


class _FrameSupervision(Dataset):
    """Item j: (frame index, semantics (n_cams, h, w) uint8, confidence uint8 0..255, depth float32) of the
    j-th pending frame."""

    def __init__(self, frames: NuScenesFrames, provider: LabelProvider, pending: np.ndarray, image_size: tuple[int, int],
                 min_depth: float, max_depth: float | None):
        self.frames, self.provider, self.pending = frames, provider, pending
        self.image_size, self.min_depth, self.max_depth = image_size, min_depth, max_depth

    def __len__(self) -> int:
        return len(self.pending)

    def __getitem__(self, j: int):
        i = int(self.pending[j])
        frame = self.frames.frame(self.frames.tokens[i], images=self.provider.needs_images)
        rc = ResizeCrop.fit(frame.cameras[0].image_size, self.image_size)
        sem, conf = self.provider.label(frame, rc)
        depth = lidar_depth_maps(rc.apply_frame(frame), self.min_depth, self.max_depth)
        return i, sem, np.round(np.clip(conf, 0, 1) * 255).astype(np.uint8), depth


def _as_is(item):
    return item


def supervise(frames: NuScenesFrames, provider: LabelProvider, cache_path: str | Path, image_size: tuple[int, int],
              min_depth: float = 1.0, max_depth: float | None = None, progress: bool = True,
              extra_attrs: dict | None = None, workers: int | None = None) -> dict:
    """Compute the 2D supervision of every frame not yet in the cache (workers: DataLoader workers for
    model-free providers, default sized to the machine). Returns a summary."""
    def open_cache() -> SupervisionCache:
        return SupervisionCache.create_or_open(cache_path, frames.tokens, tuple(image_size), provider,
                                               {"min_depth": min_depth, "max_depth": max_depth}, extra_attrs)

    # under torchrun: rank 0 creates the cache, every rank computes its own frames (i % world == rank)
    cache = open_cache() if is_main() else None
    barrier()
    cache = cache or open_cache()
    arrays = cache.arrays
    pending = np.array([i for i in np.flatnonzero(~arrays.done()) if i % world_size() == rank()], dtype=np.int64)
    t0 = time.perf_counter()
    labelled = 0.0
    # model-free providers (label maps read from disk, LiDAR labels projected) label whole frames in
    # DataLoader workers; a provider that runs a network on the GPU labels in this process
    items = _FrameSupervision(frames, provider, pending, tuple(image_size), min_depth, max_depth)
    n_workers = (default_workers() if workers is None else workers) if provider.model_free else 0
    loader = DataLoader(items, batch_size=None, num_workers=min(n_workers, len(pending)), collate_fn=_as_is)
    for i, sem, conf, depth in tqdm(loader, total=len(pending), desc=f"supervise ({provider.name})",
                                    disable=not progress or not is_main()):
        arrays.write(i, semantics=sem, confidence=conf, depth=depth)
        labelled += float((sem != 255).mean())
    barrier()
    elapsed = time.perf_counter() - t0
    return {"frames": len(frames), "computed": len(pending), "skipped": len(frames) - len(pending),
            "seconds": elapsed, "coverage": labelled / max(len(pending), 1)}
