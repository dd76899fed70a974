"""Pseudo-label store throughput on this CPU: frames/s writing and reading a round, bytes per frame on
disk, and Occ3D export frames/s, at the Occ3D grid (200x200x16).

Content: the synthetic world's exact semantics and masks, with spatially smooth confidences (teacher
confidences are smooth; white noise would not compress and would overstate the size).

    python benchmarks/export.py [--frames 40] [--world .cache/bench_world] [--repeats 8]

--repeats N exports the round N more times in the same process after the first and reports their median
as well (the rate of a long export, once the arrays are open and the threads started).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autolabel.data.occ3d import read_labels
from autolabel.store.labels import LabelStore, read_frame
from autolabel.store.export import export_occ3d
from kernels.grid import GridSpec


def frames_from(world: Path | None, n: int, grid: GridSpec) -> list[dict]:
    rng = np.random.default_rng(0)
    files = sorted((world / "gts").rglob("labels.npz")) if world else []
    out = []
    for i in range(n):
        if files:
            lab = read_labels(files[i % len(files)], grid)
            sem, cam, lid = lab.semantics, lab.mask_camera, lab.mask_lidar
        else:
            sem = np.full(grid.shape, 17, np.uint8)
            sem[:, :, :2] = 11
            cam = lid = np.ones(grid.shape, np.uint8)
        noise = torch.from_numpy(rng.random((1, 1, 25, 25, 4), dtype=np.float32))
        smooth = torch.nn.functional.interpolate(noise, size=grid.shape, mode="trilinear")[0, 0].numpy()
        conf = np.where(sem == 17, 250, 120 + 130 * smooth).astype(np.uint8)
        out.append({"semantics": sem, "confidence": conf, "mask_camera": cam, "mask_lidar": lid})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--world", default=".cache/bench_world")
    ap.add_argument("--repeats", type=int, default=0, help="exports after the first, in this process (warm)")
    args = ap.parse_args()
    grid = GridSpec()
    world = Path(args.world) if (Path(args.world) / "gts").is_dir() else None
    data = frames_from(world, args.frames, grid)
    tokens = [f"{i:032x}" for i in range(args.frames)]
    with tempfile.TemporaryDirectory() as tmp:
        store = LabelStore(Path(tmp) / "labels.zarr", grid, create=True)
        arrays = store.create_round(0, tokens, ["scene"] * len(tokens), {"checkpoint_sha256": "x"})
        t0 = time.perf_counter()
        for i, f in enumerate(data):
            arrays.write(i, **f)
        t_write = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (Path(tmp) / "labels.zarr" / "round_0").rglob("*") if p.is_file())
        t0 = time.perf_counter()
        for i in range(len(data)):
            got = read_frame(arrays, i)
        t_read = time.perf_counter() - t0
        assert np.array_equal(got["semantics"], data[-1]["semantics"])
        t0 = time.perf_counter()
        export_occ3d(store, 0, Path(tmp) / "export", 0.3, progress=False)
        t_export = time.perf_counter() - t0
        warm = []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            export_occ3d(store, 0, Path(tmp) / f"export{r}", 0.3, progress=False)
            warm.append(len(data) / (time.perf_counter() - t0))
        npz = sum(p.stat().st_size for p in (Path(tmp) / "export" / "gts").rglob("labels.npz"))
    n = len(data)
    raw = 4 * grid.num_voxels
    print(
        f"\nCPU ({torch.get_num_threads()} threads) | {n} frames at {grid.shape}, content from "
        f"{'the synthetic world' if world else 'a flat scene'}"
    )
    print(f"{'operation':<36}{'frames/s':>10}{'bytes/frame':>14}")
    print(f"{'write round (4 arrays + done)':<36}{n / t_write:>10.1f}{size / n:>14.0f}")
    print(f"{'read round (4 arrays)':<36}{n / t_read:>10.1f}{'':>14}")
    print(f"{'export Occ3D labels.npz (q = 0.3)':<36}{n / t_export:>10.1f}{npz / n:>14.0f}")
    if warm:
        print(f"{f'export again, median of {len(warm)}':<36}{float(np.median(warm)):>10.1f}{'':>14}")
        print(f"  each: {', '.join(f'{w:.1f}' for w in warm)} frames/s")
    print(f"{'uncompressed (4 uint8 arrays)':<36}{'':>10}{raw:>14}")


if __name__ == "__main__":
    main()
