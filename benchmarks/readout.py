"""Occupancy read-out: the fixed threshold 0.5 against the LiDAR-calibrated one (issue 10), one table.

A small replica of the label-quality benchmark that runs on a CPU in minutes: a synthetic world of 4 scenes
x 4 keyframes at 112x200 (the quickstart's network: input 96x176, grid 128x128x16 at 0.4 m), variants of
the same network trained for the same steps, each scored on the held-out scene within mask_camera read
out at 0.5 and at the threshold `autolabel.training.calibrate` finds from LiDAR alone:
  3d_supervised               3D cross-entropy on every training frame (the bound)
  render_noisy                rendering with noisy 2D labels + LiDAR depth, the defaults (occupancy depth
                              targets, line-of-sight loss)
  render_noisy_no_los         the same without the line-of-sight loss
  render_noisy_lidar_target   without it and with depth targets at the LiDAR return on the ground too
                              (the method before issue 10's fixes)
  also render_noisy_trilinear (trilinear density along rays), render_noisy_los_lidar_target (LiDAR-return
  targets with the line-of-sight loss)

    python benchmarks/readout.py RUN [--steps 300] [--variants 3d_supervised,render_noisy,...]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from active import oracle_labels, write_recipe  # noqa: E402

from autolabel.stages import evaluate_checkpoint  # noqa: E402
from autolabel.stages import train as train_round  # noqa: E402
from autolabel.stages.inputs import checkpoint_path, open_frames  # noqa: E402
from autolabel.recipe import load_recipe  # noqa: E402
from autolabel.supervision.cache import supervise  # noqa: E402
from autolabel.supervision.providers import build_provider  # noqa: E402
from autolabel.checkpoint import load_threshold  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("3d_supervised", "render_noisy", "render_noisy_no_los", "render_noisy_lidar_target")
EXTRA = ("render_noisy_trilinear", "render_noisy_los_lidar_target")


def recipe_for(run: Path, name: str, steps: int) -> Path:
    r = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    r["data"] = {"dataroot": str(run / "world"), "version": "v1.0-synth", "val_scenes": ["synth-7-0003"]}
    r.update(name=name, out=str(run / name), rounds={"count": 1})
    r["supervision"]["cache"] = str(run / "cache.zarr")
    r["train"].update(steps=steps, checkpoint_every=steps)
    r["dts"]["enabled"], r["loss"]["pseudo_3d"] = False, 0.0
    if name == "3d_supervised":
        r["loss"].update(depth=0.0, semantics_2d=0.0, depth_distribution=0.0, line_of_sight=0.0, labels_3d=1.0)
    if name in ("render_noisy_no_los", "render_noisy_lidar_target"):
        r["loss"]["line_of_sight"] = 0.0
    if name.endswith("_trilinear"):
        r["render"]["mode"] = "trilinear"
    if name.endswith("_lidar_target"):
        r["render"]["depth_target"] = "lidar"
    return write_recipe(run, name, r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    unknown = set(args.variants.split(",")) - set(VARIANTS) - set(EXTRA)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {VARIANTS + EXTRA}")
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.variants.split(","):
        recipe = load_recipe(recipe_for(run, name, args.steps))
        if not (run / "world" / "gts").is_dir():
            from autolabel.synth.writer import SynthConfig, write_dataset

            write_dataset(
                run / "world",
                SynthConfig(scenes=4, frames_per_scene=4, seed=7, image_size=(112, 200)),
                recipe.network.grid,
                progress=False,
            )
        frames = open_frames(recipe, "all", load_images=False, load_gt=False)
        supervise(
            frames,
            build_provider(recipe.supervision, frames.dataroot),
            recipe.cache_path,
            recipe.network.image_size,
            progress=False,
            runner_ups=recipe.supervision.runner_ups,
        )
        if name == "3d_supervised":
            pool = open_frames(recipe, "train", load_images=False, load_gt=False)
            oracle_labels(
                recipe,
                pool.tokens,
                [pool.scene_of(t) for t in pool.tokens],
                [(pool.scene_of(t), t) for t in pool.tokens],
                recipe.dataroot,
            )
        train_round(recipe, 0, progress=False)  # saves the calibrated threshold beside the checkpoint
        ckpt = checkpoint_path(recipe, 0)
        fixed = evaluate_checkpoint(
            replace(recipe, dts=replace(recipe.dts, calibrate_threshold=False)), ckpt, progress=False
        )
        calibrated = evaluate_checkpoint(recipe, ckpt, progress=False)
        rows.append((name, fixed, load_threshold(ckpt, 0.5), calibrated))
        print(
            f"{name}: 0.5 -> {100 * fixed.miou:.2f} / {100 * fixed.geometric_iou:.2f}; calibrated "
            f"{rows[-1][2]} -> {100 * calibrated.miou:.2f} / {100 * calibrated.geometric_iou:.2f}",
            flush=True,
        )
    print(f"\n{args.steps} steps per variant; validation scene synth-7-0003; mIoU / geometric IoU within mask_camera")
    print(f"{'variant':<28}{'read-out 0.5':>16}{'threshold':>11}{'calibrated':>16}")
    for name, fixed, th, cal in rows:
        print(
            f"{name:<28}{100 * fixed.miou:>8.2f} /{100 * fixed.geometric_iou:>6.2f}{th:>11.2f}"
            f"{100 * cal.miou:>8.2f} /{100 * cal.geometric_iou:>6.2f}"
        )


if __name__ == "__main__":
    main()
