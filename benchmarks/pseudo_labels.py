"""Pseudo-label quality and labelling speed on the synthetic world (issue 7).

Trains one round (rendering losses on noisy 2D labels + DTS), then labels the training pool three ways
into rounds of one store: the student alone (no depth prior, no LiDAR), the EMA teacher (depth-aware),
and the teacher with LiDAR filtering; scores each against the world's exact Occ3D labels within
mask_camera, plus the precision / coverage curve of the per-class thresholds (PNG). Times teacher
inference + store writes in frames/s.

    python benchmarks/pseudo_labels.py WORLD RUN [--steps 2500] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import yaml

from autolabel.stages import train as train_round
from autolabel.stages.inputs import checkpoint_path, open_cache, open_frames
from autolabel.dts.label import label_round
from autolabel.provenance import recipe_record
from autolabel.recipe import load_recipe
from autolabel.report.figures import coverage_curve_png
from autolabel.store.labels import LabelStore
from autolabel.store.export import evaluate_round
from autolabel.supervision.cache import supervise
from autolabel.supervision.providers import build_provider, resolve_device

QUANTILES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def recipe_text(world: Path, run: Path, steps: int) -> dict:
    return {
        "name": "pseudo-labels",
        "out": str(run),
        "device": "auto",
        "data": {"dataroot": str(world), "version": "v1.0-synth"},
        "supervision": {"provider": "precomputed", "precomputed": {"variant": "noisy"}},
        "network": {"image_size": [224, 400]},
        "render": {"rays_per_frame": 16384},
        # SILog lambda 0: at small budgets 0.85 fails to learn geometry (docs/ARCHITECTURE.md)
        "loss": {"silog_lambda": 0.0, "pseudo_3d": 1.0},
        "train": {"steps": steps, "warmup_steps": 100, "checkpoint_every": 500, "batch_size": 2, "lr": 5e-4},
        "dts": {"start_step": steps // 2, "batch_size": 4},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("world")
    ap.add_argument("run")
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    (run / "bench_recipe.yaml").write_text(yaml.safe_dump(recipe_text(Path(args.world), run, args.steps)))
    recipe = load_recipe(run / "bench_recipe.yaml", args.overrides)
    t = time.perf_counter()
    frames = open_frames(recipe, "all", load_images=False, load_gt=False)
    supervise(
        frames,
        build_provider(recipe.supervision, frames.dataroot),
        recipe.cache_path,
        recipe.network.image_size,
        progress=False,
        runner_ups=recipe.supervision.runner_ups,
    )
    print(f"supervision cache: {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    s = train_round(recipe, 0, progress=False)
    t_train = time.perf_counter() - t
    print(f"trained {s['steps']} steps in {t_train:.1f} s; last {s['last']}", flush=True)
    pool = open_frames(recipe, "train", load_images=True, load_gt=False)
    store = LabelStore(run / "variants.zarr", recipe.network.grid, create=True)
    device = resolve_device(recipe.device)
    variants = [
        ("student alone", False, replace(recipe.dts, depth_aware=False, lidar_filter=False)),
        ("EMA teacher, depth-aware", True, replace(recipe.dts, lidar_filter=False)),
        ("teacher + LiDAR filtering", True, recipe.dts),
    ]
    rows = []
    for k, (name, use_teacher, dts) in enumerate(variants):
        summary = label_round(
            pool,
            open_cache(recipe),
            store,
            k,
            recipe.network,
            dts,
            checkpoint_path(recipe, 0),
            device,
            recipe_record(recipe),
            workers=4,
            progress=False,
            weights="teacher" if use_teacher else "student",
        )
        r = evaluate_round(store, k, recipe.dataroot, QUANTILES, progress=False)
        sc = r["scores"].as_dict()
        fps = summary["labelled"] / summary["seconds"]
        rows.append((name, sc["miou"], sc["geometric_iou"], fps, r["curve"], sc["per_class_iou"]))
        print(f"{name}: mIoU {sc['miou']} geo {sc['geometric_iou']} ({fps:.2f} frames/s)", flush=True)
    coverage_curve_png(rows[-1][4], run / "coverage_curve.png", "teacher + LiDAR: precision vs coverage")
    (run / "results.json").write_text(
        json.dumps(
            {
                "train_seconds": t_train,
                "steps": s["steps"],
                "frames": len(pool),
                "variants": [
                    {
                        "name": r[0],
                        "miou": r[1],
                        "geometric_iou": r[2],
                        "frames_per_s": r[3],
                        "curve": r[4],
                        "per_class": r[5],
                    }
                    for r in rows
                ],
            },
            indent=1,
        )
    )
    import torch

    card = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"\n{card} | {len(pool)} frames, {s['steps']} steps, trained in {t_train:.0f} s")
    print(f"{'labels':<30}{'mIoU':>8}{'geo IoU':>9}{'frames/s':>10}")
    nan = float("nan")
    for r in rows:
        print(
            f"{r[0]:<30}{r[1] if r[1] is not None else nan:>8.2f}{r[2] if r[2] is not None else nan:>9.2f}{r[3]:>10.2f}"
        )
    print(f"\n{'drop quantile':>14}{'coverage %':>12}{'mIoU kept':>11}{'geo IoU kept':>14}   (teacher + LiDAR)")
    for c in rows[-1][4]:
        print(
            f"{c['drop_quantile']:>14.1f}{100 * c['coverage']:>12.1f}{c['miou'] or 0:>11.2f}"
            f"{c['geometric_iou'] or 0:>14.2f}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
