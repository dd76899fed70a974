"""The 2D supervision cache: per frame and camera, semantics, confidence and LiDAR depth, computed once.

Zarr v3 store (`FrameArrays` group ``supervision``), one frame per chunk, S frames per shard file::

    images     (N, n_cams, h, w, 3) uint8 RGB camera images resized / cropped to the network input
    semantics  (N, n_cams, h, w) uint8   class ids, 255 = none
    confidence (N, n_cams, h, w) uint8   round(255 * confidence)
    depth      (N, n_cams, h, w) float32 LiDAR z-depth in metres, 0 = none
    runner_ups (N, n_cams, R, h, w) uint8 with `supervision.runner_ups` R > 0: the naming classifier's next
               classes per pixel (255 = none; providers whose maps carry none leave it so)
    runner_up_confidence (N, n_cams, R, h, w) uint8 round(255 * their confidence)
    tokens (N,), done (N,)

at the network's input resolution (h, w): the maps are exactly what training consumes, and depth is
projected at that resolution (downsampling a sparse full-resolution map would drop points). The images
are the bytes `FrameDataset` would get by decoding the full-resolution JPEG and resizing it (issue 23):
training reads them instead of decoding six 1600x900 JPEGs and the LiDAR sweeps per item. Caches made
before issue 23 have no ``images``: training then decodes the JPEGs as before. The group's
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

from occnet import interrupt
from occnet.distributed import barrier, is_main, rank, world_size
from occnet.fractions import LEVEL_FRACTIONS
from occnet.trainer import default_workers

from ..data.frame import CAMERA_NAMES
from ..data.nuscenes import NuScenesFrames
from ..data.transforms import ResizeCrop
from ..errors import DataError
from ..provenance import package_version, timestamp
from ..store.frame_arrays import ArraySpec, FrameArrays, ShardWriter, open_root, pending_frames
from .lidar_depth import lidar_depth_maps
from .config import DEFAULT_RUNNER_UPS
from .providers import LabelMaps, LabelProvider

GROUP = "supervision"
MATCH = ("image_size", "cameras", "provider", "provider_settings", "lidar_depth")


def cache_specs(n_cams: int, hw: tuple[int, int], runner_ups: int = 0) -> list[ArraySpec]:
    specs = [
        ArraySpec("images", (n_cams, *hw, 3), "uint8", 0),
        ArraySpec("semantics", (n_cams, *hw), "uint8", 255),
        ArraySpec("confidence", (n_cams, *hw), "uint8", 0),
        ArraySpec("depth", (n_cams, *hw), "float32", 0.0),
    ]
    if runner_ups:
        specs += [
            ArraySpec("runner_ups", (n_cams, runner_ups, *hw), "uint8", 255),
            ArraySpec("runner_up_confidence", (n_cams, runner_ups, *hw), "uint8", 0),
        ]
    return specs


def runner_up_levels(maps: LabelMaps, r: int) -> tuple[np.ndarray, np.ndarray]:
    """The first r runner-ups of N cameras' maps as the cache stores them: ids (N, r, h, w) uint8 (255 none) and
    confidence levels (N, r, h, w) uint8, padded with none where the provider has fewer (or none)."""
    n, h, w = maps.semantics.shape
    ids = np.full((n, r, h, w), 255, np.uint8)
    conf = np.zeros((n, r, h, w), np.uint8)
    if maps.runner_ups is not None:
        k = min(r, maps.runner_ups.shape[1])
        ids[:, :k] = maps.runner_ups[:, :k]
        conf[:, :k] = np.round(np.clip(maps.runner_up_confidence[:, :k], 0, 1) * 255)
    return ids, conf


class SupervisionCache:
    """Read / write access to a supervision cache."""

    def __init__(self, arrays: FrameArrays):
        self.arrays = arrays
        self.image_size = tuple(arrays.attrs["image_size"])
        # False for caches made before issue 23: their readers decode the camera JPEGs
        self.has_images = "images" in arrays.group
        # runner-up names per pixel: only in caches made with `supervision.runner_ups` > 0
        self.has_runner_ups = "runner_ups" in arrays.group

    @classmethod
    def create_or_open(
        cls,
        path: str | Path,
        tokens: Sequence[str],
        image_size: tuple[int, int],
        provider: LabelProvider,
        lidar_depth: dict,
        extra: dict | None = None,
        shard_frames: int | None = None,
        runner_ups: int = 0,
    ) -> "SupervisionCache":
        attrs = {
            "image_size": list(image_size),
            "cameras": list(CAMERA_NAMES),
            "provider": provider.name,
            "provider_settings": provider.provenance(),
            "lidar_depth": lidar_depth,
            "package_version": package_version(),
            "created": timestamp(),
            **(extra or {}),
        }
        root = open_root(path, "a")
        if GROUP in root and "tokens" in root[GROUP] and "images" not in root[GROUP]:
            raise DataError(
                f"supervision cache {path}: made before images were cached (issue 23); delete it and rerun "
                f"`autolabel supervise`, or use another cache path"
            )
        if GROUP in root and "tokens" in root[GROUP] and runner_ups and "runner_ups" not in root[GROUP]:
            raise DataError(
                f"supervision cache {path}: made without runner-up names; set supervision.runner_ups: 0 to use it "
                f"as it is, or delete it and rerun `autolabel supervise`"
            )
        arrays = FrameArrays.create_or_open(
            root,
            GROUP,
            cache_specs(len(CAMERA_NAMES), image_size, runner_ups),
            tokens,
            attrs,
            MATCH,
            where=f"supervision cache {path}",
            shard_frames=shard_frames,
        )
        return cls(arrays)

    @classmethod
    def open(cls, path: str | Path) -> "SupervisionCache":
        root = open_root(path, "r")
        # the specs' shapes come from the stored arrays; reading needs only the names
        return cls(FrameArrays.open(root, GROUP, [], where=f"supervision cache {path}"))

    def _done_index(self, token: str) -> int:
        i = self.arrays.index(token)
        if not self.arrays.is_done(i):  # per item in training: never read the whole done array
            raise DataError(
                f"{self.arrays.where}: frame {token} has not been computed; run `autolabel supervise` first"
            )
        return i

    def read_images(self, token: str) -> np.ndarray:
        """(n_cams, h, w, 3) uint8 RGB at the network input size."""
        return self.arrays.read(self._done_index(token), "images")

    def read(self, token: str, fractions: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """semantics (n_cams, h, w) uint8, confidence (n_cams, h, w) float32 in [0, 1] (with `fractions`;
        else the stored uint8 levels, which `occnet.fractions` decodes to the same values), depth (n_cams, h, w)
        float32."""
        i = self._done_index(token)
        sem = self.arrays.read(i, "semantics")
        conf = self.arrays.read(i, "confidence")
        return sem, LEVEL_FRACTIONS[conf] if fractions else conf, self.arrays.read(i, "depth")

    def read_runner_ups(self, token: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The runner-up names (n_cams, R, h, w) uint8 (255 none) and their confidence (n_cams, R, h, w) float32
        in [0, 1]; None for a cache made without them."""
        if not self.has_runner_ups:
            return None
        i = self._done_index(token)
        return self.arrays.read(i, "runner_ups"), LEVEL_FRACTIONS[self.arrays.read(i, "runner_up_confidence")]


