"""Voxel-walk benchmark (kernels.walk.ray_voxels): the PyTorch reference against the compiled backends on
one device, one table.

    python benchmarks/walk.py [--device cuda|cpu] [--reps 10]

Scale: the Occ3D grid 200x200x16, the real nuScenes sample's rig at 256x704. Cases: LiDAR free space
(rays from the six cameras' depth pixels walked to their return: what the DTS teacher does per training
frame), ``mask_camera`` (a ray per 8 mrad from every camera, stopping at the first occupied voxel of a
street-like occupancy), and ``mask_camera`` for 4 frames in one batched call. Medians after a warm-up;
every backend's output is checked equal to the reference's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kernels._build import BackendUnavailable  # noqa: E402
from kernels.grid import GridSpec  # noqa: E402
from kernels.walk import ray_voxels  # noqa: E402
from occnet.visibility import camera_rays  # noqa: E402
from train_step import random_batch  # noqa: E402
from occnet.config import NetworkConfig  # noqa: E402


def street(grid: GridSpec, seed: int) -> torch.Tensor:
    """Ground layers, façades along both sides and 200 boxes: (X, Y, Z) bool."""
    g = torch.Generator().manual_seed(seed)
    occ = torch.zeros(grid.shape, dtype=torch.bool)
    occ[:, :, :2] = True
    occ[:, :60, :] = True
    occ[:, 140:, :] = True
    for _ in range(200):
        x, y = (int(v) for v in torch.randint(0, 190, (2,), generator=g))
        occ[x : x + 8, y : y + 5, 2:6] = True
    return occ


def timed(fn, reps: int, sync) -> float:
    fn()
    out = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    grid = GridSpec()
    cfg = NetworkConfig()
    batch = random_batch(4, cfg, dev)
    from autolabel.dts.pseudo import depth_rays

    origin, dirs, dist = depth_rays(batch["depth"][0], batch["intrinsics"][0], batch["cam2ego"][0])
    cams = [camera_rays(batch["intrinsics"][0, k], batch["cam2ego"][0, k], cfg.image_size) for k in range(6)]
    co = torch.cat([o.expand_as(d) for o, d in cams])
    cd = torch.cat([d for _, d in cams])
    occ = street(grid, 0).to(dev)
    occ4 = torch.stack([street(grid, s) for s in range(4)]).to(dev)
    frame = torch.arange(4, device=dev).repeat_interleave(len(cd))
    cases = {
        f"LiDAR free space ({len(dist):,} rays)": lambda b: ray_voxels(origin, dirs, grid, t_max=dist, backend=b),
        f"mask_camera ({len(cd):,} rays)": lambda b: ray_voxels(co, cd, grid, occupied=occ, backend=b),
        "mask_camera x4 frames, one call": lambda b: ray_voxels(
            co.repeat(4, 1), cd.repeat(4, 1), grid, occupied=occ4, frame=frame, frames=4, backend=b
        ),
    }
    backends = ["reference", "cuda" if dev.type == "cuda" else "cpu"]
    rows = []
    for name, fn in cases.items():
        want = fn("reference")
        ref_ms = None
        for b in backends:
            try:
                ms = timed(lambda: fn(b), args.reps, sync) * 1e3
                same = bool(torch.equal(fn(b), want))
            except BackendUnavailable as exc:
                print(f"{b}: {exc}")
                continue
            ref_ms = ms if b == "reference" else ref_ms
            rows.append((name, b, ms, ref_ms / ms if ref_ms else float("nan"), same))
            print(f"{name} {b}: {ms:.2f} ms", flush=True)
    where = torch.cuda.get_device_name() if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\n{where}, torch {torch.__version__}; grid {grid.shape}; median of {args.reps}")
    print(f"{'case':<36}{'backend':>10}{'ms':>10}{'speed-up':>10}{'equal':>7}")
    for name, b, ms, sp, same in rows:
        print(f"{name:<36}{b:>10}{ms:>10.2f}{sp:>9.1f}x{str(same):>7}")


if __name__ == "__main__":
    main()
