"""Voxel labels made from point labels + boxes against exact ground truth (issue 24), on the CPU.

For every keyframe of a synthetic world, the simulated annotator's delivery (the world's exact lidarseg
labels of the keyframe sweep and its sample_annotation boxes) is voxelized with the scene window's
unlabelled sweeps (autolabel.annotation), for each window size, and scored against the world's exact Occ3D
ground truth, over all frames at once (one confusion matrix):
  * mIoU / geometric IoU on the voxels the labels cover within mask_camera (Occ3D's protocol), and on every
    voxel they cover;
  * the share of mask_camera they cover.
A "points only" row leaves the boxes out (at the default window), to show what the boxes add.

    python benchmarks/point_labels.py RUN [--synth 6x4] [--seed 131] [--windows 0,1,2,3] [--sweeps 0]
    python benchmarks/point_labels.py RUN --micro     # the CI-sized version: checks that the harness runs

The quality benchmark's test world is seed 131, 40x4; on a CPU a smaller world of the same seed (6x4) is
the default. Results go to RUN/point_labels_<world>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import active  # noqa: E402
from active import MICRO_GRID  # noqa: E402

from autolabel.annotation.boxes import parse_box  # noqa: E402
from autolabel.annotation.points import dataset_boxes, dataset_lidarseg, frame_point_labels  # noqa: E402
from autolabel.annotation.voxelize import PointLabelConfig  # noqa: E402
from autolabel.data.nuscenes import NuScenesFrames  # noqa: E402
from kernels.grid import GridSpec  # noqa: E402
from occnet.classes import FREE_ID, IGNORE_ID, OCC3D_CLASS_NAMES  # noqa: E402
from occnet.metrics import OccupancyMetric  # noqa: E402


def make_world(world: Path, synth: str, micro: bool, seed: int, sweeps: int) -> Path:
    """benchmarks/active.py's make_world (the quality benchmark's worlds), or with LiDAR sweeps between keyframes."""
    if sweeps == 0:
        return active.make_world(world, synth, micro, seed=seed)
    if not (world / "v1.0-synth").is_dir():
        from autolabel.synth.writer import SynthConfig, write_dataset

        n_scenes, n_frames = (int(v) for v in synth.split("x"))
        size = (112, 200) if micro else (225, 400)
        write_dataset(
            world,
            SynthConfig(scenes=n_scenes, frames_per_scene=n_frames, seed=seed, image_size=size, sweeps=sweeps),
            GridSpec.from_dict(MICRO_GRID) if micro else GridSpec(),
            progress=False,
            workers=1 if micro else min(n_scenes, os.cpu_count() or 1),
        )
    return world


def evaluate(frames: NuScenesFrames, grid: GridSpec, cfg: PointLabelConfig, boxes: bool = True) -> dict:
    """Every frame's labels from its points (+ boxes) against the exact ground truth (module docstring)."""
    cam_metric, all_metric = OccupancyMetric(), OccupancyMetric()
    covered = cam = 0
    seconds = []
    for token in frames.tokens:
        t0 = time.perf_counter()
        raw = dataset_lidarseg(frames, token)
        bx = [parse_box(b, i, token) for i, b in enumerate(dataset_boxes(frames, token))] if boxes else []
        lab = frame_point_labels(frames, token, raw, bx, grid, cfg)
        seconds.append(time.perf_counter() - t0)
        gt = frames.frame(token, lidar="none").gt
        obs = lab.semantics != IGNORE_ID
        pred = np.where(obs, lab.semantics, FREE_ID)
        mc = gt.mask_camera.astype(bool)
        cam_metric.update(pred, gt.semantics, obs & mc)
        all_metric.update(pred, gt.semantics, obs)
        covered += int((obs & mc).sum())
        cam += int(mc.sum())
    c, a = cam_metric.compute().as_dict(), all_metric.compute().as_dict()
    return {
        "window": cfg.window,
        "boxes": boxes,
        "frames": len(frames.tokens),
        "miou": c["miou"],
        "geometric_iou": c["geometric_iou"],
        "per_class": c["per_class_iou"],
        "miou_covered": a["miou"],
        "geometric_iou_covered": a["geometric_iou"],
        "mask_camera_covered": round(100 * covered / max(cam, 1), 2),
        "seconds_per_frame": round(float(np.mean(seconds)), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--synth", default="6x4", help="SCENESxFRAMES of the world")
    ap.add_argument("--seed", type=int, default=131, help="world seed (131: the quality benchmark's test world)")
    ap.add_argument(
        "--sweeps", type=int, default=0, help="LiDAR sweeps between keyframes in the world (0 as quality.py's)"
    )
    ap.add_argument("--windows", default="0,1,2,3", help="keyframes accumulated on each side of the annotated one")
    ap.add_argument("--micro", action="store_true")
    args = ap.parse_args()
    if args.micro:
        args.synth, args.windows = "2x2", "0,1"
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    world = make_world(
        run / f"world_{args.seed}_{args.synth}_s{args.sweeps}", args.synth, args.micro, args.seed, args.sweeps
    )
    grid = GridSpec.from_dict(MICRO_GRID) if args.micro else GridSpec()
    frames = NuScenesFrames(world, "v1.0-synth", load_images=False, grid=grid)
    windows = [int(w) for w in args.windows.split(",")]
    rows = [evaluate(frames, grid, PointLabelConfig(window=w)) for w in windows]
    rows.append(evaluate(frames, grid, PointLabelConfig(window=PointLabelConfig().window), boxes=False))
    meta = {
        "world_seed": args.seed,
        "synth": args.synth,
        "sweeps": args.sweeps,
        "grid": grid.to_dict(),
        "config": PointLabelConfig().to_dict(),
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
    }
    (run / f"point_labels_{world.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(
        f"\nworld seed {args.seed}, {args.synth} scenes x keyframes, {args.sweeps} sweeps between keyframes; "
        f"{len(frames.tokens)} annotated keyframes"
    )
    print(f"{'labels':<22}{'mIoU':>7}{'geo IoU':>9}{'mIoU all':>10}{'geo all':>9}{'mask_camera %':>15}{'s/frame':>9}")
    for r in rows:
        name = f"window +-{r['window']}" + ("" if r["boxes"] else ", no boxes")
        print(
            f"{name:<22}{r['miou']:>7.2f}{r['geometric_iou']:>9.2f}{r['miou_covered']:>10.2f}"
            f"{r['geometric_iou_covered']:>9.2f}{r['mask_camera_covered']:>15.2f}{r['seconds_per_frame']:>9.2f}"
        )
    print(
        "mIoU / geo IoU: on the covered voxels within mask_camera; 'all': on every covered voxel; mask_camera %: "
        "share of the true mask_camera the labels cover"
    )
    worst = sorted((v, k) for k, v in rows[0]["per_class"].items() if v is not None and k != "free")[:4]
    print("lowest classes (first row): " + ", ".join(f"{k} {v:.1f}" for v, k in worst))
    print("per class (first row): " + ", ".join(f"{n} {rows[0]['per_class'].get(n)}" for n in OCC3D_CLASS_NAMES))


if __name__ == "__main__":
    main()
