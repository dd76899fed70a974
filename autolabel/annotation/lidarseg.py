"""nuScenes-lidarseg class indices and their Occ3D ids.

A lidarseg file holds one uint8 per point of a keyframe LIDAR_TOP sweep, the index of the point's class in
the dataset's ``category.json`` (nuScenes-lidarseg ships indices 0..31, `LIDARSEG_NAMES`). Indices map to
Occ3D ids through the table of the ``lidarseg`` supervision provider (`LIDARSEG_TO_OCC3D`): noise and the
ego vehicle get no label (255), the lidarseg challenge's ignore group is Occ3D "others" (0).
"""

from __future__ import annotations

import numpy as np

from occnet.classes import IGNORE_ID, NUM_SEMANTIC_CLASSES

from ..supervision.providers import LIDARSEG_TO_OCC3D

# nuScenes-lidarseg's category indices (category.json "index"; the devkit's colormap order)
LIDARSEG_NAMES: tuple[str, ...] = (
    "noise",
    "animal",
    "human.pedestrian.adult",
    "human.pedestrian.child",
    "human.pedestrian.construction_worker",
    "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer",
    "human.pedestrian.stroller",
    "human.pedestrian.wheelchair",
    "movable_object.barrier",
    "movable_object.debris",
    "movable_object.pushable_pullable",
    "movable_object.trafficcone",
    "static_object.bicycle_rack",
    "vehicle.bicycle",
    "vehicle.bus.bendy",
    "vehicle.bus.rigid",
    "vehicle.car",
    "vehicle.construction",
    "vehicle.emergency.ambulance",
    "vehicle.emergency.police",
    "vehicle.motorcycle",
    "vehicle.trailer",
    "vehicle.truck",
    "flat.driveable_surface",
    "flat.other",
    "flat.sidewalk",
    "flat.terrain",
    "static.manmade",
    "static.other",
    "static.vegetation",
    "vehicle.ego",
)
# the synthetic world's classes as lidarseg categories (its objects' sample_annotation categories, and the
# stuff classes' one-to-one names): every Occ3D id 0..16 has one
OCC3D_TO_LIDARSEG_NAME: dict[int, str] = {
    0: "movable_object.pushable_pullable",
    1: "movable_object.barrier",
    2: "vehicle.bicycle",
    3: "vehicle.bus.rigid",
    4: "vehicle.car",
    5: "vehicle.construction",
    6: "vehicle.motorcycle",
    7: "human.pedestrian.adult",
    8: "movable_object.trafficcone",
    9: "vehicle.trailer",
    10: "vehicle.truck",
    11: "flat.driveable_surface",
    12: "flat.other",
    13: "flat.sidewalk",
    14: "flat.terrain",
    15: "static.manmade",
    16: "static.vegetation",
}


def category_indices(categories: list[dict]) -> dict[int, str]:
    """Index -> category name of a dataset's category table: its "index" fields (nuScenes-lidarseg's
    category.json), or the standard `LIDARSEG_NAMES` when the table has none (nuScenes without lidarseg)."""
    indexed = {int(c["index"]): c["name"] for c in categories if "index" in c}
    return indexed or dict(enumerate(LIDARSEG_NAMES))


def occ3d_table(categories: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(256,) uint8 Occ3D id of every lidarseg index (255: no label) and (256,) bool: the index is a known
    category. A category outside the provider's table is known but unlabelled (255)."""
    table = np.full(256, IGNORE_ID, np.uint8)
    known = np.zeros(256, bool)
    for index, name in category_indices(categories).items():
        if 0 <= index < 256:
            known[index] = True
            table[index] = LIDARSEG_TO_OCC3D.get(name, IGNORE_ID)
    return table, known


def occ3d_to_lidarseg(categories: list[dict]) -> np.ndarray:
    """(256,) uint8: the lidarseg index of every Occ3D id 0..16 (the synthetic world's writer; 0 = noise
    elsewhere), by `OCC3D_TO_LIDARSEG_NAME` and the table's indices."""
    by_name = {name: index for index, name in category_indices(categories).items()}
    out = np.zeros(256, np.uint8)
    for occ, name in OCC3D_TO_LIDARSEG_NAME.items():
        out[occ] = by_name[name]
    return out


def lidarseg_categories(token) -> list[dict]:
    """The nuScenes-lidarseg category table (name, index, token from `token(name)`), for the synthetic world."""
    return [
        {"token": token("category", name), "name": name, "description": f"synthetic {name}", "index": i}
        for i, name in enumerate(LIDARSEG_NAMES)
    ]


assert all(LIDARSEG_TO_OCC3D[n] == c for c, n in OCC3D_TO_LIDARSEG_NAME.items() if c < NUM_SEMANTIC_CLASSES)
