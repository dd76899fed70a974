"""Helpers the benchmarks share: synthetic worlds (`make_world`), base recipes, the oracle annotator (the world's
ground truth as manual labels: `oracle_labels`, `oracle_into`), pool scorings and selections by share of the pool,
and one process per GPU (`run_per_gpu`).

Until 2026-12-01 this file also held issue 8's budget-curve harness (round 0, then round 1 per strategy, seed and
budget; the 2026-11-25 tables of BENCHMARKS.md). The quality benchmark's round-1 variants (`benchmarks/quality.py`,
`UNIT_STRATEGY_Npct`, with a control round and the locked development / test worlds) run the same curves, as issue 21
asked; the older harness was retired rather than kept in step with it (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
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
from autolabel.store.labels import LabelStore
from occnet.classes import NUM_CLASSES

MICRO_GRID = {"range_min": [-12.8, -12.8, -1.0], "range_max": [12.8, 12.8, 2.2], "voxel_size": 0.4}


def select_share(
    pool,
    unit: str,
    strategy: str,
    frames_worth: int,
    grid_voxels: int,
    seed: int,
    max_tiles_per_frame: int = SelectionConfig.max_tiles_per_frame,
    per_scene_cap: int | None = None,
    random_share: float = 0.0,
) -> tuple:
    """A benchmark round's selection from a scored pool (`score_pool` or `fusion_pool`, scored with tiles): whole
    frames, `frames_worth` of them, or (unit region) BEV tiles of the pool's tile grid for as many frames' voxels
    (`grid_voxels` each), at most `max_tiles_per_frame` (selection.max_tiles_per_frame) tiles a frame; at most
    `per_scene_cap` frames a scene (selection.per_scene_cap; None: 1 for whole frames, the recipes' default 2 for
    tiles); `random_share` of the budget at random beside a ranking (selection.random_share). Returns the picks,
    the strategy used and the voxels labelled."""
    none = pool.features[:0]
    if unit == "frame":
        cap = 1 if per_scene_cap is None else per_scene_cap
        cfg = SelectionConfig(
            strategy=strategy, budget=frames_worth, per_scene_cap=cap, random_share=random_share, seed=seed
        )
        picks, used = select_frames(pool.candidates, pool.features, none, cfg, 0, len(pool.tokens))
        return picks, used, len(picks) * grid_voxels
    cfg = SelectionConfig(
        strategy=strategy,
        budget=frames_worth * grid_voxels,
        per_scene_cap=SelectionConfig.per_scene_cap if per_scene_cap is None else per_scene_cap,
        unit="region",
        region_size=pool.regions.size,
        max_tiles_per_frame=max_tiles_per_frame,
        random_share=random_share,
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
