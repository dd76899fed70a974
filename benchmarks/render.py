"""Render-op benchmark: every backend side by side at RenderOcc's scale, one table.

GPU (default): Occ3D grid 200x200x16, C = 17, B = 2, 38,400 rays per sample cast through random pixels
of the six cameras of the real nuScenes sample's rig (tests/data). Two scenes: "structured" (two
ground layers plus 300 boxes 1.2-4.8 m wide and 1.2-5.6 m tall whose density stops a ray within about a
metre; free space elsewhere) and "random" (uniform density in [0, 1) everywhere); modes "voxel" and
"trilinear" (0.2 m steps). Per row: forward ms, forward+backward ms (medians), samples per second,
peak extra device memory, and the error against the reference (max abs difference of depth, features
and both gradients, each over the reference's largest magnitude; the worst of the four).

CPU (--device cpu): the small scale of the CPU target: 2,048 rays, grid 50x50x8.

    python benchmarks/render.py                # on a GPU machine
    python benchmarks/render.py --device cpu
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autolabel.data.rig import load_rig  # noqa: E402
from kernels import GridSpec, render_rays  # noqa: E402
from kernels.reference import count_samples  # noqa: E402

SAMPLE = ROOT / "tests" / "data" / "nuscenes-sample"


def rig_rays(rays_per_sample: int, batch: int, device, seed: int):
    """Rays through uniformly random pixels of the six cameras: origins, dirs, batch index, near, far."""
    gen = torch.Generator().manual_seed(seed)
    rig = load_rig(SAMPLE)
    counts = [
        rays_per_sample // len(rig.cameras) + (i < rays_per_sample % len(rig.cameras)) for i in range(len(rig.cameras))
    ]
    origins, dirs = [], []
    for _ in range(batch):
        for cam, per_cam in zip(rig.cameras, counts):
            h, w = cam.image_size
            uv1 = torch.stack(
                [
                    torch.rand(per_cam, generator=gen, dtype=torch.float64) * w,
                    torch.rand(per_cam, generator=gen, dtype=torch.float64) * h,
                    torch.ones(per_cam, dtype=torch.float64),
                ],
                1,
            )
            d_cam = uv1 @ torch.linalg.inv(torch.from_numpy(cam.K)).T
            R = torch.from_numpy(cam.cam2ego[:3, :3])
            dirs.append(torch.nn.functional.normalize(d_cam @ R.T, dim=1))
            origins.append(torch.from_numpy(cam.cam2ego[:3, 3]).expand(per_cam, 3))
    b = torch.arange(batch).repeat_interleave(rays_per_sample)
    o, d = torch.cat(origins).float(), torch.cat(dirs).float()
    return (
        o.to(device),
        d.to(device),
        b.to(device),
        torch.zeros(len(b), device=device),
        torch.full((len(b),), 100.0, device=device),
    )


def structured_scene(grid: GridSpec, batch: int, seed: int, n_boxes: int = 300) -> torch.Tensor:
    """Two ground layers and n_boxes boxes standing on them; density 0 elsewhere."""
    gen = torch.Generator().manual_seed(seed)
    X, Y, Z = grid.shape
    density = torch.zeros(batch, X, Y, Z)
    density[..., :2] = 5.0
    centres = grid.index_to_world(
        torch.stack(torch.meshgrid(*[torch.arange(n) for n in grid.shape], indexing="ij"), -1)
    )
    top_of_ground = grid.range_min[2] + 2 * grid.voxel_size[2]
    for b in range(batch):
        for _ in range(n_boxes):
            cx, cy = [
                (torch.rand(1, generator=gen).item() - 0.5) * (hi - lo)
                for lo, hi in zip(grid.range_min[:2], grid.range_max[:2])
            ]
            wx, wy = 1.2 + 3.6 * torch.rand(2, generator=gen)
            height = 1.2 + 4.4 * torch.rand(1, generator=gen).item()
            inside = ((centres[..., 0] - cx).abs() < wx / 2) & ((centres[..., 1] - cy).abs() < wy / 2)
            inside &= (centres[..., 2] >= top_of_ground) & (centres[..., 2] < top_of_ground + height)
            density[b][inside] = 3.0 + 5.0 * torch.rand(1, generator=gen).item()
    return density


def random_scene(grid: GridSpec, batch: int, seed: int) -> torch.Tensor:
    return torch.rand((batch, *grid.shape), generator=torch.Generator().manual_seed(seed))


def timed(fn, device, reps: int) -> float:
    """Median milliseconds of fn() over reps runs after two warm-ups."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def copy_bandwidth(device) -> float:
    """Device-to-device copy rate in GB/s, counting bytes read plus written."""
    x = torch.empty(256 * 2**20, dtype=torch.float32, device=device)
    x.uniform_()
    y = torch.empty_like(x)
    ms = timed(lambda: y.copy_(x), device, 20)
    return 2 * x.numel() * 4 / (ms * 1e-3) / 1e9


