"""LiDAR of a keyframe's scene window in its ego frame, each sweep with its own sensor origin, and free
space by casting sweeps' rays.

`window_clouds` reads, for every keyframe of the scene within +-window of the annotated one, its keyframe
sweep and up to `sweeps` earlier (non-key) sweeps, and moves their points into the annotated keyframe's ego
frame at its LiDAR time (the Occ3D grid's frame) through the global frame, as the devkit does. Unlike
`NuScenesFrames` (which merges a keyframe's sweeps into one cloud and drops their origins) every sweep keeps
its sensor origin, so that its rays can be cast (`free_space`), and nothing is filtered: which points to
keep is the caller's decision (autolabel.annotation.voxelize). Sweeps are never shared between two
keyframes: a keyframe's earlier sweeps stop at the previous keyframe's sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kernels.grid import GridSpec
from kernels.walk import ray_voxels
from occnet.surfaces import layer_entry

from ..data.frame import LIDAR_NAME
from ..data.geometry import transform_matrix
from ..data.nuscenes import NuScenesFrames, load_lidar_file


@dataclass
class SweepCloud:
    """One LiDAR sweep in the annotated keyframe's ego frame."""

    points: np.ndarray  # (P, 3) float64
    origin: np.ndarray  # (3,) float64 sensor origin
    seconds: float  # the sweep's time minus the annotated keyframe's LiDAR time
    sample: str  # the keyframe (sample token) the sweep belongs to
    key: bool  # the keyframe sweep itself (the one nuScenes-lidarseg labels)
    token: str  # its sample_data token
    # beams that returned nothing (`missing_beams`): unit directions (M, 3) in the same frame, and how far each
    # is known to be free (the nearest return of its neighbouring beams; inf: no neighbour returned either)
    beams: np.ndarray | None = None
    beam_free: np.ndarray | None = None


def window_samples(frames: NuScenesFrames, token: str, window: int) -> list[str]:
    """The keyframes of `token`'s scene within +-window of it, in time order."""
    scene = frames.scene_of(token)
    same = [t for t in frames.tokens if frames.scene_of(t) == scene]
    i = same.index(token)
    return same[max(0, i - window) : i + window + 1]


def _sensor2global(nusc, sd: dict) -> np.ndarray:
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    return transform_matrix(pose["translation"], pose["rotation"]) @ transform_matrix(cs["translation"], cs["rotation"])


def key_lidar(frames: NuScenesFrames, token: str) -> dict:
    """The LIDAR_TOP sample_data record of keyframe `token`."""
    sample = frames.nusc.get("sample", token)
    return frames.nusc.get("sample_data", sample["data"][LIDAR_NAME])


def target_frame(frames: NuScenesFrames, token: str) -> tuple[np.ndarray, int]:
    """(global -> the keyframe's ego frame at its LiDAR time, its LiDAR timestamp in microseconds)."""
    sd = key_lidar(frames, token)
    pose = frames.nusc.get("ego_pose", sd["ego_pose_token"])
    return np.linalg.inv(transform_matrix(pose["translation"], pose["rotation"])), int(sd["timestamp"])