def open_cache(path: Path) -> SupervisionCache:
    """The supervision cache at `path`, which must exist (a DataError saying to run `autolabel supervise`)."""
    if not (path / "zarr.json").is_file():
        raise DataError(f"no 2D supervision cache at {path}; run `autolabel supervise` with this recipe first")
    return SupervisionCache.open(path)


class _FrameSupervision(Dataset):
    """Item j: (frame index, images (n_cams, h, w, 3) uint8, depth float32, labels) of the j-th pending frame,
    read and resized in a DataLoader worker. labels is the provider's `LabelMaps` when `provider` is given
    (model-free providers label in the worker), else the `Frame` itself, which the main process labels with
    its network."""

    def __init__(
        self,
        frames: NuScenesFrames,
        provider: LabelProvider | None,
        pending: np.ndarray,
        image_size: tuple[int, int],
        min_depth: float,
        max_depth: float | None,
    ):
        self.frames, self.provider, self.pending = frames, provider, pending
        self.image_size, self.min_depth, self.max_depth = image_size, min_depth, max_depth

    def __len__(self) -> int:
        return len(self.pending)

    def __getitem__(self, j: int):
        i = int(self.pending[j])
        frame = self.frames.frame(self.frames.tokens[i], images=True)  # the cache keeps the resized images
        rc = ResizeCrop.fit(frame.cameras[0].image_size, self.image_size)
        small = rc.apply_frame(frame)
        images = np.stack([c.image for c in small.cameras])
        depth = lidar_depth_maps(small, self.min_depth, self.max_depth)
        if self.provider is None:
            return i, images, depth, frame
        return i, images, depth, self.provider.label(frame, rc)


