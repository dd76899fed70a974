"""Training-step benchmark at nuScenes scale on random inputs (speed does not depend on the data), one table.

    python benchmarks/train_step.py [--batches 2,4] [--steps 300]
    torchrun --nproc-per-node N benchmarks/train_step.py ...   # DDP on N GPUs, batch = frames per GPU
6 cameras x 256x704, Occ3D grid 200x200x16, 38,400 rays per frame, ResNet-18, rendering losses
(SILog depth + 2D cross-entropy + LSS depth bins), bf16 autocast, AdamW. Per batch size: median step
time, frames/s, peak GPU memory, and host RSS growth over the timed steps. Under torchrun every rank
trains its own batch (DDP, SyncBN); frames/s counts all ranks, so scaling efficiency is
frames/s(N GPUs) / (N x frames/s(1 GPU)) from two runs.
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


from autolabel.data.rig import load_rig  # noqa: E402
from occnet.distributed import barrier, init_from_env, is_main, world_size  # noqa: E402
from occnet.config import LossConfig, NetworkConfig, RenderConfig, TrainConfig  # noqa: E402
from occnet.network import OccupancyNetwork  # noqa: E402
from occnet.trainer import Trainer  # noqa: E402

SAMPLE = ROOT / "tests" / "data" / "nuscenes-sample"


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def random_batch(batch: int, cfg: NetworkConfig, device) -> dict:
    """Real rig calibration scaled to the input size; random images, LiDAR-like depth and labels."""
    rig = load_rig(SAMPLE)
    h, w = cfg.image_size
    Ks, Ts = [], []
    for cam in rig.cameras:
        s = w / cam.image_size[1]
        K = torch.tensor(cam.K, dtype=torch.float32)
        K[:2] *= s
        K[1, 2] -= cam.image_size[0] * s - h  # crop the top, as ResizeCrop.fit does
        Ks.append(K)
        Ts.append(torch.tensor(cam.cam2ego, dtype=torch.float32))
    gen = torch.Generator().manual_seed(0)
    n = len(rig.cameras)
    depth = torch.rand(batch, n, h, w, generator=gen) * 40 + 2
    depth[torch.rand(batch, n, h, w, generator=gen) > 0.05] = 0  # sparse like projected LiDAR
    return {
        "images": torch.randn(batch, n, 3, h, w, generator=gen).to(device),
        "intrinsics": torch.stack(Ks).expand(batch, -1, -1, -1).contiguous().to(device),
        "cam2ego": torch.stack(Ts).expand(batch, -1, -1, -1).contiguous().to(device),
        "depth": depth.to(device),
        "semantics": torch.randint(0, 17, (batch, n, h, w), generator=gen, dtype=torch.uint8).to(device),
        "confidence": torch.ones(batch, n, h, w).to(device),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="2,4")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=10)
    args = p.parse_args()
    device = init_from_env("cuda")
    world = world_size()
    cfg = NetworkConfig()
    rows = []
    for batch in map(int, args.batches.split(",")):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        model = OccupancyNetwork(cfg)
        trainer = Trainer(
            model,
            RenderConfig(rays_per_frame=38_400),
            LossConfig(),
            TrainConfig(steps=args.steps + args.warmup, warmup_steps=10),
            f"/tmp/train_step_bench{device.index}",
            device,
        )
        data = random_batch(batch, cfg, device)
        times, rss = [], []
        for i in range(args.steps + args.warmup):
            torch.cuda.synchronize()
            t = time.perf_counter()
            trainer.train_step(data)
            torch.cuda.synchronize()
            if i >= args.warmup:
                times.append(time.perf_counter() - t)
                rss.append(rss_mb())
        step = statistics.median(times)  # every rank waits for the gradient all-reduce: the same step time
        rows.append(
            (batch, step * 1e3, batch * world / step, torch.cuda.max_memory_allocated() / 2**30, rss[-1] - rss[0])
        )
        if is_main():
            print(f"batch {batch} per GPU x {world}: {step * 1e3:.1f} ms/step", flush=True)
        del trainer, model, data
        barrier()
    if not is_main():
        return 0
    print(
        f"\n{torch.cuda.get_device_name()} x {world}, torch {torch.__version__}; 6 x "
        f"{cfg.image_size[0]}x{cfg.image_size[1]}, "
        f"grid {cfg.grid.shape}, 38,400 rays/frame, {cfg.backbone}, bf16, {args.steps} timed steps"
    )
    print(f"{'GPUs':>5}{'batch/GPU':>10}{'ms/step':>10}{'frames/s':>10}{'peak GPU GiB':>14}{'RSS growth MB':>15}")
    for b, ms, fps, mem, growth in rows:
        print(f"{world:>5}{b:>10}{ms:>10.1f}{fps:>10.2f}{mem:>14.2f}{growth:>15.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