def missing_beams(raw: np.ndarray, neighbours: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Beams of a spinning LiDAR sweep that returned nothing, from its points (N, 5: x, y, z, intensity, ring;
    sensor frame). Each ring's returns are binned by azimuth on the ring's own step (the median azimuth gap of
    its returns) at the ring's median elevation; an empty bin is a beam without a return (sky, a return beyond
    the range, dropout on a dark surface). Returns its unit direction (M, 3) and how far it is free: the nearest
    return among the beams within +-`neighbours` bins of its ring and the rings next to it (so a dropout in a
    wall stops before the wall), inf where none of them returned (open sky). Rings without any return are
    not reconstructed (their elevation is unknown)."""
    if len(raw) == 0:
        return np.zeros((0, 3)), np.zeros(0)
    from scipy.ndimage import minimum_filter

    xyz = raw[:, :3].astype(np.float64)
    ring = raw[:, 4].astype(np.int64)
    rng = np.linalg.norm(xyz, axis=1)
    az = np.arctan2(xyz[:, 1], xyz[:, 0])
    el = np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1]))
    rings = np.unique(ring)
    steps = []
    for r in rings:
        a = np.sort(az[ring == r])
        d = np.diff(a)
        d = d[d > 1e-6]
        if len(d):
            steps.append(np.median(d))
    if not steps:
        return np.zeros((0, 3)), np.zeros(0)
    n_bins = max(1, int(round(2 * np.pi / float(np.median(steps)))))
    step = 2 * np.pi / n_bins
    image = np.full((len(rings), n_bins), np.inf)
    row = np.searchsorted(rings, ring)
    col = np.round((az + np.pi) / step).astype(np.int64) % n_bins
    np.minimum.at(image, (row, col), rng)
    k = 2 * neighbours + 1
    free = minimum_filter(image, size=(3, k), mode="wrap")  # inf stays where no neighbour returned
    elevation = np.array([np.median(el[ring == r]) for r in rings])
    miss_r, miss_c = np.nonzero(~np.isfinite(image))
    a = miss_c * step - np.pi
    e = elevation[miss_r]
    dirs = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], 1)
    return dirs, free[miss_r, miss_c]


def read_sweep(
    frames: NuScenesFrames, sd: dict, global2target: np.ndarray, t0: int, sample: str, beams: bool = True
) -> SweepCloud:
    """One sweep in the target frame (global2target), with its beams that returned nothing (`missing_beams`)."""
    where = f"sample {sample} {LIDAR_NAME} sweep {sd['token']}"
    raw = load_lidar_file(frames.dataroot / sd["filename"], where)
    to_target = global2target @ _sensor2global(frames.nusc, sd)
    xyz = raw[:, :3].astype(np.float64) @ to_target[:3, :3].T + to_target[:3, 3]
    dirs, free = missing_beams(raw) if beams else (None, None)
    return SweepCloud(
        points=xyz,
        origin=to_target[:3, 3].copy(),
        seconds=(int(sd["timestamp"]) - t0) * 1e-6,
        sample=sample,
        key=bool(sd["is_key_frame"]),
        token=sd["token"],
        beams=None if dirs is None else dirs @ to_target[:3, :3].T,
        beam_free=free,
    )


def beam_free_space(clouds: list[SweepCloud], grid: GridSpec, before: float, reach: float = 1e3) -> torch.Tensor:
    """(X, Y, Z) bool: voxels the sweeps' level or rising beams without a return cross, up to `before` metres
    short of the nearest return of their neighbours (`reach` where none returned: through the whole grid)."""
    return beams_free_space(
        [(c.origin, c.beams, c.beam_free) for c in clouds if c.beams is not None], grid, before, reach
    )


def beams_free_space(
    beams: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    grid: GridSpec,
    before: float,
    reach: float = 1e3,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """`beam_free_space` of beams given per sweep as (origin (3,), unit directions (M, 3), free distance (M,)), as
    `missing_beams` gives them moved into the grid's frame; walked on `device` (the result's device)."""
    # a descending beam without a return is a dropout on the ground: its neighbours cover it
    parts = [(np.broadcast_to(o, d[d[:, 2] >= 0].shape), d[d[:, 2] >= 0], f[d[:, 2] >= 0]) for o, d, f in beams]
    parts = [p for p in parts if len(p[1])]
    if not parts:
        return torch.zeros(grid.shape, dtype=torch.bool, device=device)
    org = _float64(np.concatenate([p[0] for p in parts]), device)
    dirs = _float64(np.concatenate([p[1] for p in parts]), device)
    t = np.concatenate([p[2] for p in parts])
    t = _float64(np.where(np.isfinite(t), t - before, reach), device)
    return ray_voxels(org, dirs, grid, t_max=t)


def window_clouds(frames: NuScenesFrames, token: str, window: int, sweeps: int) -> list[SweepCloud]:
    """The sweeps of `token`'s window (module docstring), the annotated keyframe's own sweep first, then the
    others in time order of their keyframes (each keyframe's sweep, then its earlier sweeps, newest first)."""
    global2target, t0 = target_frame(frames, token)
    nusc = frames.nusc
    own: list[SweepCloud] = []
    others: list[SweepCloud] = []
    for sample in window_samples(frames, token, window):
        sd = key_lidar(frames, sample)
        clouds = [read_sweep(frames, sd, global2target, t0, sample)]
        for _ in range(sweeps):
            if not sd["prev"]:
                break
            sd = nusc.get("sample_data", sd["prev"])
            if sd["is_key_frame"]:
                break  # the previous keyframe's sweep: it belongs to that keyframe
            clouds.append(read_sweep(frames, sd, global2target, t0, sample))
        if sample == token:
            own, clouds = clouds[:1], clouds[1:]
        others += clouds
    return own + others


def _float64(x: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """x as a float64 tensor on `device` (a tensor's own device when None; NumPy arrays go to the CPU)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x, np.float64))
    return x.to(device=device, dtype=torch.float64)


def free_space(
    origins: np.ndarray | torch.Tensor,
    points: np.ndarray | torch.Tensor,
    flat: np.ndarray | torch.Tensor,
    grid: GridSpec,
    before: float = 0.0,
) -> torch.Tensor:
    """(X, Y, Z) bool: voxels the rays from `origins` ((R, 3) or (3,)) to `points` (R, 3) enter before their
    return. A ray whose return is flat ground (`flat` (R,)) stops where it enters the return's voxel layer
    (occnet.surfaces: flat ground fills its whole layer); any other ray stops `before` metres short of its
    return. The return's own voxel may be entered too: callers clear the voxels that hold returns. NumPy
    arrays or tensors; the rays walk on `points`' device (the CPU for NumPy), where the result lies."""
    pts = _float64(points)
    org = _float64(origins, pts.device)
    org = org.expand_as(pts) if org.dim() == 1 else org
    vec = pts - org
    dist = vec.norm(dim=1)
    good = dist > 1e-3
    if not bool(good.any()):
        return torch.zeros(grid.shape, dtype=torch.bool, device=pts.device)
    org, dist = org[good].contiguous(), dist[good]
    dirs = (vec[good] / dist[:, None]).contiguous()
    flat = flat if isinstance(flat, torch.Tensor) else torch.from_numpy(np.asarray(flat, bool))
    entry = layer_entry(org, dirs, dist, flat.to(pts.device, torch.bool)[good], grid)
    t = torch.where(entry < dist, entry - 1e-4, dist - before)  # a hair before the layer's top plane
    return ray_voxels(org, dirs, grid, t_max=t)


def voxel_index(points: np.ndarray, grid: GridSpec) -> tuple[np.ndarray, np.ndarray]:
    """(flat voxel index (P,) int64, inside (P,) bool) of points in the grid's metric frame (-1 outside)."""
    ijk = np.floor((points - np.asarray(grid.range_min)) / np.asarray(grid.voxel_size)).astype(np.int64)
    inside = ((ijk >= 0) & (ijk < np.asarray(grid.shape))).all(1)
    flat = (ijk[:, 0] * grid.shape[1] + ijk[:, 1]) * grid.shape[2] + ijk[:, 2]
    return np.where(inside, flat, -1), inside
