"""The network's input: a torch Dataset (`FrameDataset`) of samples built from `Frame`s, read by training,
labelling, evaluation, pool scoring and the report.

Each item is a dict of tensors (N cameras at the network's input size):
images (N, 3, H, W) uint8 pixels (the network normalises them: `occnet.network.normalise_images`);
intrinsics (N, 3, 3) of those images; cam2ego (N, 4, 4) from
each camera into the keyframe's ego frame (the LiDAR timestamp's, where the Occ3D grid lives: the ego
moves between the cameras' exposures); depth (N, H, W) LiDAR z-depth (0 = none); semantics (N, H, W)
uint8 (255 = none); confidence (N, H, W): uint8 levels 0..255 when read from a supervision cache (decoded to
[0, 1] on the device by `occnet.fractions.batch_fractions`, as training, labelling and pool scoring do), float32
in [0, 1] otherwise; gt_semantics / gt_mask (X, Y, Z) uint8 and has_gt when Occ3D
labels exist (the frame's gts/, or only the `manual` labels when a mapping is given); token (str). With aux_frames =
K, the supervision of up to K keyframes before and after
(same scene) comes too, its cameras expressed in this keyframe's ego frame through the global poses:
aux_intrinsics (2K, N, 3, 3), aux_cam2ego (2K, N, 4, 4), aux_depth / aux_semantics / aux_confidence
(2K, N, H, W) and aux_valid (2K,) (False where the scene has no such neighbour).

Input at scale (issue 23): with a supervision cache that holds the images (`SupervisionCache.has_images`),
an item reads no camera JPEG and no LiDAR sweep: images, depth and 2D labels come from the cache, poses and
intrinsics from the tables (`NuScenesFrames.meta`); `lidar=True` reads the keyframe sweep alone. An
older cache without images falls back to decoding the JPEGs (slower, same item).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from kernels.grid import GridSpec
from occnet.classes import FREE_ID

from .data.nuscenes import NuScenesFrames
from .data.occ3d import Occ3DLabels
from .data.transforms import ResizeCrop
from .errors import DataError
from .store.frame_arrays import FrameArrays
from .supervision.cache import SupervisionCache
from .supervision.config import PRECOMPUTED_VARIANTS
from .supervision.lidar_depth import lidar_depth_maps
from .supervision.providers import PrecomputedLabels


class FrameDataset(Dataset):
    """Args:
    frames: the dataset of keyframes.
    image_size: network input (H, W); images are resized / cropped with K updated.
    labels: "exact" / "noisy" / "hard" / "v1" precomputed 2D labels from ``labels2d/``, "none", or "cache": 2D labels
        and depth maps read from `cache` (what `autolabel supervise` computed; training never runs SAM).
    indices: the subset of frames to use (None = all).
    lidar: also return the keyframe sweep's own points (lidar_points (P, 3) ego frame, float32) and the
        sensor origin (lidar_origin (3,)); points differ in number, so batch such items as lists.
    fused: the round of fused labels (autolabel.fusion) to return as fused_semantics (X, Y, Z) uint8
        (255 where fusion observed nothing, and for frames it did not fuse) and fused_confidence
        (X, Y, Z) uint8 levels (0..255; decoded like confidence).
    """

    def __init__(
        self,
        frames: NuScenesFrames,
        image_size: tuple[int, int],
        labels: str = "noisy",
        indices: Sequence[int] | None = None,
        grid: GridSpec | None = None,
        aux_frames: int = 0,
        cache: SupervisionCache | None = None,
        manual: Mapping[str, Occ3DLabels] | None = None,
        lidar: bool = False,
        fused: FrameArrays | None = None,
    ):
        if labels not in (*PRECOMPUTED_VARIANTS, "none", "cache"):
            raise ValueError(
                f"FrameDataset.labels must be one of {', '.join(PRECOMPUTED_VARIANTS)}, 'none' or 'cache', "
                f"got {labels!r}"
            )
        if (labels == "cache") != (cache is not None):
            raise ValueError("FrameDataset: pass cache= exactly when labels='cache'")
        if cache is not None and tuple(cache.image_size) != tuple(image_size):
            raise DataError(
                f"{cache.arrays.where}: computed at {tuple(cache.image_size)}, the network takes "
                f"{tuple(image_size)}; rerun `autolabel supervise` with this recipe's network.image_size"
            )
        self.cache = cache
        # manual: the only 3D labels training may see (annotated frames); None = the frames' own gts/
        self.manual = manual
        self.frames = frames
        self.image_size = tuple(image_size)
        self.labels = labels
        self.indices = list(range(len(frames))) if indices is None else list(indices)
        self.grid = grid or frames.grid
        if aux_frames < 0:
            raise ValueError(f"FrameDataset.aux_frames must be >= 0, got {aux_frames}")
        self.aux_frames = aux_frames
        self.lidar = lidar
        self.fused = fused

    def __len__(self) -> int:
        return len(self.indices)

    def _supervision(self, frame, key_ego2global: np.ndarray):
        """Resized cameras' intrinsics, cam -> keyframe-ego poses, depth maps, 2D labels of one frame."""
        rc = ResizeCrop.fit(frame.cameras[0].image_size, self.image_size)
        small = rc.apply_frame(frame)
        to_key = np.linalg.inv(key_ego2global)
        cam2key = np.stack([to_key @ c.ego2global @ c.cam2ego for c in small.cameras]).astype(np.float32)
        K = np.stack([c.K for c in small.cameras]).astype(np.float32)
        if self.cache is not None:
            sem, conf, depth = self.cache.read(frame.token, fractions=False)  # uint8 levels: decoded on the device
            return small, K, cam2key, depth, sem, conf
        depth = lidar_depth_maps(small)
        if self.labels == "none":
            sem = np.full((len(small.cameras), *self.image_size), 255, np.uint8)
            conf = np.zeros(sem.shape, np.float32)
        else:
            sem, conf = PrecomputedLabels(self.frames.dataroot, variant=self.labels).label(frame, rc)[:2]
        return small, K, cam2key, depth, sem, conf

    def _neighbours(self, frame) -> list:
        """Tokens of the keyframes -K..-1, +1..+K in the scene ('' where the scene ends)."""
        out = []
        for direction in ("prev", "next"):
            current = frame
            for _ in range(self.aux_frames):
                token = getattr(current, direction) if current is not None else ""
                if not token:
                    current = None
                elif self.cache is not None:  # poses and intrinsics only: the supervision comes from the cache
                    current = self.frames.meta(token)
                else:
                    current = self.frames.frame(token, images=False)
                out.append(current)
        return out

    @property
    def _cached_images(self) -> bool:
        return self.cache is not None and self.cache.has_images

    def _frame(self, i: int):
        token = self.frames.tokens[self.indices[i]]
        if self.cache is None:  # depth maps are projected from the LiDAR sweeps
            return self.frames.frame(token, images=True, lidar="sweeps")
        lidar = "key" if self.lidar else "none"  # only `lidar_points` (the keyframe sweep's own) need LiDAR
        if self._cached_images:
            return self.frames.frame(token, images=False, lidar=lidar, check_files=False)
        return self.frames.frame(token, images=True, lidar=lidar)  # a cache made before issue 23

    def __getitem__(self, i: int) -> dict:
        frame = self._frame(i)
        key_pose = frame.lidar.ego2global
        small, K, cam2key, depth, sem, conf = self._supervision(frame, key_pose)
        if self._cached_images:
            pixels = self.cache.read_images(frame.token)  # (N, H, W, 3) uint8, already at the network size
        else:
            pixels = np.stack([c.image for c in small.cameras])
        item = {
            "images": torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))),
            "intrinsics": torch.from_numpy(K),
            "cam2ego": torch.from_numpy(cam2key),
            "depth": torch.from_numpy(depth),
            "semantics": torch.from_numpy(sem),
            "confidence": torch.from_numpy(conf),
            "token": frame.token,
        }
        if self.lidar:
            own = frame.lidar.points[frame.lidar.time_lag == 0, :3]
            item["lidar_points"] = torch.from_numpy(np.ascontiguousarray(own, dtype=np.float32))
            item["lidar_origin"] = torch.from_numpy(frame.lidar.lidar2ego[:3, 3].astype(np.float64))
        shape = self.grid.shape
        gt = frame.gt if self.manual is None else self.manual.get(frame.token)
        if gt is not None:
            item["gt_semantics"] = torch.from_numpy(gt.semantics)
            item["gt_mask"] = torch.from_numpy(gt.mask_camera)
            item["has_gt"] = torch.tensor(True)
        else:
            item["gt_semantics"] = torch.full(shape, FREE_ID, dtype=torch.uint8)
            item["gt_mask"] = torch.zeros(shape, dtype=torch.uint8)
            item["has_gt"] = torch.tensor(False)
        if self.manual is not None:
            # voxels an annotator labelled (issue 21, region-level labels): the 3D loss trusts only these, and
            # the teacher's pseudo-labels teach the rest of the frame; all of a whole-frame label, none without
            annotated = getattr(gt, "mask_annotated", None)
            if annotated is not None:
                item["gt_annotated"] = torch.from_numpy(annotated)
                item["gt_mask"] = item["gt_mask"] * item["gt_annotated"]
            else:
                item["gt_annotated"] = torch.full(shape, int(gt is not None), dtype=torch.uint8)
        if self.fused is not None:
            has = self.fused.has(frame.token) and self.fused.is_done(self.fused.index(frame.token))
            i = self.fused.index(frame.token) if has else -1
            item["fused_semantics"] = torch.from_numpy(
                self.fused.read(i, "semantics") if has else np.full(shape, 255, np.uint8)
            )
            item["fused_confidence"] = torch.from_numpy(  # uint8 levels, decoded on the device (occnet.fractions)
                self.fused.read(i, "confidence") if has else np.zeros(shape, np.uint8)
            )
        if self.aux_frames:
            aux = [self._supervision(nb, key_pose)[1:] if nb is not None else None for nb in self._neighbours(frame)]
            blank = (K, cam2key, np.zeros_like(depth), np.full_like(sem, 255), np.zeros_like(conf))
            parts = [a if a is not None else blank for a in aux]
            for name, j in (
                ("aux_intrinsics", 0),
                ("aux_cam2ego", 1),
                ("aux_depth", 2),
                ("aux_semantics", 3),
                ("aux_confidence", 4),
            ):
                item[name] = torch.from_numpy(np.stack([p[j] for p in parts]))
            item["aux_valid"] = torch.tensor([a is not None for a in aux])
        return item
