"""Eager cost of the registered render op: `render_rays` of this tree against `render_rays` of a git ref, in one run.

Loads kernels/render.py as it is at --ref (default: main, the autograd.Function version before the
torch.library ops) next to the working tree's, both over the working tree's kernels (_build, grid,
reference), and times forward + backward of each on the same inputs, alternating old / new in rounds so a
change of machine load hits both. A round's time is the fastest of --reps calls (the work is deterministic:
slower calls are interference from other processes); printed: the fastest round of each and the new / old
ratio (median over rounds of the rounds' ratios), and whether both give the same outputs and gradients. The ref's
render.py must not register the
same torch.library ops (a ref of this branch would), or loading it fails.

Cases: benchmarks/render.py's CPU scale (structured scene, grid 50x50x8, C = 17, 2,048 rig rays) and 64
rays on it (where the per-call overhead of the dispatcher shows); modes voxel and trilinear; backends the
device's compiled one and the reference.

    python benchmarks/render_op_overhead.py [--ref main] [--device cpu] [--threads N] [--rounds 7] [--reps 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from render import rig_rays, structured_scene  # noqa: E402

from kernels import GridSpec  # noqa: E402
from kernels import render as new_render  # noqa: E402


def load_ref_render(ref: str):
    """kernels/render.py at `ref`, as module kernels._render_at_ref (its relative imports use this tree's)."""
    source = subprocess.run(
        ["git", "show", f"{ref}:kernels/render.py"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    name = "kernels._render_at_ref"
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "kernels"
    module.__file__ = f"{ref}:kernels/render.py"
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def fastest(fn, device, reps: int) -> float:
    """Milliseconds of the fastest of reps calls of fn(), after one warm-up."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return min(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", default="main")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--reps", type=int, default=5, help="timed calls per round and version (the fastest counts)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--backends", default=None, help="comma list; default: the device's compiled one, reference")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    old_render = load_ref_render(args.ref)
    grid = GridSpec(range_min=(-10, -10, -1), range_max=(10, 10, 2.2), voxel_size=0.4)  # 50 x 50 x 8
    channels = 17
    density = structured_scene(grid, 1, seed=2, n_boxes=30).to(device)
    gen = torch.Generator().manual_seed(1)
    features = torch.randn((1, *grid.shape, channels), generator=gen).to(device)
    all_rays = rig_rays(2048, 1, device, seed=0)
    upstream = (torch.randn(2048, generator=gen).to(device), torch.randn(2048, channels, generator=gen).to(device))
    backends = (args.backends or f"{'cuda' if device.type == 'cuda' else 'cpu'},reference").split(",")
    print(
        f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, grid {grid.shape}, "
        f"C={channels}; old = kernels/render.py at {args.ref}, new = working tree; {args.rounds} rounds x "
        f"{args.reps} calls, alternating",
        flush=True,
    )
    print(f"{'rays':>6} {'mode':<10}{'backend':<10}{'old ms':>9}{'new ms':>9}{'new/old':>9}  same results")
    for n_rays in (2048, 64):
        rays = [t[:n_rays] for t in all_rays]
        g_depth, g_feat = upstream[0][:n_rays], upstream[1][:n_rays]
        for mode in ("voxel", "trilinear"):
            for backend in backends:
                d = density.clone().requires_grad_()
                f = features.clone().requires_grad_()

                def fwd_bwd(module):
                    out = module.render_rays(d, f, *rays, grid=grid, mode=mode, backend=backend)
                    loss = (out.depth * g_depth).sum() + (out.features * g_feat).sum() + out.opacity.sum()
                    return (out.depth, out.features) + torch.autograd.grad(loss, [d, f])

                a, b = fwd_bwd(old_render), fwd_bwd(new_render)
                same = all(torch.equal(x, y) for x, y in zip(a, b))
                close = same or all(torch.allclose(x, y, rtol=1e-5, atol=1e-6) for x, y in zip(a, b))
                old_ms, new_ms = [], []
                for _ in range(args.rounds):
                    old_ms.append(fastest(lambda: fwd_bwd(old_render), device, args.reps))
                    new_ms.append(fastest(lambda: fwd_bwd(new_render), device, args.reps))
                ratio = statistics.median(n / o for n, o in zip(new_ms, old_ms))
                print(
                    f"{n_rays:>6} {mode:<10}{backend:<10}{min(old_ms):9.3f}{min(new_ms):9.3f}"
                    f"{ratio:9.3f}  {'identical' if same else 'close' if close else 'DIFFERENT'}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
