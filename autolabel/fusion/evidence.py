"""The evidence of a keyframe's scene window: LiDAR sweeps and 2D-labelled views in its ego frame."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from ..annotation.accumulate import missing_beams
from ..data.nuscenes import NuScenesFrames
from ..data.transforms import ResizeCrop
from ..supervision.cache import SupervisionCache
from .config import FusionConfig
from .fuse import Sweep, View
from .map_prior import map_side


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
    return same[max(0, i - window) : i + window + 1]


class WindowReader:
    """Frames (LiDAR, poses) and 2D labels by token, the last `keep` of them kept: consecutive keyframes of
    a scene share most of their windows, so each file is read once per scene, not once per window."""

    def __init__(self, frames: NuScenesFrames, cache: SupervisionCache, keep: int):
        self.frames, self.cache, self.keep = frames, cache, keep
        self.held: OrderedDict[str, tuple] = OrderedDict()
        self.sides: dict[str, np.ndarray] = {}  # map_side of the held frames' points, once per frame

    def __call__(self, token: str):
        """(Frame without images, 2D semantics (N, h, w), confidence (N, h, w)) of `token`."""
        if token not in self.held:
            sem, conf, _ = self.cache.read(token)
            self.held[token] = (self.frames.frame(token, images=False), sem, conf)
            while len(self.held) > self.keep:
                self.sides.pop(self.held.popitem(last=False)[0], None)
        return self.held[token]

    def map_side(self, token: str, prior) -> np.ndarray:
        """(P,) int8: where `token`'s LiDAR points lie against the map `prior` (fusion.map_prior.map_side), in the
        global frame, so computed once for all the windows the frame is in."""
        if token not in self.sides:
            lidar = self(token)[0].lidar
            xy = lidar.points[:, :3].astype(np.float64) @ lidar.ego2global[:2, :3].T + lidar.ego2global[:2, 3]
            self.sides[token] = map_side(prior, xy)
        return self.sides[token]


def frame_evidence(
    frames: NuScenesFrames,
    cache: SupervisionCache,
    token: str,
    cfg: FusionConfig,
    device: torch.device,
    read: WindowReader | None = None,
) -> Evidence:
    """Sweeps and views of `token`'s window (2D labels from the supervision cache, at its resolution);
    `read` a WindowReader shared across the frames of a scene (None: read everything afresh)."""
    read = read or WindowReader(frames, cache, 2 * cfg.window + 1)
    target = read(token)[0]
    world2target = np.linalg.inv(target.lidar.ego2global)
    sweeps, views = [], []
    window = window_tokens(frames, token, cfg.window)
    prior = frames.semantic_prior(token) if cfg.map_prior > 0 else None
    for j, t in enumerate(window):
        f, sem, conf = read(t)
        to_target = world2target @ f.lidar.ego2global
        xyz = f.lidar.points[:, :3].astype(np.float64) @ to_target[:3, :3].T + to_target[:3, 3]
        origin = to_target[:3, :3] @ f.lidar.lidar2ego[:3, 3] + to_target[:3, 3]
        seconds = (f.lidar.timestamp - target.lidar.timestamp) * 1e-6 - f.lidar.time_lag.astype(np.float64)
        beams = free = side = None
        if prior is not None:  # the points' global x, y against the scene's map
            side = torch.from_numpy(read.map_side(t, prior)).to(device)
        if cfg.voxels == "rules":  # the keyframe sweep's beams without a return, from its points in the sensor frame
            key = f.lidar.points[f.lidar.time_lag == 0]
            ego2lidar = np.linalg.inv(f.lidar.lidar2ego)
            raw = np.concatenate([key[:, :3] @ ego2lidar[:3, :3].T + ego2lidar[:3, 3], key[:, 3:]], 1)
            dirs, free = missing_beams(raw)
            beams = dirs @ (to_target[:3, :3] @ f.lidar.lidar2ego[:3, :3]).T
        sweeps.append(
            Sweep(
                points=torch.from_numpy(xyz).to(device),
                origin=torch.from_numpy(origin).to(device),
                keyframe=torch.from_numpy(f.lidar.time_lag == 0).to(device),
                seconds=torch.from_numpy(seconds).to(device),
                source=j,
                beams=beams,
                beam_free=free,
                map_side=side,
            )
        )
        for c, cam in enumerate(f.cameras):
            rc = ResizeCrop.fit(cam.image_size, cache.image_size)
            target2cam = np.linalg.inv(cam.cam2ego) @ np.linalg.inv(cam.ego2global) @ target.lidar.ego2global
            views.append(
                View(
                    target2cam=torch.from_numpy(target2cam).to(device),
                    K=torch.from_numpy(rc.matrix @ cam.K).to(device),
                    semantics=torch.from_numpy(sem[c].astype(np.int64)).to(device),
                    confidence=torch.from_numpy(conf[c]).to(device),
                    source=j,
                )
            )
    return Evidence(sweeps, views, window.index(token))
