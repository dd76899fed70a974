"""The evidence of a keyframe's scene window: LiDAR sweeps and 2D-labelled views in its ego frame."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from ..annotation.accumulate import missing_beams
from ..data.frame import Frame
from ..data.movers import box_members, box_pose
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
    keyframes together, in time order)."""
    scene, i = frames.scene_of(token), frames.index(token)
    return [t for t in frames.tokens[max(0, i - window) : i + window + 1] if frames.scene_of(t) == scene]


@dataclass
class Keyframe:
    """What fusion reads of one keyframe, once for every window it is in: the frame (no images), its 2D labels
    from the cache (N cameras, h x w at the cache's resolution), where its LiDAR points lie against the map
    ((P,) int8, None without `fusion.map_prior`), its keyframe sweep's beams without a return (unit
    directions (M, 3) in the sensor frame and how far each is free; None unless `fusion.voxels: rules`) and,
    with the tracks read (`FusionConfig.tracks`), the boxes of its moving objects (`instances` tokens, `boxes`
    (I, 4, 4) box -> global) and which box each LiDAR point lies in ((P,) int32 index, -1 none; points of the
    keyframe sweep only, since the earlier sweeps' points in moving boxes were dropped as ghosts)."""

    frame: Frame
    semantics: np.ndarray  # (N, h, w) uint8
    confidence: np.ndarray  # (N, h, w) float32
    # runner-up names (N, R, h, w) uint8 and confidence float32, where the cache keeps them (else None)
    runner_ups: np.ndarray | None = None
    runner_up_confidence: np.ndarray | None = None
    map_side: np.ndarray | None = None
    beams: np.ndarray | None = None
    beam_free: np.ndarray | None = None
    instances: tuple[str, ...] = ()
    boxes: np.ndarray | None = None
    member: np.ndarray | None = None


def read_keyframe(frames: NuScenesFrames, cache: SupervisionCache, token: str, cfg: FusionConfig) -> Keyframe:
    """Everything fusion needs of `token` that does not depend on the window's labelled frame."""
    frame = frames.frame(token, images=False)
    sem, conf, _ = cache.read(token)
    lidar = frame.lidar
    own = lidar.time_lag == 0  # the keyframe sweep's points
    world = None  # the points in the global frame, for the map and the boxes
    if cfg.map_prior > 0 or cfg.tracks:
        world = lidar.points[:, :3].astype(np.float64) @ lidar.ego2global[:3, :3].T + lidar.ego2global[:3, 3]
    side = beams = free = None
    if cfg.map_prior > 0:  # the points' global x, y against the scene's map
        side = map_side(frames.semantic_prior(token), world[:, :2])
    if cfg.voxels == "rules":  # the keyframe sweep's beams without a return, from its points in the sensor frame
        key = lidar.points[own]
        ego2lidar = np.linalg.inv(lidar.lidar2ego)
        raw = np.concatenate([key[:, :3] @ ego2lidar[:3, :3].T + ego2lidar[:3, 3], key[:, 3:]], 1)
        beams, free = missing_beams(raw)
    alt = cache.read_runner_ups(token) if cfg.runner_up_weight > 0 else None
    k = Keyframe(frame, sem, conf, *(alt or (None, None)), map_side=side, beams=beams, beam_free=free)
    if cfg.tracks and frames.has_boxes:  # a split without boxes (nuScenes test): no track, nothing ruled out
        boxes = frames.moving_boxes(token)
        k.instances = tuple(boxes)
        k.boxes = np.stack([box_pose(b) for b in boxes.values()]) if boxes else np.zeros((0, 4, 4))
        k.member = np.full(len(lidar.points), -1, np.int32)
        k.member[own] = box_members(world[own], list(boxes.values()), cfg.track_floor)
    return k


class KeyframeData(Dataset):
    """`read_keyframe` over tokens, for a DataLoader whose workers read the keyframes ahead of fusion."""

    def __init__(self, frames: NuScenesFrames, cache: SupervisionCache, tokens: list[str], cfg: FusionConfig):
        self.frames, self.cache, self.tokens, self.cfg = frames, cache, tokens, cfg

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> tuple[str, Keyframe]:
        return self.tokens[i], read_keyframe(self.frames, self.cache, self.tokens[i], self.cfg)


def reading_order(frames: NuScenesFrames, pending: list[str], window: int) -> list[str]:
    """The keyframes the windows of `pending` (tokens in scene order) read, each once, in the order first needed."""
    order: dict[str, None] = {}
    for token in pending:
        order.update(dict.fromkeys(window_tokens(frames, token, window)))
    return list(order)


