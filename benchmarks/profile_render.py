"""Where the CUDA render op's time goes: Python-side checks vs kernels, per-kernel times.

    python benchmarks/profile_render.py [--mode voxel] [--scene structured]
Prints one table: the op through `render_rays` (with its input checks and the torch.library dispatch),
the raw extension calls, and the profiler's per-kernel CUDA times for one forward + backward.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from render import random_scene, rig_rays, structured_scene, timed  # noqa: E402

from kernels import GridSpec, render_rays  # noqa: E402
from kernels._build import load_backend  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", default="voxel")
    p.add_argument("--scene", default="structured")
    args = p.parse_args()
    dev = torch.device("cuda")
    grid = GridSpec()
    rays = rig_rays(38_400, 2, dev, seed=0)
    density = (structured_scene(grid, 2, seed=2) if args.scene == "structured" else random_scene(grid, 2, seed=3)).to(
        dev
    )
    features = torch.randn((2, *grid.shape, 17), device=dev)
    mod = load_backend("cuda")
    geom = (list(grid.range_min), list(grid.voxel_size), list(grid.range_max))
    mode_id = {"voxel": 0, "trilinear": 1}[args.mode]
    d = density.clone().requires_grad_()
    f = features.clone().requires_grad_()

    def op():
        with torch.no_grad():
            return render_rays(d, f, *rays, grid=grid, mode=args.mode)

    def raw_fwd():
        return mod.forward(density, features, *rays, *geom, mode_id, 0.2, 1e-4)

    outs = raw_fwd()[:4]  # the fifth output is the bad-input flags
    gs = [torch.randn_like(t) for t in outs]

    def raw_bwd():
        return mod.backward(density, features, *rays, *geom, mode_id, 0.2, 1e-4, *outs, *gs)

    def op_fb(check=True):
        out = render_rays(d, f, *rays, grid=grid, mode=args.mode, check_values=check)
        return torch.autograd.grad(out.depth.sum() + out.features.sum(), [d, f])

    rows = [
        ("render_rays forward", timed(op, dev, 30)),
        ("raw forward kernel call", timed(raw_fwd, dev, 30)),
        ("raw backward kernel call", timed(raw_bwd, dev, 30)),
        ("render_rays fwd+bwd", timed(op_fb, dev, 30)),
        ("  same, check_values=False", timed(lambda: op_fb(False), dev, 30)),
    ]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            op_fb()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12))
    print(f"{torch.cuda.get_device_name()}  mode={args.mode} scene={args.scene}")
    for name, ms in rows:
        print(f"{name:<28}{ms:9.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
