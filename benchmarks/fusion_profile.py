"""Where fusion's time goes in the loop: `fuse_round` on a synthetic world whose scenes are long enough for the
nuScenes recipe's whole window (+-3 keyframes, 10 LiDAR sweeps each), timed whole and by section.

The world (generated into RUN/world unless there: SCENES x FRAMES keyframes, cameras --image-size, 9 sweeps
before each keyframe's) is supervised as the nuScenes recipe does (recipes/nuscenes_label_free.yaml,
precomputed noisy 2D labels, the cache at the network's input size), then fused:

  rate      after two warm-up calls (the first scene, the whole world), --repeats pairs of calls (the first
            scene, the whole world); a pair's seconds per frame is the difference of seconds over the
            difference of frames (what a call pays once cancels), and the table gives the median and each pair
  sections  one more call, all in one process (workers=0), with each part wrapped in device
            synchronisations: milliseconds per frame of
            reading the window (files, transforms, uploads), the vote, the per-point rules and rays, the
            volume rules, the visibility masks and the shard writes (the writer's thread: not on the
            critical path unless it falls behind); slower than unsynchronised, it shows where the time is
  functions cProfile over one call in one process: the top functions by own time

Scenes of FRAMES keyframes give windows of min(FRAMES, 7) keyframes in their middle and fewer at their ends
(nuScenes scenes hold about 40 keyframes): the table prints the mean window.

    python benchmarks/fusion_profile.py RUN [--scenes 4] [--frames 8] [--image-size 450x800] [--repeats 3]

Run it twice against two checkouts (PYTHONPATH) on one RUN to compare code side by side: the world and the
cache are made once.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import scale  # noqa: E402
import autolabel.fusion.fuse as fusing  # noqa: E402
import autolabel.fusion.label as fusion_label  # noqa: E402
import autolabel.fusion.rules as rules  # noqa: E402
from autolabel.fusion.evidence import window_tokens  # noqa: E402
from autolabel.stages.inputs import open_cache, open_frames  # noqa: E402
from autolabel.store import frame_arrays  # noqa: E402
from autolabel.store.labels import LabelStore  # noqa: E402
from occnet.trainer import default_workers  # noqa: E402

SWEEPS = 9
# (module, attribute, section name): the parts of one frame's fusion in the order they run
SECTIONS = (
    (fusion_label, "frame_evidence", "read the window"),
    (fusing, "vote", "vote"),
    (rules, "_name_voxels", "per-point rules and rays"),
    (fusing, "label_voxels", "volume rules"),
    (fusion_label, "visibility_masks", "visibility masks"),
    (frame_arrays.FrameArrays, "write_frames", "shard writes (writer thread)"),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="working folder: the world, the cache, the fused stores")
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--frames", type=int, default=8, help="keyframes per scene (the window is +-3 of them)")
    ap.add_argument("--image-size", default="450x800", help="camera images HxW (fusion reads the cache)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    run = Path(args.run).absolute()
    run.mkdir(parents=True, exist_ok=True)
    size = tuple(int(v) for v in args.image_size.split("x"))
    recipe, device = scale.supervised_world(run, args.scenes, args.frames, size, SWEEPS, args.device)
    frames = open_frames(recipe, "train", load_images=False, load_gt=False)
    first = scale.first_scene(frames, recipe, False)
    cache, grid, cfg = open_cache(recipe), recipe.network.grid, recipe.fusion

    def call(f, name: str, workers: int | None = None) -> tuple[int, float]:
        path = run / "fused" / name
        shutil.rmtree(path, ignore_errors=True)
        store = LabelStore(path, grid, create=True)
        scale.sync(device)
        t0 = time.perf_counter()
        r = fusion_label.fuse_round(f, cache, store, 0, grid, cfg, device, progress=False, workers=workers)
        scale.sync(device)
        return r["labelled"], time.perf_counter() - t0

    call(first, "warmup")
    call(frames, "warmup")
    pairs = []
    for _ in range(args.repeats):
        (n_a, t_a), (n_b, t_b) = call(first, "first"), call(frames, "whole")
        pairs.append(scale.steady((n_a, t_a), (n_b, t_b)))

    with scale.timed_sections(SECTIONS, device, {}) as spent:
        n, seconds = call(frames, "sections", workers=0)

    prof = cProfile.Profile()
    prof.enable()
    call(frames, "profiled", workers=0)
    prof.disable()

    windows = [len(window_tokens(frames, t, cfg.window)) for t in frames.tokens]
    print(
        f"\n{device} ({scale.device_name(device)}): {len(frames)} frames ({args.scenes} scenes x {args.frames}, "
        f"{args.image_size} cameras, {SWEEPS + 1} sweeps a keyframe), window +-{cfg.window} keyframes: "
        f"{statistics.mean(windows):.2f} on average, recipe {scale.RECIPE.relative_to(ROOT)} (cache at "
        f"{recipe.network.image_size[1]}x{recipe.network.image_size[0]}, fusion.voxels {cfg.voxels}, "
        f"map_prior {cfg.map_prior})"
    )
    print(
        f"fusion in the loop ({default_workers()} workers): {statistics.median(pairs):.3f} s per frame, median of "
        f"{len(pairs)} pairs "
        f"({', '.join(f'{p:.3f}' for p in pairs)})"
    )
    print(f"| section (synchronised; the whole call {1e3 * seconds / n:.0f} ms per frame) | ms per frame |")
    print("|---|---:|")
    for name, s in spent.items():
        print(f"| {name} | {1e3 * s / n:.1f} |")
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
    print(text.getvalue())


if __name__ == "__main__":
    main()
