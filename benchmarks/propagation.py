"""What manual labels carried to the other keyframes of their scene are worth (`rounds.propagate`, issue 21),
against the synthetic world's exact ground truth. No network: the labels themselves.

One keyframe per scene is annotated (the exact labels, as the oracle annotator delivers them; which one is
drawn with --seed), and `PropagatedLabels` carries it to every other keyframe of the scene. Per mode, over
those other keyframes, within each one's exact mask_camera: the share of voxels that receive a label
(coverage), the share of those whose class is right (accuracy), the mIoU of the carried labels over the static
classes (what may be carried), and the share of carried voxels where a moving thing now stands (the hazard of
carrying).

    python benchmarks/propagation.py WORLD [--synth 12x4] [--world-seed 31] [--seed 0]

WORLD is generated (SCENESxFRAMES, the world seed, small images: only labels and poses are read) unless it is
there. Tune on the development world (seed 31) only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autolabel.active.config import PROPAGATE_MODES  # noqa: E402
from autolabel.active.propagate import PropagatedLabels, carried_classes  # noqa: E402
from autolabel.data.nuscenes import NuScenesFrames  # noqa: E402
from kernels.grid import GridSpec  # noqa: E402
from occnet.classes import DYNAMIC_CLASS_IDS, FREE_ID, OCC3D_CLASS_NAMES  # noqa: E402
from occnet.metrics import OccupancyMetric  # noqa: E402


def make_world(world: Path, synth: str, seed: int) -> None:
    if (world / "v1.0-synth").is_dir():
        return
    from autolabel.synth.writer import SynthConfig, write_dataset

    scenes, frames = (int(v) for v in synth.split("x"))
    write_dataset(
        world,
        SynthConfig(scenes=scenes, frames_per_scene=frames, seed=seed, image_size=(112, 200)),
        GridSpec(),
        progress=False,
        workers=min(scenes, os.cpu_count() or 1),
    )


GAPS = (1.0, 2.0, 4.0, 8.0, float("inf"))  # seconds to the nearest annotated keyframe of the scene


def measure(frames: NuScenesFrames, annotated: dict, mode: str, grid: GridSpec) -> dict:
    labels = PropagatedLabels(annotated, frames, grid, mode)
    metric = OccupancyMetric()
    seen = carried = right = dynamic = 0
    by_gap = {gap: [0, 0, 0] for gap in GAPS}  # seen, carried, right per bucket of time to the annotated keyframe
    times = {t: frames.meta(t).lidar.timestamp * 1e-6 for t in frames.tokens}
    targets = [t for t in frames.tokens if t not in annotated]
    t0 = time.perf_counter()
    for token in targets:
        gt = frames.meta(token).gt
        cam = gt.mask_camera.astype(bool)
        scene = frames.scene_of(token)
        gap = min((abs(times[a] - times[token]) for a in annotated if frames.scene_of(a) == scene), default=np.inf)
        bucket = by_gap[next(g for g in GAPS if gap <= g)]
        seen += int(cam.sum())
        bucket[0] += int(cam.sum())
        try:
            lab = labels[token]
        except KeyError:
            continue
        got = lab.mask_annotated.astype(bool) & cam
        carried += int(got.sum())
        right += int((lab.semantics[got] == gt.semantics[got]).sum())
        bucket[1] += int(got.sum())
        bucket[2] += int((lab.semantics[got] == gt.semantics[got]).sum())
        dynamic += int(np.isin(gt.semantics[got], DYNAMIC_CLASS_IDS).sum())
        metric.update(lab.semantics, gt.semantics, got)
    ious = metric.compute().per_class_iou
    # classes a voxel may carry (movers and `others` never are: their rows are what carrying got wrong)
    present = [c for c in range(FREE_ID) if metric.confusion[c].sum() > 0 and carried_classes(False)[c]]
    return {
        "targets": len(targets),
        "coverage": carried / max(seen, 1),
        "accuracy": right / max(carried, 1),
        "miou_static": float(np.mean([ious[c] for c in present])) if present else float("nan"),
        "per_class": {OCC3D_CLASS_NAMES[c]: ious[c] for c in present},
        "dynamic_share": dynamic / max(carried, 1),
        "free_iou": None if np.isnan(ious[FREE_ID]) else ious[FREE_ID],
        "s_per_frame": (time.perf_counter() - t0) / max(len(targets), 1),
        "by_gap": {gap: (c / max(n, 1), r / max(c, 1)) for gap, (n, c, r) in by_gap.items() if n},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("world")
    ap.add_argument("--synth", default="12x4", help="SCENESxFRAMES of the world to generate")
    ap.add_argument("--world-seed", type=int, default=31)
    ap.add_argument("--seed", type=int, default=0, help="which keyframe of each scene is annotated")
    args = ap.parse_args()
    world = Path(args.world)
    make_world(world, args.synth, args.world_seed)
    grid = GridSpec()
    frames = NuScenesFrames(world, "v1.0-synth", load_images=False, grid=grid)
    rng = np.random.default_rng(args.seed)
    annotated = {}
    for scene in frames.scene_names:
        tokens = [t for t in frames.tokens if frames.scene_of(t) == scene]
        token = tokens[rng.integers(len(tokens))]
        annotated[token] = frames.meta(token).gt  # the oracle annotator: the exact labels
    print(
        f"\n{world} ({len(frames.scene_names)} scenes, {len(frames)} keyframes); one annotated keyframe per scene "
        f"(draw {args.seed}), carried to the others; within each target's exact mask_camera"
    )
    head = f"{'mode':<12}{'targets':>8}{'coverage':>10}{'accuracy':>10}{'static mIoU':>13}{'on movers':>11}"
    print(head + f"{'s/frame':>9}")
    for mode in PROPAGATE_MODES[1:]:
        r = measure(frames, annotated, mode, grid)
        print(
            f"{mode:<12}{r['targets']:>8}{100 * r['coverage']:>9.1f}%{100 * r['accuracy']:>9.1f}%"
            f"{100 * r['miou_static']:>13.1f}{100 * r['dynamic_share']:>10.2f}%{r['s_per_frame']:>9.3f}"
        )
        print("   per class IoU: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in r["per_class"].items()))
        if r["free_iou"] is not None:
            print(f"   free IoU {100 * r['free_iou']:.1f}")
        print(
            "   by time to the annotated keyframe (coverage / accuracy): "
            + ", ".join(f"<= {gap:g} s {100 * c:.1f} / {100 * a:.1f}%" for gap, (c, a) in r["by_gap"].items())
        )


if __name__ == "__main__":
    main()
