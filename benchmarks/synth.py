"""Synthetic-world generation speed on the CPU, one table.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/synth.py
    python benchmarks/synth.py --workers 16      # on a machine of many cores: the scene workers' row only
Rows: seconds per frame (6 cameras + lidar + ground truth + 2D maps, written to disk) at 450x800, and
the wall time of the quickstart-sized world (2 scenes x 4 frames at 112x200), world generation included.
With --workers N: instead, the wall time of an N x 4 world at 225x400 (the label-quality benchmark's image
size) written by N scene workers (write_dataset(workers=N)), one scene a worker.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autolabel.synth.world import generate_world  # noqa: E402
from autolabel.synth.writer import KEYFRAME_DT, SynthConfig, write_dataset  # noqa: E402
from kernels._build import load_backend  # noqa: E402


def timed_write(cfg: SynthConfig, workers: int = 1) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_dataset(tmp, cfg, progress=False, workers=workers)
        return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=0, help="time an N x 4 world at 225x400 with N scene workers")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    # the frames' visibility masks walk rays with the C++ backend: built first, so that no row times a build
    # (one is 15-45 s here; it used to land in the 450x800 row whenever another checkout had built it last)
    load_backend("walk_cpu")
    if args.workers:
        n = args.workers
        world = timed_write(SynthConfig(scenes=n, frames_per_scene=4, image_size=(225, 400)), workers=n)
        print(f"CPU cores available: {cores}")
        print(f"{'case':<52}{'seconds':>10}")
        print(f"{f'{n} x 4 world at 225x400, {n} scene workers':<52}{world:>10.2f}")
        return 0
    frames = 5
    t_world = time.perf_counter()
    generate_world(0, route_length=8.0 * KEYFRAME_DT * frames + 5)
    t_world = time.perf_counter() - t_world
    full = timed_write(SynthConfig(scenes=1, frames_per_scene=frames, image_size=(450, 800)))
    tiny = timed_write(SynthConfig(scenes=2, frames_per_scene=4, image_size=(112, 200)))
    print(f"CPU cores available: {cores}")
    print(f"{'case':<52}{'seconds':>10}")
    print(f"{'world generation (one scene)':<52}{t_world:>10.2f}")
    print(f"{'per frame at 450x800 (5 frames, world excluded)':<52}{(full - t_world) / frames:>10.2f}")
    print(f"{'quickstart world: 2 scenes x 4 frames at 112x200':<52}{tiny:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
