"""The 18 Occ3D classes, defined once for the whole project.

Ids 0..16 are semantic classes, 17 is free space, 255 means ignore / unknown.
mIoU averages classes 0..16; "free" enters the confusion matrix but not the mean.
"""

from __future__ import annotations

import numpy as np

OCC3D_CLASS_NAMES: tuple[str, ...] = (
    "others",
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction_vehicle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "trailer",
    "truck",
    "driveable_surface",
    "other_flat",
    "sidewalk",
    "terrain",
    "manmade",
    "vegetation",
    "free",
)
NUM_CLASSES = len(OCC3D_CLASS_NAMES)  # 18, free included
FREE_ID = OCC3D_CLASS_NAMES.index("free")  # 17
NUM_SEMANTIC_CLASSES = FREE_ID  # 17: the classes that a voxel can be when it is occupied
IGNORE_ID = 255

# Colours (RGB) as the Occ3D / nuScenes-lidarseg visualisations use them.
OCC3D_COLORS = np.array(
    [
        [0, 0, 0],  # others
        [255, 120, 50],  # barrier
        [255, 192, 203],  # bicycle
        [255, 255, 0],  # bus
        [0, 150, 245],  # car
        [0, 255, 255],  # construction_vehicle
        [200, 180, 0],  # motorcycle
        [255, 0, 0],  # pedestrian
        [255, 240, 150],  # traffic_cone
        [135, 60, 0],  # trailer
        [160, 32, 240],  # truck
        [255, 0, 255],  # driveable_surface
        [139, 137, 137],  # other_flat
        [75, 0, 75],  # sidewalk
        [150, 240, 80],  # terrain
        [230, 230, 250],  # manmade
        [0, 175, 0],  # vegetation
        [255, 255, 255],  # free
    ],
    dtype=np.uint8,
)
IGNORE_COLOR = np.array([64, 64, 64], dtype=np.uint8)

# Classes whose instances move: dropped from auxiliary-frame rays, which assume a static world.
DYNAMIC_CLASS_IDS: tuple[int, ...] = tuple(
    OCC3D_CLASS_NAMES.index(n)
    for n in ("bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian", "trailer", "truck")
)

# Ground classes: flat surfaces that fill the whole voxel layer holding them (see occnet.surfaces).
FLAT_CLASS_IDS: tuple[int, ...] = tuple(
    OCC3D_CLASS_NAMES.index(n) for n in ("driveable_surface", "other_flat", "sidewalk", "terrain")
)

# The ground classes nuScenes's semantic prior map (maps/*.png) covers: driveable area and pedestrian walkways
# (autolabel.fusion.map_prior).
MAP_PRIOR_CLASS_IDS: tuple[int, ...] = tuple(OCC3D_CLASS_NAMES.index(n) for n in ("driveable_surface", "sidewalk"))


def class_id(name: str) -> int:
    """Occ3D id of a class name; raises ValueError listing the names if unknown."""
    try:
        return OCC3D_CLASS_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown Occ3D class {name!r}; known: {', '.join(OCC3D_CLASS_NAMES)}") from None


def colorize(labels: np.ndarray) -> np.ndarray:
    """Class ids (...) uint8 -> RGB (..., 3) uint8; 255 and out-of-range ids get IGNORE_COLOR."""
    labels = np.asarray(labels)
    lut = np.tile(IGNORE_COLOR, (256, 1))
    lut[:NUM_CLASSES] = OCC3D_COLORS
    return lut[labels.astype(np.uint8)]
