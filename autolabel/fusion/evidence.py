"""The evidence of a keyframe's scene window: LiDAR sweeps and 2D-labelled views in its ego frame."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.nuscenes import NuScenesFrames
from ..data.transforms import ResizeCrop
from ..supervision.cache import SupervisionCache
from .config import FusionConfig
from .fuse import Sweep, View


@dataclass
class Evidence:
    """What fusion uses for one keyframe: its window's sweeps and views, sweeps[target] its own LiDAR."""

    sweeps: list[Sweep]
    views: list[View]
    target: int


def window_tokens(frames: NuScenesFrames, token: str, window: int) -> list[str]:
    """The keyframes of `token`'s scene within +-window of it, in time order (frames lists each scene's
    keyframes in time order)."""
    scene = frames.scene_of(token)
    same = [t for t in frames.tokens if frames.scene_of(t) == scene]
    i = same.index(token)
    return same[max(0, i - window): i + window + 1]


def frame_evidence(frames: NuScenesFrames, cache: SupervisionCache, token: str, cfg: FusionConfig,
                   device: torch.device) -> Evidence:
    """Sweeps and views of `token`'s window (2D labels from the supervision cache, at its resolution)."""
    target = frames.frame(token, images=False)
    world2target = np.linalg.inv(target.lidar.ego2global)
    sweeps, views = [], []
    window = window_tokens(frames, token, cfg.window)
    for j, t in enumerate(window):
        f = target if t == token else frames.frame(t, images=False)
        to_target = world2target @ f.lidar.ego2global
        xyz = f.lidar.points[:, :3].astype(np.float64) @ to_target[:3, :3].T + to_target[:3, 3]
        origin = to_target[:3, :3] @ f.lidar.lidar2ego[:3, 3] + to_target[:3, 3]
        seconds = (f.lidar.timestamp - target.lidar.timestamp) * 1e-6 - f.lidar.time_lag.astype(np.float64)
        sweeps.append(Sweep(points=torch.from_numpy(xyz).to(device), origin=torch.from_numpy(origin).to(device),
                            keyframe=torch.from_numpy(f.lidar.time_lag == 0).to(device),
                            seconds=torch.from_numpy(seconds).to(device), source=j))
        sem, conf, _ = cache.read(t)
        for c, cam in enumerate(f.cameras):
            rc = ResizeCrop.fit(cam.image_size, cache.image_size)
            target2cam = np.linalg.inv(cam.cam2ego) @ np.linalg.inv(cam.ego2global) @ target.lidar.ego2global
            views.append(View(target2cam=torch.from_numpy(target2cam).to(device),
                              K=torch.from_numpy(rc.matrix @ cam.K).to(device),
                              semantics=torch.from_numpy(sem[c].astype(np.int64)).to(device),
                              confidence=torch.from_numpy(conf[c]).to(device), source=j))
    return Evidence(sweeps, views, window.index(token))
