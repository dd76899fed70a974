"""Frames, datasets and the Occ3D file format.

The names the README documents are re-exported here (``autolabel.data.NuScenesFrames``); the
modules below hold them.
"""

from .frame import CAMERA_NAMES, Camera, Frame, Lidar
from .nuscenes import NuScenesFrames
from .occ3d import Occ3DLabels, labels_path, read_labels, write_labels

__all__ = [
    "CAMERA_NAMES",
    "Camera",
    "Frame",
    "Lidar",
    "NuScenesFrames",
    "Occ3DLabels",
    "labels_path",
    "read_labels",
    "write_labels",
]
