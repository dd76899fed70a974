"""Evidence-fusion speed at nuScenes scale (issue 20): seconds per labelled keyframe for `autolabel.fusion.fuse`.

    python benchmarks/fusion_speed.py [--device cuda|cpu] [--window 3] [--sweeps 10] [--reps 5] [--voxels rules,hits]
        [--compare "key=value;..."]

The window is built from the real nuScenes sample (tests/data/nuscenes-sample): its LiDAR sweep (about 34,700
points) and its six cameras' calibration, replayed at the poses of an ego driving straight at 10 m/s, so that
each of the 2 x window + 1 keyframes carries `--sweeps` sweeps (20 Hz) and six camera views. The 2D labels
are blocks of 16 x 16 pixels of one class each (the vote's cost does not depend on what the classes are).
Cases: the views at the nuScenes recipe's network resolution (256x704, what the supervision cache holds
and `fuse_round` votes with) and at the cameras' full 1600x900. Medians over --reps after a warm-up,
synchronised on CUDA; the table also gives the time in the vote and in making voxels (free-space walk and, for
`--voxels rules`, the point-label rules on the CPU), for each `fusion.voxels` mode.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autolabel.annotation.accumulate import missing_beams  # noqa: E402
from autolabel.data.nuscenes import NuScenesFrames  # noqa: E402
from autolabel.data.transforms import ResizeCrop  # noqa: E402
from autolabel.fusion import fuse as fuse_module  # noqa: E402
from autolabel.fusion.config import FusionConfig  # noqa: E402
from autolabel.fusion.fuse import Sweep, View, fuse  # noqa: E402
from kernels.grid import GridSpec  # noqa: E402
from occnet.classes import NUM_SEMANTIC_CLASSES  # noqa: E402

SAMPLE = ROOT / "tests" / "data" / "nuscenes-sample"
SPEED = 10.0  # m/s, straight along the ego x axis
SWEEP_DT, KEYFRAME_DT = 0.05, 0.5


def shift(dx: float) -> np.ndarray:
    """The pose of the ego dx metres ahead of the labelled frame's, in that frame."""
    m = np.eye(4)
    m[0, 3] = dx
    return m


def window(
    frame, window: int, sweeps: int, hw: tuple[int, int], device: torch.device, seed: int = 0
) -> tuple[list[Sweep], list[View]]:
    """Sweeps and views of a (2 window + 1)-keyframe window replayed from one real frame (module docstring)."""
    g = np.random.default_rng(seed)
    key_pts = frame.lidar.points[frame.lidar.time_lag == 0]
    pts = key_pts[:, :3].astype(np.float64)
    origin = frame.lidar.lidar2ego[:3, 3]
    ego2lidar = np.linalg.inv(frame.lidar.lidar2ego)  # the beams without a return, from the sensor-frame points
    beams, free = missing_beams(np.concatenate([pts @ ego2lidar[:3, :3].T + ego2lidar[:3, 3], key_pts[:, 3:]], 1))
    beams = beams @ frame.lidar.lidar2ego[:3, :3].T
    out_sweeps, views = [], []
    for j, key in enumerate(range(-window, window + 1)):
        for s in range(sweeps):
            t = key * KEYFRAME_DT - s * SWEEP_DT  # sweeps precede their keyframe
            pose = shift(SPEED * t)
            xyz = pts @ pose[:3, :3].T + pose[:3, 3]
            out_sweeps.append(
                Sweep(
                    points=torch.from_numpy(xyz).to(device),
                    origin=torch.from_numpy(pose[:3, :3] @ origin + pose[:3, 3]).to(device),
                    keyframe=torch.full((len(xyz),), s == 0, device=device),
                    seconds=torch.full((len(xyz),), t, dtype=torch.float64, device=device),
                    source=j,
                    beams=beams @ pose[:3, :3].T if s == 0 else None,
                    beam_free=free if s == 0 else None,
                )
            )
        for cam in frame.cameras:
            rc = ResizeCrop.fit(cam.image_size, hw)
            target2cam = np.linalg.inv(shift(SPEED * key * KEYFRAME_DT) @ cam.cam2ego)
            blocks = g.integers(0, NUM_SEMANTIC_CLASSES, size=(hw[0] // 16 + 1, hw[1] // 16 + 1))
            sem = np.kron(blocks, np.ones((16, 16), np.int64))[: hw[0], : hw[1]]
            views.append(
                View(
                    target2cam=torch.from_numpy(target2cam).to(device),
                    K=torch.from_numpy(rc.matrix @ cam.K).to(device),
                    semantics=torch.from_numpy(sem).to(device),
                    confidence=torch.full(hw, 0.8, dtype=torch.float32, device=device),
                    source=j,
                )
            )
    return out_sweeps, views


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, reps: int) -> float:
    fn()  # warm-up (kernel build, allocator)
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--window", type=int, default=3)
    ap.add_argument("--sweeps", type=int, default=10)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--sizes", default="256x704,900x1600", help="view resolutions HxW, comma-separated")
    ap.add_argument("--voxels", default="rules,hits", help="fusion.voxels modes to time, comma-separated")
    ap.add_argument(
        "--compare",
        default="",
        help="FusionConfig settings 'key=value;...' (YAML values) timed beside each mode's defaults, in the same run",
    )
    args = ap.parse_args()
    compare = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.compare.split(";") if kv)}
    device = torch.device(args.device)
    frames = NuScenesFrames(SAMPLE, "v1.0-mini", load_images=False)
    frame = frames.frame(frames.tokens[0], images=False)
    grid = GridSpec()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"fusion of one keyframe on {name}: +-{args.window} keyframes x {args.sweeps} sweeps of "
        f"{int((frame.lidar.time_lag == 0).sum())} points, 6 cameras per keyframe, grid {grid.shape}"
    )
    if compare:
        print(f"*: with {compare}")
    print(f"{'voxels':>7}{'views':>10}{'points':>11}{'views':>7}{'s/frame':>10}{'vote s':>9}{'voxels s':>10}")
    variants = [(m, {}) for m in args.voxels.split(",")] + (
        [(m, compare) for m in args.voxels.split(",")] if compare else []
    )
    for mode, settings in variants:
        cfg = FusionConfig(window=args.window, voxels=mode, **settings)
        label = mode + ("*" if settings else "")
        for size in args.sizes.split(","):
            hw = tuple(int(v) for v in size.split("x"))
            sweeps, views = window(frame, args.window, args.sweeps, hw, device)
            total = timed(lambda: fuse(sweeps, views, grid, cfg, args.window), device, args.reps)
            pts = torch.cat([s.points for s in sweeps])
            src = torch.cat([torch.full((len(s.points),), s.source, device=device) for s in sweeps])
            vote = timed(lambda: fuse_module.vote(pts, src, views, cfg), device, args.reps)
            print(f"{label:>7}{size:>10}{len(pts):>11}{len(views):>7}{total:>10.3f}{vote:>9.3f}{total - vote:>10.3f}")


if __name__ == "__main__":
    main()
