"""A sensor rig (camera intrinsics and mounts, lidar mount) read straight from nuScenes tables.

Used where nuscenes-devkit is not needed or not installed (benchmarks on a bare GPU machine, the
synthetic world's sensors): it reads ``sample``, ``sample_data``, ``calibrated_sensor`` and ``sensor``
of one keyframe as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .frame import CAMERA_NAMES, LIDAR_NAME
from .geometry import transform_matrix


@dataclass(frozen=True)
class RigCamera:
    """name, K (3, 3) for image_size (H, W), cam2ego (4, 4)."""

    name: str
    K: np.ndarray
    cam2ego: np.ndarray
    image_size: tuple[int, int]


@dataclass(frozen=True)
class Rig:
    cameras: tuple[RigCamera, ...]  # in CAMERA_NAMES order
    lidar2ego: np.ndarray  # (4, 4)


def load_rig(dataroot: str | Path, version: str = "v1.0-mini", sample_token: str | None = None) -> Rig:
    """The rig of one keyframe (the first sample when no token is given)."""
    folder = Path(dataroot) / version

    def table(name: str) -> list[dict]:
        path = folder / f"{name}.json"
        if not path.is_file():
            raise DataError(f"{path}: nuScenes table not found")
        return json.loads(path.read_text())

    samples = table("sample")
    if not samples:
        raise DataError(f"{folder}: no samples")
    token = sample_token or samples[0]["token"]
    calib = {r["token"]: r for r in table("calibrated_sensor")}
    sensors = {r["token"]: r["channel"] for r in table("sensor")}
    by_channel = {}
    for sd in table("sample_data"):
        if sd["sample_token"] == token and sd.get("is_key_frame", True):
            cs = calib[sd["calibrated_sensor_token"]]
            by_channel[sensors[cs["sensor_token"]]] = (sd, cs)
    missing = [c for c in (*CAMERA_NAMES, LIDAR_NAME) if c not in by_channel]
    if missing:
        raise DataError(f"{folder}: sample {token} has no keyframe data for {missing}")
    cams = []
    for name in CAMERA_NAMES:
        sd, cs = by_channel[name]
        cams.append(
            RigCamera(
                name,
                np.asarray(cs["camera_intrinsic"], dtype=np.float64),
                transform_matrix(cs["translation"], cs["rotation"]),
                (int(sd["height"]), int(sd["width"])),
            )
        )
    _, lidar_cs = by_channel[LIDAR_NAME]
    return Rig(tuple(cams), transform_matrix(lidar_cs["translation"], lidar_cs["rotation"]))
