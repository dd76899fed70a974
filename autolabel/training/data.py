"""A torch Dataset of training samples built from `Frame`s.

Each item is a dict of tensors (N cameras at the network's input size):
images (N, 3, H, W) float32 normalised; intrinsics (N, 3, 3) of those images; cam2ego (N, 4, 4);
depth (N, H, W) LiDAR z-depth (0 = none); semantics (N, H, W) uint8 (255 = none); confidence (N, H, W);
gt_semantics / gt_mask (X, Y, Z) uint8 and has_gt when Occ3D labels exist; token (str).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from kernels.grid import GridSpec
from occnet.classes import FREE_ID

from ..data.nuscenes import NuScenesFrames
from ..data.transforms import ResizeCrop
from ..supervision.lidar_depth import lidar_depth_maps
from ..supervision.precomputed import read_label_map

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


class FrameDataset(Dataset):
    """Args:
        frames: the dataset of keyframes.
        image_size: network input (H, W); images are resized / cropped with K updated.
        labels: "exact" / "noisy" precomputed 2D labels from ``labels2d/``, or "none".
        indices: the subset of frames to use (None = all).
    """

    def __init__(self, frames: NuScenesFrames, image_size: tuple[int, int], labels: str = "noisy",
                 indices: Sequence[int] | None = None, grid: GridSpec | None = None):
        if labels not in ("exact", "noisy", "none"):
            raise ValueError(f"FrameDataset.labels must be 'exact', 'noisy' or 'none', got {labels!r}")
        self.frames = frames
        self.image_size = tuple(image_size)
        self.labels = labels
        self.indices = list(range(len(frames))) if indices is None else list(indices)
        self.grid = grid or frames.grid

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        frame = self.frames[self.indices[i]]
        rc = ResizeCrop.fit(frame.cameras[0].image_size, self.image_size)
        small = rc.apply_frame(frame)
        images = np.stack([(c.image.astype(np.float32) / 255 - MEAN) / STD for c in small.cameras]).transpose(0, 3, 1, 2)
        depth = lidar_depth_maps(small)
        n = len(small.cameras)
        sem = np.full((n, *self.image_size), 255, np.uint8)
        conf = np.zeros((n, *self.image_size), np.float32)
        if self.labels != "none":
            for k, cam in enumerate(frame.cameras):
                s, c = read_label_map(self.frames.dataroot, frame.scene, frame.token, cam.name, self.labels)
                sem[k] = rc.apply_image(s, Image.NEAREST)
                sem[k][rc.apply_image(np.ones_like(s), Image.NEAREST) == 0] = 255  # padding of the crop
                conf[k] = rc.apply_image(c, Image.NEAREST)
        item = {
            "images": torch.from_numpy(np.ascontiguousarray(images)),
            "intrinsics": torch.from_numpy(np.stack([c.K for c in small.cameras]).astype(np.float32)),
            "cam2ego": torch.from_numpy(np.stack([c.cam2ego for c in small.cameras]).astype(np.float32)),
            "depth": torch.from_numpy(depth),
            "semantics": torch.from_numpy(sem),
            "confidence": torch.from_numpy(conf),
            "token": frame.token,
        }
        shape = self.grid.shape
        if frame.gt is not None:
            item["gt_semantics"] = torch.from_numpy(frame.gt.semantics)
            item["gt_mask"] = torch.from_numpy(frame.gt.mask_camera)
            item["has_gt"] = torch.tensor(True)
        else:
            item["gt_semantics"] = torch.full(shape, FREE_ID, dtype=torch.uint8)
            item["gt_mask"] = torch.zeros(shape, dtype=torch.uint8)
            item["has_gt"] = torch.tensor(False)
        return item
