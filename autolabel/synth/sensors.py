"""The synthetic sensors: the real nuScenes sample's rig (cameras scaled to the image size) and a
32-beam spinning lidar (HDL-32E elevations), rendered by ray casting at their own timestamps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.rig import Rig, load_rig
from .appearance import shade
from .raycast import SKY, Hits, cast, pinhole_candidates, spin_candidates
from .world import C, World

RIG_SOURCE = Path(__file__).resolve().parents[2] / "tests" / "data" / "nuscenes-sample"
# Camera timestamps relative to the keyframe lidar sweep (seconds), as in the real sample.
CAMERA_OFFSETS = {
    "CAM_FRONT": -0.0355,
    "CAM_FRONT_RIGHT": -0.0276,
    "CAM_FRONT_LEFT": -0.0431,
    "CAM_BACK": -0.0104,
    "CAM_BACK_LEFT": -0.0005,
    "CAM_BACK_RIGHT": -0.0201,
}
# HDL-32E: 32 beams from -30.67 to +10.67 degrees
LIDAR_ELEVATIONS = np.deg2rad(np.linspace(-30.67, 10.67, 32))
LIDAR_AZIMUTHS = 1084  # 0.33 degree steps at 20 Hz
LIDAR_MAX_RANGE = 70.0
CAMERA_MAX_RANGE = 250.0
INTENSITY = {
    C["driveable_surface"]: 8,
    C["other_flat"]: 12,
    C["sidewalk"]: 20,
    C["terrain"]: 30,
    C["manmade"]: 40,
    C["vegetation"]: 25,
    C["car"]: 35,
    C["truck"]: 35,
    C["bus"]: 40,
    C["trailer"]: 35,
    C["construction_vehicle"]: 45,
    C["motorcycle"]: 30,
    C["bicycle"]: 25,
    C["pedestrian"]: 15,
    C["traffic_cone"]: 90,
    C["barrier"]: 70,
    C["others"]: 30,
}


@dataclass(frozen=True)
class SynthCamera:
    name: str
    K: np.ndarray  # (3, 3) for image_size
    cam2ego: np.ndarray
    image_size: tuple[int, int]  # (H, W)
    time_offset: float


def synth_rig(image_size: tuple[int, int], rig: Rig | None = None) -> tuple[list[SynthCamera], np.ndarray]:
    """Cameras with intrinsics scaled to `image_size` (H, W), and lidar2ego, from the real sample."""
    rig = rig or load_rig(RIG_SOURCE)
    h, w = image_size
    cams = []
    for c in rig.cameras:
        sy, sx = h / c.image_size[0], w / c.image_size[1]
        K = np.diag([sx, sy, 1.0]) @ c.K
        cams.append(SynthCamera(c.name, K, c.cam2ego, (h, w), CAMERA_OFFSETS[c.name]))
    return cams, rig.lidar2ego


@dataclass
class CameraRender:
    image: np.ndarray  # (H, W, 3) uint8
    semantics: np.ndarray  # (H, W) uint8, 255 sky
    depth: np.ndarray  # (H, W) float32 camera z-depth, 0 for sky
    instance: np.ndarray  # (H, W) int32, 0 for ground and sky
    world_xy: np.ndarray  # (H, W, 2) float32 world x, y of each pixel's surface (NaN for sky)


def camera_rays(cam: SynthCamera, cam2world: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origin (3,), unit world directions (H*W, 3) through pixel centres, and each ray's z per metre."""
    h, w = cam.image_size
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    pix = np.stack([u.ravel(), v.ravel(), np.ones(h * w)], 1)
    d_cam = pix @ np.linalg.inv(cam.K).T
    norm = np.linalg.norm(d_cam, axis=1)
    d_cam /= norm[:, None]
    dirs = d_cam @ cam2world[:3, :3].T
    return cam2world[:3, 3].copy(), dirs, d_cam[:, 2]


def render_camera(
    world: World, cam: SynthCamera, ego2world: np.ndarray, t: float, rng: np.random.Generator
) -> CameraRender:
    cam2world = ego2world @ cam.cam2ego
    prims = world.primitives_at(t)
    origin, dirs, z_per_m = camera_rays(cam, cam2world)
    cands = pinhole_candidates(prims, np.linalg.inv(cam2world), cam.K, cam.image_size, CAMERA_MAX_RANGE)
    hits = cast(world, prims, origin, dirs, cands)
    h, w = cam.image_size
    image = shade(hits, origin, dirs, rng).reshape(h, w, 3)
    finite = np.isfinite(hits.t)
    depth = np.where(finite, hits.t * z_per_m, 0).astype(np.float32)
    xy = np.where(finite[:, None], origin[:2] + np.where(finite, hits.t, 0)[:, None] * dirs[:, :2], np.nan)
    return CameraRender(
        image=image,
        semantics=hits.cls.reshape(h, w),
        depth=depth.reshape(h, w),
        instance=hits.instance.reshape(h, w),
        world_xy=xy.reshape(h, w, 2).astype(np.float32),
    )


def lidar_directions() -> np.ndarray:
    """(32 * LIDAR_AZIMUTHS, 3) unit directions in the sensor frame, ring-major."""
    az = np.arange(LIDAR_AZIMUTHS) * (2 * np.pi / LIDAR_AZIMUTHS)
    el = LIDAR_ELEVATIONS
    return np.stack(
        [
            np.cos(el)[:, None] * np.cos(az)[None],
            np.cos(el)[:, None] * np.sin(az)[None],
            np.repeat(np.sin(el)[:, None], len(az), 1),
        ],
        -1,
    ).reshape(-1, 3)


def render_lidar(
    world: World,
    lidar2ego: np.ndarray,
    ego2world: np.ndarray,
    t: float,
    rng: np.random.Generator,
    dropout: float = 0.08,
    range_noise: float = 0.015,
) -> tuple[np.ndarray, Hits, np.ndarray, np.ndarray]:
    """One sweep: points (N, 5) float32 in the sensor frame (x, y, z, intensity, ring), the exact hits of
    every beam, the beams' sensor-frame directions, and the exact Occ3D class of every point (N,) uint8."""
    sensor2world = ego2world @ lidar2ego
    prims = world.primitives_at(t)
    d_sensor = lidar_directions()
    dirs = d_sensor @ sensor2world[:3, :3].T
    cands = spin_candidates(prims, np.linalg.inv(sensor2world), LIDAR_ELEVATIONS, LIDAR_AZIMUTHS, LIDAR_MAX_RANGE)
    hits = cast(world, prims, sensor2world[:3, 3], dirs, cands)
    ring = np.repeat(np.arange(len(LIDAR_ELEVATIONS)), LIDAR_AZIMUTHS)
    keep = np.isfinite(hits.t) & (hits.t < LIDAR_MAX_RANGE) & (hits.cls != SKY) & (rng.random(len(dirs)) >= dropout)
    r = hits.t[keep] + rng.normal(0, range_noise, keep.sum())
    xyz = d_sensor[keep] * r[:, None]
    lut = np.zeros(256, np.float32)
    for k, v in INTENSITY.items():
        lut[k] = v
    intensity = lut[hits.cls[keep]] * rng.uniform(0.8, 1.2, keep.sum())
    intensity[hits.paint[keep]] = 80
    points = np.concatenate([xyz, intensity[:, None], ring[keep, None]], 1).astype(np.float32)
    return points, hits, d_sensor, hits.cls[keep].astype(np.uint8)
