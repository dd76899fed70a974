"""Synthetic-world generation speed on the CPU, one table.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/synth.py
Rows: seconds per frame (6 cameras + lidar + ground truth + 2D maps, written to disk) at 450x800, and
the wall time of the quickstart-sized world (2 scenes x 4 frames at 112x200), world generation included.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autolabel.synth.world import generate_world  # noqa: E402
from autolabel.synth.writer import KEYFRAME_DT, SynthConfig, write_dataset  # noqa: E402
from kernels._build import load_backend  # noqa: E402


def timed_write(cfg: SynthConfig) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_dataset(tmp, cfg, progress=False)
        return time.perf_counter() - start


def main() -> int:
    cores = len(os.sched_getaffinity(0))
    # the frames' visibility masks walk rays with the C++ backend: built first, so that no row times a build
    # (one is 15-45 s here; it used to land in the 450x800 row whenever another checkout had built it last)
    load_backend("walk_cpu")
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
