"""Frames -> tensors for the occupancy network (images, calibration, LiDAR depth, 2D labels, 3D labels).

``autolabel.training.FrameDataset`` (the README's name) is re-exported from ``.data``.
"""

from .data import FrameDataset

__all__ = ["FrameDataset"]