def bench_case(backend, density, features, rays, grid, mode, step, reps, device, upstream, check=True):
    d = density.clone().requires_grad_()
    f = features.clone().requires_grad_()
    g_depth, g_feat = upstream

    def forward():
        with torch.no_grad():
            return render_rays(d, f, *rays, grid=grid, mode=mode, step_size=step, backend=backend, check_values=check)

    def forward_backward():
        out = render_rays(d, f, *rays, grid=grid, mode=mode, step_size=step, backend=backend, check_values=check)
        loss = (out.depth * g_depth).sum() + (out.features * g_feat).sum() + out.opacity.sum()
        return torch.autograd.grad(loss, [d, f])

    fwd_ms = timed(forward, device, reps)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    grads = forward_backward()
    peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20 if device.type == "cuda" else float("nan")
    fb_ms = timed(forward_backward, device, reps)
    out = forward()
    return fwd_ms, fb_ms, peak_mb, out, grads


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rays-per-sample", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--channels", type=int, default=17)
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--scenes", default="structured,random")
    p.add_argument("--modes", default="voxel,trilinear")
    p.add_argument("--backends", default=None, help="comma list; default: reference plus the device's native backend")
    p.add_argument("--step", type=float, default=0.2)
    p.add_argument("--json", default=None, help="also write the rows here")
    p.add_argument("--no-check", action="store_true", help="time with check_values=False (no host sync)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if gpu:
        grid = GridSpec()
        rays_per_sample, batch, reps = args.rays_per_sample or 38_400, args.batch or 2, args.reps or 20
        backends = (args.backends or "reference,cuda").split(",")
    else:
        grid = GridSpec(range_min=(-10, -10, -1), range_max=(10, 10, 2.2), voxel_size=0.4)  # 50 x 50 x 8
        rays_per_sample, batch, reps = args.rays_per_sample or 2_048, args.batch or 1, args.reps or 5
        backends = (args.backends or "reference,cpu").split(",")
    rays = rig_rays(rays_per_sample, batch, device, seed=0)
    n_rays = len(rays[0])
    gen = torch.Generator().manual_seed(1)
    features = torch.randn((batch, *grid.shape, args.channels), generator=gen).to(device)
    upstream = (
        torch.randn(n_rays, generator=gen).to(device),
        torch.randn(n_rays, args.channels, generator=gen).to(device),
    )
    scenes = {
        "structured": lambda: structured_scene(grid, batch, seed=2, n_boxes=300 if gpu else 30),
        "random": lambda: random_scene(grid, batch, seed=3),
    }
    info = (
        f"device {torch.cuda.get_device_name(device) if gpu else 'cpu, %d threads' % torch.get_num_threads()}; "
        f"grid {grid.shape}, B={batch}, C={args.channels}, {n_rays} rays, torch {torch.__version__}, "
        f"check_values={not args.no_check}"
    )
    print(info, flush=True)
    bandwidth = copy_bandwidth(device) if gpu else float("nan")
    if gpu:
        print(f"device-to-device copy: {bandwidth:.0f} GB/s (read + write)", flush=True)
    rows = []
    for scene_name in args.scenes.split(","):
        density = scenes[scene_name]().to(device)
        for mode in args.modes.split(","):
            used, weighted = count_samples(density, *rays, grid=grid, mode=mode, step_size=args.step)
            ref = None
            for backend in backends:
                try:
                    fwd, fb, mem, out, grads = bench_case(
                        backend,
                        density,
                        features,
                        rays,
                        grid,
                        mode,
                        args.step,
                        reps,
                        device,
                        upstream,
                        check=not args.no_check,
                    )
                except torch.OutOfMemoryError:
                    rows.append(dict(scene=scene_name, mode=mode, backend=backend, error="out of memory"))
                    print(f"{scene_name:<10} {mode:<9} {backend:<9} out of memory", flush=True)
                    torch.cuda.empty_cache()
                    continue
                if backend == "reference":
                    ref = (out, grads)
                    err = 0.0
                elif ref is not None:
                    r_out, r_grads = ref

                    def rel(a, b):  # max abs difference over the reference's largest magnitude
                        return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()

                    err = max(
                        rel(out.depth, r_out.depth),
                        rel(out.features, r_out.features),
                        rel(grads[0], r_grads[0]),
                        rel(grads[1], r_grads[1]),
                    )
                else:
                    err = float("nan")
                # voxel bytes touched: density per sample, features where the weight is non-zero (forward)
                fwd_bytes = used * 4 + weighted * 4 * args.channels
                row = dict(
                    scene=scene_name,
                    mode=mode,
                    backend=backend,
                    fwd_ms=fwd,
                    fwd_bwd_ms=fb,
                    peak_extra_mb=mem,
                    samples=used,
                    samples_per_s=used / (fb * 1e-3),
                    max_err=err,
                    fwd_gb_per_s=fwd_bytes / (fwd * 1e-3) / 1e9,
                )
                rows.append(row)
                print(
                    f"{scene_name:<10} {mode:<9} {backend:<9} fwd {fwd:9.3f} ms  fwd+bwd {fb:9.3f} ms  "
                    f"mem {mem:8.1f} MB  err {err:.1e}",
                    flush=True,
                )
                del out, grads
                if gpu:
                    torch.cuda.empty_cache()
    print()
    print(info)
    if gpu:
        print(f"copy bandwidth {bandwidth:.0f} GB/s")
    head = (
        f"{'scene':<11}{'mode':<10}{'backend':<10}{'fwd ms':>9}{'fwd+bwd ms':>12}{'Msamples/s':>12}{'peak MB':>9}"
        f"{'rel err':>9}{'speed-up':>9}{'mem ratio':>10}"
    )
    print(head)
    for row in rows:
        if "error" in row:
            print(f"{row['scene']:<11}{row['mode']:<10}{row['backend']:<10}{row['error']:>9}")
            continue
        ref = next(
            (
                r
                for r in rows
                if r["scene"] == row["scene"]
                and r["mode"] == row["mode"]
                and r["backend"] == "reference"
                and "error" not in r
            ),
            None,
        )
        speed = ref["fwd_bwd_ms"] / row["fwd_bwd_ms"] if ref else float("nan")
        mem_ratio = row["peak_extra_mb"] / ref["peak_extra_mb"] if ref and gpu else float("nan")
        print(
            f"{row['scene']:<11}{row['mode']:<10}{row['backend']:<10}{row['fwd_ms']:>9.3f}{row['fwd_bwd_ms']:>12.3f}"
            f"{row['samples_per_s'] / 1e6:>12.1f}{row['peak_extra_mb']:>9.1f}{row['max_err']:>9.1e}{speed:>9.1f}"
            f"{mem_ratio:>10.4f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(dict(info=info, copy_gb_per_s=bandwidth, rows=rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
