"""Where labelling's time goes: `label_round` on a synthetic world at the nuScenes recipe's shapes, timed
whole and by section, and the top operators of a profiled call.

The world (generated into RUN/world unless there: SCENES x 2 keyframes, cameras --image-size, 9 sweeps) is
supervised and fused as the nuScenes recipe does (recipes/nuscenes_label_free.yaml, precomputed noisy 2D
labels), then a freshly initialised network labels it:

  rate      after two warm-up calls (the first scene, the whole world), --repeats pairs of calls (the first
            scene, the whole world); a pair's rate is the difference of frames over the difference of
            seconds (what a call pays once cancels), and the table gives the median and each pair
  sections  one more call with each stage of the loop wrapped in device synchronisations: milliseconds per
            frame of the teacher's forward pass, the LiDAR free space, the pseudo-labels, the visibility masks
            and the shard writes (slower than unsynchronised; it shows where the time is, not the rate)
  operators torch.profiler over one call: the top operators by device time (by CPU time without a GPU)

    python benchmarks/label_profile.py RUN [--scenes 12] [--image-size 450x800] [--repeats 3] [--device auto]

Run it twice against two checkouts (PYTHONPATH) on one RUN to compare code side by side: the world and the
stores are made once.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import scale  # noqa: E402
import autolabel.dts.label as labelling  # noqa: E402
from autolabel.fusion.label import fuse_round  # noqa: E402
from autolabel.stages.inputs import open_cache, open_frames  # noqa: E402
from autolabel.store import frame_arrays  # noqa: E402
from autolabel.store.labels import LabelStore  # noqa: E402

SWEEPS = 9
SECTIONS = tuple(
    (labelling, name, name)
    for name in ("teacher_probabilities", "frame_lidar", "pseudo_labels", "visibility_masks", "batch_fractions")
) + ((frame_arrays.FrameArrays, "write_frames", "shard writes (writer thread)"),)


def prepare(run: Path, scenes: int, image_size: tuple[int, int], device_name: str):
    """The world (SCENES x 2 keyframes), its supervision cache and fused labels (made once), and the recipe that
    reads them."""
    recipe, device = scale.supervised_world(run, scenes, 2, image_size, SWEEPS, device_name)
    done = run / "stores" / "prepared"
    if not done.is_file():
        frames = open_frames(recipe, "train", load_images=False, load_gt=False)
        store = LabelStore(recipe.fusion_path, recipe.network.grid, create=True)
        fuse_round(frames, open_cache(recipe), store, 0, recipe.network.grid, recipe.fusion, device)
        done.write_text("cache and fused labels written\n")
    return recipe, device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="working folder: the world, the stores, the labelled rounds")
    ap.add_argument("--scenes", type=int, default=12)
    ap.add_argument("--image-size", default="450x800", help="camera images HxW (labelling reads the cache)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    run = Path(args.run).absolute()
    run.mkdir(parents=True, exist_ok=True)
    recipe, device = prepare(run, args.scenes, tuple(int(v) for v in args.image_size.split("x")), args.device)
    ckpt = scale.fresh_checkpoint(recipe, run / "fresh" / "checkpoint.pt")
    frames = open_frames(recipe, "train", load_images=True, load_gt=False)
    first = scale.first_scene(frames, recipe, True)
    label = scale.labeller(recipe, ckpt, device)

    def call(f, name: str) -> tuple[int, float]:
        path = run / "labels" / name
        shutil.rmtree(path, ignore_errors=True)
        scale.sync(device)
        t0 = time.perf_counter()
        r = label(f, path)
        scale.sync(device)
        return r["labelled"], time.perf_counter() - t0

    call(first, "warmup")
    call(frames, "warmup")
    rates = []
    for _ in range(args.repeats):
        (n_a, t_a), (n_b, t_b) = call(first, "first"), call(frames, "whole")
        rates.append((n_b - n_a) / (t_b - t_a))

    with scale.timed_sections(SECTIONS, device, {}) as spent:
        n, _ = call(frames, "sections")

    with torch.profiler.profile() as prof:
        call(frames, "profiled")

    print(
        f"\n{device}: {len(frames)} frames ({args.scenes} scenes x 2, {args.image_size} cameras, {SWEEPS} sweeps), "
        f"recipe {scale.RECIPE.relative_to(ROOT)} (batch {recipe.dts.batch_size}, network input "
        f"{recipe.network.image_size[1]}x{recipe.network.image_size[0]})"
    )
    print(
        f"labelling: {statistics.median(rates):.2f} frames/s, median of {len(rates)} pairs "
        f"({', '.join(f'{r:.1f}' for r in rates)})"
    )
    print("| section (synchronised) | ms per frame |\n|---|---:|")
    for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {1e3 * seconds / n:.2f} |")
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60))


if __name__ == "__main__":
    main()