@dataclass
class DeviceLabels:
    """A keyframe's 2D labels on the fusion device: semantics (N, h, w) int64, confidence (N, h, w) float32 and
    the runner-ups (N, R, h, w) int64 / float32 (None: the cache keeps none)."""

    semantics: torch.Tensor
    confidence: torch.Tensor
    runner_ups: torch.Tensor | None = None
    runner_up_confidence: torch.Tensor | None = None

    @classmethod
    def of(cls, k: Keyframe, device: torch.device) -> "DeviceLabels":
        def up(a: np.ndarray | None, dtype=None) -> torch.Tensor | None:
            return None if a is None else torch.from_numpy(a.astype(dtype) if dtype else a).to(device)

        return cls(up(k.semantics, np.int64), up(k.confidence), up(k.runner_ups, np.int64), up(k.runner_up_confidence))


class WindowReader:
    """Keyframes (`Keyframe`) by token, the last `keep` of them kept, with their 2D labels on `device`:
    consecutive keyframes of a scene share most of their windows, so each keyframe is read and uploaded once
    per scene, not once per window. With `source` (an iterator of (token, Keyframe) in the order the windows
    first need them, e.g. a DataLoader over `KeyframeData` of `reading_order`) keyframes come from it, read
    ahead by its workers; without, each is read when first asked for."""

    def __init__(
        self,
        frames: NuScenesFrames,
        cache: SupervisionCache,
        cfg: FusionConfig,
        device: torch.device,
        source: Iterator[tuple[str, Keyframe]] | None = None,
    ):
        self.frames, self.cache, self.cfg, self.device, self.source = frames, cache, cfg, device, source
        self.keep = 2 * cfg.window + 1
        self.held: OrderedDict[str, tuple[Keyframe, DeviceLabels]] = OrderedDict()

    def __call__(self, token: str) -> tuple[Keyframe, "DeviceLabels"]:
        """(Keyframe, its 2D labels on the device) of `token`."""
        while token not in self.held:
            if self.source is None:
                t, k = token, read_keyframe(self.frames, self.cache, token, self.cfg)
            else:
                t, k = next(self.source)  # StopIteration: a token outside the reading order (a bug)
            self.held[t] = (k, DeviceLabels.of(k, self.device))
            while len(self.held) > self.keep:
                self.held.popitem(last=False)
        return self.held[token]


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
    read = read or WindowReader(frames, cache, cfg, device)
    target = read(token)[0].frame
    world2target = np.linalg.inv(target.lidar.ego2global)
    sweeps, views = [], []
    window = window_tokens(frames, token, cfg.window)
    track_id: dict[str, int] = {}  # instance token -> id within the window
    for j, t in enumerate(window):
        k, labels = read(t)
        f = k.frame
        to_target = world2target @ f.lidar.ego2global
        xyz = f.lidar.points[:, :3].astype(np.float64) @ to_target[:3, :3].T + to_target[:3, 3]
        origin = to_target[:3, :3] @ f.lidar.lidar2ego[:3, 3] + to_target[:3, 3]
        seconds = (f.lidar.timestamp - target.lidar.timestamp) * 1e-6 - f.lidar.time_lag.astype(np.float64)
        instance, boxes = None, None
        if k.member is not None:  # the objects' ids within the window, their boxes in the labelled frame
            ids = np.array([track_id.setdefault(i, len(track_id)) for i in k.instances] + [-1], np.int64)
            instance = torch.from_numpy(ids[k.member]).to(device)  # member -1 -> the trailing -1
            boxes = {int(i): world2target @ b for i, b in zip(ids, k.boxes)}
        beams = None
        if k.beams is not None:  # the sensor frame's beams turned into the labelled frame's ego frame
            beams = k.beams @ (to_target[:3, :3] @ f.lidar.lidar2ego[:3, :3]).T
        sweeps.append(
            Sweep(
                points=torch.from_numpy(xyz).to(device),
                origin=torch.from_numpy(origin).to(device),
                keyframe=torch.from_numpy(f.lidar.time_lag == 0).to(device),
                seconds=torch.from_numpy(seconds).to(device),
                source=j,
                beams=beams,
                beam_free=k.beam_free,
                map_side=None if k.map_side is None else torch.from_numpy(k.map_side).to(device),
                instance=instance,
                boxes=boxes,
            )
        )
        for c, cam in enumerate(f.cameras):
            rc = ResizeCrop.fit(cam.image_size, cache.image_size)
            target2cam = np.linalg.inv(cam.cam2ego) @ np.linalg.inv(cam.ego2global) @ target.lidar.ego2global
            views.append(
                View(
                    target2cam=torch.from_numpy(target2cam).to(device),
                    K=torch.from_numpy(rc.matrix @ cam.K).to(device),
                    semantics=labels.semantics[c],
                    confidence=labels.confidence[c],
                    source=j,
                    runner_ups=None if labels.runner_ups is None else labels.runner_ups[c],
                    runner_up_confidence=None if labels.runner_ups is None else labels.runner_up_confidence[c],
                )
            )
    return Evidence(sweeps, views, window.index(token))
