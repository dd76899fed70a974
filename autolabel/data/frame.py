"""The data model every stage shares: a keyframe with six cameras, LiDAR and optional Occ3D labels.

Frames come from nuScenes layout (real or synthetic alike). Poses are (4, 4) float64 matrices that
map points from the named source frame into the target frame: ``cam2ego`` maps camera coordinates
(x right, y down, z forward) into the ego frame at the camera's own timestamp; ``ego2global`` maps
that ego frame into the global frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from .occ3d import Occ3DLabels

# Camera order used everywhere (tensors of six cameras follow it).
CAMERA_NAMES: tuple[str, ...] = (
    "CAM_FRONT_LEFT",
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_LEFT",
    "CAM_BACK",
    "CAM_BACK_RIGHT",
)
LIDAR_NAME = "LIDAR_TOP"


@dataclass
class Camera:
    """One camera image with its calibration.

    Attributes:
        name: channel name, e.g. "CAM_FRONT".
        image: (H, W, 3) uint8 RGB, or an empty (0, 0, 3) array when images were not loaded.
        K: (3, 3) float64 intrinsics for `image`'s resolution (pixel corner at 0: pixel i covers [i, i+1)).
        cam2ego: (4, 4) float64 camera -> ego frame at the camera's timestamp.
        ego2global: (4, 4) float64 ego pose at the camera's own timestamp.
        timestamp: microseconds.
        token: nuScenes sample_data token.
        image_size: (H, W) of the image that K belongs to (kept when pixels are not loaded).
    """

    name: str
    image: np.ndarray
    K: np.ndarray
    cam2ego: np.ndarray
    ego2global: np.ndarray
    timestamp: int
    token: str
    image_size: tuple[int, int]

    def with_image(self, image: np.ndarray, K: np.ndarray) -> "Camera":
        return replace(self, image=image, K=K, image_size=(int(image.shape[0]), int(image.shape[1])))


@dataclass
class Lidar:
    """LiDAR points of a keyframe, optionally with earlier sweeps accumulated.

    Attributes:
        points: (N, 5) float32 x, y, z (metres, in the keyframe lidar timestamp's ego frame),
            intensity, ring index.
        time_lag: (N,) float32 seconds between the keyframe and the sweep a point comes from (0 = keyframe).
        ego2global: (4, 4) float64 ego pose at the keyframe lidar timestamp.
        lidar2ego: (4, 4) float64 sensor mount of the keyframe sweep.
        timestamp: microseconds of the keyframe sweep.
        token: sample_data token of the keyframe sweep.
    """

    points: np.ndarray
    time_lag: np.ndarray
    ego2global: np.ndarray
    lidar2ego: np.ndarray
    timestamp: int
    token: str


@dataclass
class Frame:
    """One keyframe: the unit that is labelled, selected and exported."""

    token: str
    scene: str
    timestamp: int
    cameras: tuple[Camera, ...]
    lidar: Lidar
    gt: Optional[Occ3DLabels] = None
    prev: str = ""
    next: str = ""

    def camera(self, name: str) -> Camera:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(f"frame {self.token} has no camera {name!r}; it has {[c.name for c in self.cameras]}")