def _as_is(item):
    return item


def supervise(
    frames: NuScenesFrames,
    provider: LabelProvider,
    cache_path: str | Path,
    image_size: tuple[int, int],
    min_depth: float = 1.0,
    max_depth: float | None = None,
    progress: bool = True,
    extra_attrs: dict | None = None,
    workers: int | None = None,
    runner_ups: int = DEFAULT_RUNNER_UPS,
) -> dict:
    """Compute the 2D supervision of every frame not yet in the cache (workers: DataLoader workers that
    read frames, default sized to the machine; runner_ups: the runner-up names kept per pixel,
    `supervision.runner_ups`). Returns a summary."""

    def open_cache() -> SupervisionCache:
        return SupervisionCache.create_or_open(
            cache_path,
            frames.tokens,
            tuple(image_size),
            provider,
            {"min_depth": min_depth, "max_depth": max_depth},
            extra_attrs,
            runner_ups=runner_ups,
        )

    # under torchrun: rank 0 creates the cache, every rank computes its own shards of frames
    cache = open_cache() if is_main() else None
    barrier()
    cache = cache or open_cache()
    arrays = cache.arrays
    pending = np.array(pending_frames(arrays, rank(), world_size()), dtype=np.int64)
    t0 = time.perf_counter()
    labelled = 0.0
    # frames are read (JPEGs decoded, LiDAR depth projected) in DataLoader workers; model-free providers
    # (label maps read from disk, LiDAR labels projected) label there too, a provider that runs a network
    # on the GPU labels in this process
    items = _FrameSupervision(
        frames, provider if provider.model_free else None, pending, tuple(image_size), min_depth, max_depth
    )
    n_workers = default_workers() if workers is None else workers
    loader = DataLoader(items, batch_size=None, num_workers=min(n_workers, len(pending)), collate_fn=_as_is)
    # a shard's frames are written together once all are computed, by a thread while the next frames are read
    with ShardWriter(arrays, pending, background=True) as writer:
        for i, images, depth, labels in tqdm(
            loader, total=len(pending), desc=f"supervise ({provider.name})", disable=not progress or not is_main()
        ):
            interrupt.check()
            # labels: LabelMaps from a worker, or the Frame for this process's network
            maps = (
                labels
                if provider.model_free
                else provider.label(labels, ResizeCrop.fit(labels.cameras[0].image_size, tuple(image_size)))
            )
            sem = maps.semantics
            conf = np.round(np.clip(maps.confidence, 0, 1) * 255).astype(np.uint8)
            alt = {}
            if runner_ups:
                alt = dict(zip(("runner_ups", "runner_up_confidence"), runner_up_levels(maps, runner_ups)))
            writer.add(i, images=images, semantics=sem, confidence=conf, depth=depth, **alt)
            labelled += float((sem != 255).mean())
    barrier()
    elapsed = time.perf_counter() - t0
    return {
        "frames": len(frames),
        "computed": len(pending),
        "skipped": len(frames) - len(pending),
        "seconds": elapsed,
        "coverage": labelled / max(len(pending), 1),
    }
