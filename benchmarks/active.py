"""Annotation-budget curves of active selection against random, on the synthetic world (issue 8).

Round 0 is trained label-free (rendering + DTS) and labels the pool; then, for every strategy, seed and
budget (a share of the pool), the frames it selects get oracle 3D labels (the world's ground truth),
round 1 fine-tunes round 0 with 3D losses on them, and the student is scored on held-out validation
scenes (Occ3D mIoU within mask_camera). Prints one table (mean +- std over seeds) and writes the curve.

    python benchmarks/active.py RUN [--world DIR | --synth SxF] [--budgets 0.01,0.02,0.05,0.1]
        [--strategies random,entropy,coreset,hybrid] [--seeds 3] [--steps0 2000] [--steps 300]
    python benchmarks/active.py RUN --micro      # the CI-sized version: checks that the harness runs

Round 0 and the selections run once (plan.json); the round-1 runs are dealt over one process per GPU
(--gpus, default every visible one), each appending its results as they come, so a run cut short
keeps what finished and a rerun does only the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml

from autolabel.active.config import SelectionConfig
from autolabel.active.ingest import tile_arrays
from autolabel.active.pool import fusion_pool
from autolabel.active.scores import class_weights
from autolabel.active.select import select_frames, select_regions
from autolabel.data.occ3d import labels_path, read_labels
from autolabel.stages import evaluate_checkpoint, score_round
from autolabel.stages import train as train_round
from autolabel.stages.inputs import checkpoint_path, open_cache, open_frames
from autolabel.dts.label import label_round
from autolabel.provenance import recipe_record
from autolabel.recipe import load_recipe
from autolabel.store.labels import LabelStore
from autolabel.supervision.cache import supervise
from autolabel.supervision.providers import build_provider, resolve_device
from occnet.classes import NUM_CLASSES

MICRO_GRID = {"range_min": [-12.8, -12.8, -1.0], "range_max": [12.8, 12.8, 2.2], "voxel_size": 0.4}


REGION_SCENE_CAP = 2  # region unit: frames per scene (the recipes' default); whole frames keep 1 per scene


def select_share(
    pool,
    unit: str,
    strategy: str,
    frames_worth: int,
    grid_voxels: int,
    seed: int,
    max_tiles_per_frame: int = SelectionConfig.max_tiles_per_frame,
) -> tuple:
    """A benchmark round's selection from a scored pool (`score_pool` or `fusion_pool`, scored with tiles): whole
    frames, `frames_worth` of them at most 1 per scene, or (unit region) BEV tiles of the pool's tile grid for as
    many frames' voxels (`grid_voxels` each), at most REGION_SCENE_CAP frames per scene and `max_tiles_per_frame`
    (selection.max_tiles_per_frame) tiles a frame. Returns the picks, the strategy used and the voxels labelled."""
    none = pool.features[:0]
    if unit == "frame":
        cfg = SelectionConfig(strategy=strategy, budget=frames_worth, per_scene_cap=1, seed=seed)
        picks, used = select_frames(pool.candidates, pool.features, none, cfg, 0, len(pool.tokens))
        return picks, used, len(picks) * grid_voxels
    cfg = SelectionConfig(
        strategy=strategy,
        budget=frames_worth * grid_voxels,
        per_scene_cap=REGION_SCENE_CAP,
        unit="region",
        region_size=pool.regions.size,
        max_tiles_per_frame=max_tiles_per_frame,
        seed=seed,
    )
    picks, used = select_regions(pool.candidates, pool.features, none, cfg, pool.regions, 0, len(pool.tokens))
    return picks, used, sum(p.voxels for p in picks)


def fused_label_pool(
    frames,
    store: LabelStore,
    fused: LabelStore,
    class_power: float = 1.0,
    region_size: int = SelectionConfig.region_size,
):
    """The pool scored by its fused labels (`fusion_pool`, no network) with the scores of BEV tiles of
    `region_size` cells a side, for `select_share`; `store` says which frames are labelled (round 0);
    `class_power`: `selection.fusion_class_power`."""
    budget = float(np.prod(fused.grid.shape))
    cfg = SelectionConfig(unit="region", budget=budget, fusion_class_power=class_power, region_size=region_size)
    return fusion_pool(frames, store, 0, fused, cfg)


def error_oracle_pool(
    frames,
    store: LabelStore,
    fused: LabelStore,
    world: Path,
    class_power: float = 1.0,
    region_size: int = SelectionConfig.region_size,
):
    """An oracle ranking, not a strategy (it reads the exact ground truth no annotation round has), and not a
    ceiling either (on the test world its round 1 scored 0.6 mIoU below the default's, BENCHMARKS.md): the
    fused-label pool of `fused_label_pool` with every tile scored by the fused labels' errors against the world's
    exact labels instead of their uncertainty, so that `select_share(..., "fusion")` takes the tiles where the
    labels round 1 would otherwise train on are most wrong. An error is a voxel of the exact mask_camera whose
    fused class (or unobserved) differs from the exact one, weighed by (1 / its exact class's frequency among the
    pool's mask_camera voxels) ** class_power, as the fused-label ranking weighs its uncertainty; a tile scores
    its errors' weight per voxel (`tile_scores`'s normalisation)."""
    pool = fused_label_pool(frames, store, fused, class_power, region_size)
    arrays = fused.round(0)
    exact = {t: read_labels(labels_path(world, frames.scene_of(t), t), fused.grid) for t in pool.tokens}
    counts = sum(np.bincount(g.semantics[g.mask_camera.astype(bool)], minlength=NUM_CLASSES) for g in exact.values())
    weight = class_weights(torch.from_numpy(counts), class_power).double().numpy()
    tile_of, voxels = pool.regions.voxel_tiles(), pool.regions.voxels()
    for c in pool.candidates:
        g = exact[c.token]
        wrong = g.mask_camera.astype(bool) & (arrays.read(arrays.index(c.token), "semantics") != g.semantics)
        errors = np.bincount(tile_of[wrong], weight[g.semantics[wrong].astype(np.int64)], pool.regions.count)
        c.tile_scores = errors / np.maximum(voxels, 1)
    return pool


def make_world(world: Path, synth: str, micro: bool, seed: int = 31) -> Path:
    """The synthetic world SCENESxFRAMES of `seed` (generated once; the micro one on the small grid)."""
    if not (world / "v1.0-synth").is_dir():
        from autolabel.synth.writer import SynthConfig, write_dataset
        from kernels.grid import GridSpec

        n_scenes, n_frames = (int(v) for v in synth.split("x"))
        size = (112, 200) if micro else (225, 400)
        write_dataset(
            world,
            SynthConfig(scenes=n_scenes, frames_per_scene=n_frames, seed=seed, image_size=size),
            GridSpec.from_dict(MICRO_GRID) if micro else GridSpec(),
            progress=False,
            workers=1 if micro else min(n_scenes, os.cpu_count() or 1),
        )
    return world


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (a parent's mask is kept: the children
    of a run started with CUDA_VISIBLE_DEVICES=2,3 use GPUs 2 and 3, not 0 and 1); ["0"] without a GPU."""
    mask = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return mask or [str(i) for i in range(max(1, torch.cuda.device_count()))]


def run_per_gpu(cmds: list[list[str]], devices: list[str], logs: list[Path] | None = None) -> list[int]:
    """Run the commands at once, command i on GPU devices[i % len(devices)], the CPU cores shared out among
    their DataLoaders (AUTOLABEL_WORKERS) and torch's CPU threads (OMP_NUM_THREADS: each process would
    otherwise start one per core); output to logs[i] when given. Returns the indices that failed."""
    cores = len(os.sched_getaffinity(0))  # the cores this process may use (taskset), not the machine's
    workers = str(max(1, cores // len(cmds) - 1))
    threads = str(max(1, cores // len(cmds)))
    with contextlib.ExitStack() as stack:
        procs = []
        for i, cmd in enumerate(cmds):
            env = {
                **os.environ,
                "CUDA_VISIBLE_DEVICES": devices[i % len(devices)],
                "AUTOLABEL_WORKERS": workers,
                "OMP_NUM_THREADS": threads,
            }
            out = stack.enter_context(open(logs[i], "w")) if logs else None
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None))
        return [i for i, p in enumerate(procs) if p.wait()]


def oracle_labels(
    recipe, pool_tokens, pool_scenes, picks: list[tuple[str, str]], world: Path, tiles: dict | None = None
) -> None:
    """The oracle annotator: exact ground truth of the picked (scene, token) frames into the manual group of the
    recipe's store; a frame in `tiles` (token -> its tiles' bounds, region-level annotation) gets its tiles'
    labels only."""
    oracle_into(recipe.store_path, recipe.network.grid, pool_tokens, pool_scenes, picks, world, tiles)


def oracle_into(
    store_path: Path,
    grid,
    pool_tokens,
    pool_scenes,
    picks: list[tuple[str, str]],
    world: Path,
    tiles: dict | None = None,
) -> None:
    """`oracle_labels` into the label store at `store_path` (created with `grid` if it is not there)."""
    store = LabelStore(store_path, grid, create=True)
    manual = store.manual(pool_tokens, pool_scenes, create=True)
    for scene, token in picks:
        gt = read_labels(labels_path(world, scene, token), grid)
        if tiles and token in tiles:
            manual.write(manual.index(token), **tile_arrays(gt, tiles[token], grid.shape))
            continue
        manual.write(
            manual.index(token),
            semantics=gt.semantics,
            mask_lidar=gt.mask_lidar,
            mask_camera=gt.mask_camera,
            confidence=np.full(gt.semantics.shape, 255, np.uint8),
        )


def write_recipe(run: Path, name: str, recipe: dict) -> Path:
    """RUN/<name>.yaml holding `recipe` (a plain dict); returns its path."""
    path = run / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def base_recipe(run: Path, world: Path, val_scene: str, steps0: int, micro: bool) -> dict:
    r = {
        "name": "active",
        "out": str(run / "base"),
        "device": "auto",
        "data": {"dataroot": str(world), "version": "v1.0-synth", "val_scenes": [val_scene]},
        "supervision": {
            "provider": "precomputed",
            "precomputed": {"variant": "noisy"},
            "cache": str(run / "supervision.zarr"),
        },
        "network": {"image_size": [224, 400]},
        "render": {"rays_per_frame": 16384},
        "loss": {"silog_lambda": 0.0, "pseudo_3d": 1.0, "labels_3d": 1.0},
        "train": {"steps": steps0, "warmup_steps": 100, "checkpoint_every": 500, "batch_size": 2, "lr": 5e-4},
        "dts": {"start_step": steps0 // 2, "batch_size": 4},
    }
    if micro:
        r["network"] = {
            "grid": MICRO_GRID,
            "image_size": [64, 112],
            "depth_bins": 16,
            "depth_max": 25.0,
            "context_channels": 8,
            "voxel_channels": 8,
        }
        r["render"] = {"rays_per_frame": 256}
        r["train"] = {"steps": steps0, "warmup_steps": 1, "checkpoint_every": steps0, "batch_size": 1}
        r["dts"] = {"start_step": 1, "batch_size": 1}
        r["device"] = "cpu"
    return r


def prepare(run: Path, world: Path, args) -> dict:
    """Round 0 (label-free), the pool's labels and scores, and every experiment's selection: plan.json."""
    plan_path = run / "plan.json"
    if plan_path.is_file():
        return json.loads(plan_path.read_text())
    base = load_recipe(run / "base.yaml")
    t0 = time.perf_counter()
    frames = open_frames(base, "all", load_images=False, load_gt=False)
    supervise(
        frames,
        build_provider(base.supervision, frames.dataroot),
        base.cache_path,
        base.network.image_size,
        progress=False,
    )
    train_round(base, 0, progress=False)
    t_train = time.perf_counter() - t0
    pool_frames = open_frames(base, "train", load_images=True, load_gt=False)
    label_round(
        pool_frames,
        open_cache(base),
        LabelStore(base.store_path, base.network.grid, create=True),
        0,
        base.network,
        base.dts,
        checkpoint_path(base, 0),
        resolve_device(base.device),
        recipe_record(base),
        progress=False,
    )
    pool = score_round(base, 0, progress=False)
    n_pool = len(pool.tokens)
    base_score = evaluate_checkpoint(base, checkpoint_path(base, 0), progress=False)
    print(
        f"round 0 (label-free, {args.steps0} steps, {t_train:.0f} s): val mIoU {100 * base_score.miou:.2f} geo "
        f"{100 * base_score.geometric_iou:.2f}; pool {n_pool} frames; {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    experiments = []
    for strategy in args.strategies.split(","):
        for seed in range(args.seeds):
            for frac in (float(b) for b in args.budgets.split(",")):
                n = max(1, round(frac * n_pool))
                cfg = SelectionConfig(strategy=strategy, budget=n, per_scene_cap=max(1, n), seed=seed)
                picks, _ = select_frames(pool.candidates, pool.features, pool.features[:0], cfg, 0, n_pool)
                experiments.append(
                    {
                        "strategy": strategy,
                        "seed": seed,
                        "frac": frac,
                        "picks": [[p.candidate.scene, p.candidate.token] for p in picks],
                    }
                )
    plan = {
        "round0_miou": 100 * base_score.miou,
        "pool_tokens": pool.tokens,
        "pool_scenes": pool.scenes,
        "experiments": experiments,
    }
    plan_path.write_text(json.dumps(plan, indent=1))
    return plan


def run_experiments(run: Path, world: Path, plan: dict, args, part: int, parts: int) -> None:
    """Round 1 of every parts-th experiment from `part`: oracle labels on its picks, fine-tune, score.
    Each result is appended to results.<part>.jsonl as soon as it exists."""
    base = load_recipe(run / "base.yaml")
    out = run / f"results.{part}.jsonl"
    done = (
        {(r["strategy"], r["seed"], r["frac"]) for r in map(json.loads, out.read_text().splitlines())}
        if out.is_file()
        else set()
    )
    for e in plan["experiments"][part::parts]:
        if (e["strategy"], e["seed"], e["frac"]) in done:
            continue
        exp = run / "exp" / f"{e['strategy']}-{e['seed']}-{e['frac']}"
        shutil.rmtree(exp, ignore_errors=True)
        (exp / "round_0" / "train").mkdir(parents=True)
        shutil.copyfile(checkpoint_path(base, 0), exp / "round_0" / "train" / "checkpoint.pt")
        # the seed also seeds round 1's training: deterministic strategies still show the training's spread
        recipe = replace(
            base,
            out=str(exp),
            train=replace(
                base.train,
                steps=args.steps,
                seed=base.train.seed + e["seed"],
                warmup_steps=min(base.train.warmup_steps, max(1, args.steps // 10)),
            ),
        )
        oracle_labels(recipe, plan["pool_tokens"], plan["pool_scenes"], [tuple(p) for p in e["picks"]], world)
        train_round(recipe, 1, progress=False)
        score = evaluate_checkpoint(recipe, checkpoint_path(recipe, 1), progress=False)
        row = {
            "strategy": e["strategy"],
            "seed": e["seed"],
            "frac": e["frac"],
            "frames": len(e["picks"]),
            "miou": 100 * score.miou,
        }
        with open(out, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(
            f"{e['strategy']} seed {e['seed']} budget {e['frac']:.0%} ({len(e['picks'])} frames): val mIoU "
            f"{row['miou']:.2f}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--world", default=None)
    ap.add_argument("--synth", default="6x8", help="SCENESxFRAMES of a world generated into RUN/world")
    ap.add_argument("--budgets", default="0.01,0.02,0.05,0.1")
    ap.add_argument("--strategies", default="random,entropy,coreset,hybrid")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps0", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument(
        "--gpus", type=int, default=None, help="round-1 processes, one per GPU (default: every visible GPU)"
    )
    ap.add_argument("--devices", default=None, help="GPU ids for the round-1 processes, e.g. 1,0 (default 0..gpus-1)")
    ap.add_argument("--report", action="store_true", help="only merge the results so far into the table and curve")
    ap.add_argument("--part", type=int, default=None, help=argparse.SUPPRESS)  # internal: a child's share
    ap.add_argument("--micro", action="store_true")
    args = ap.parse_args()
    if args.micro:
        args.synth, args.budgets, args.seeds, args.steps0, args.steps = "3x2", "0.25,0.5", 1, 2, 2
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    world = make_world(Path(args.world) if args.world else run / "world", args.synth, args.micro)
    scenes = sorted(p.name for p in (world / "gts").iterdir())
    gpus = args.gpus if args.gpus is not None else max(1, torch.cuda.device_count())
    if args.part is not None:
        run_experiments(run, world, json.loads((run / "plan.json").read_text()), args, args.part, gpus)
        return
    if args.report:
        plan = json.loads((run / "plan.json").read_text())
    else:
        (run / "base.yaml").write_text(yaml.safe_dump(base_recipe(run, world, scenes[-1], args.steps0, args.micro)))
        plan = prepare(run, world, args)
    visible = visible_gpus()
    devices = args.devices.split(",") if args.devices else [visible[i % len(visible)] for i in range(gpus)]
    if args.report:
        pass
    elif gpus == 1:
        run_experiments(run, world, plan, args, 0, 1)
    else:
        cmds = [
            [
                sys.executable,
                __file__,
                str(run),
                "--world",
                str(world),
                "--steps",
                str(args.steps),
                "--gpus",
                str(gpus),
                "--part",
                str(i),
                *(["--micro"] if args.micro else []),
            ]
            for i in range(gpus)
        ]
        if run_per_gpu(cmds, devices):
            print("a round-1 process failed; the table holds what finished", flush=True)
    rows = [json.loads(x) for f in sorted(run.glob("results.*.jsonl")) for x in f.read_text().splitlines()]
    rows = [r for r in rows if r["strategy"] in args.strategies.split(",")]
    n_pool = len(plan["pool_tokens"])
    budgets = sorted({r["frac"] for r in rows})
    results: dict[str, dict[float, list[float]]] = {}
    for r in rows:
        results.setdefault(r["strategy"], {}).setdefault(r["frac"], []).append(r["miou"])
    (run / "active_results.json").write_text(
        json.dumps(
            {
                "round0_miou": plan["round0_miou"],
                "pool": n_pool,
                "results": {s: {str(k): v for k, v in r.items()} for s, r in results.items()},
            },
            indent=1,
        )
    )
    from autolabel.report.figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for strategy, r in results.items():
        fr = [f for f in budgets if f in r]
        ax.errorbar(
            [max(1, round(f * n_pool)) for f in fr],
            [np.mean(r[f]) for f in fr],
            yerr=[np.std(r[f]) for f in fr],
            marker="o",
            capsize=3,
            label=strategy,
        )
    ax.axhline(plan["round0_miou"], color="gray", ls=":", label="round 0 (no 3D labels)")
    ax.set_xlabel("frames with manual 3D labels")
    ax.set_ylabel("validation mIoU (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, run / "budget_curve.png")
    print(f"\npool {n_pool} frames; val mIoU (mean +- std over seeds); round 0: {plan['round0_miou']:.2f}")
    print(f"{'strategy':<12}" + "".join(f"{f'{f:.0%} ({max(1, round(f * n_pool))})':>16}" for f in budgets))
    for strategy, r in results.items():
        print(
            f"{strategy:<12}"
            + "".join(f"{np.mean(r[f]):>9.2f} +-{np.std(r[f]):>4.1f}" if f in r else f"{'-':>16}" for f in budgets)
        )


if __name__ == "__main__":
    main()
