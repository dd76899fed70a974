"""Label-quality benchmark v2 (issue 17): what the network and the exported pseudo-labels are worth.

Two locked synthetic worlds: a development world (--world-seed; any tuning, thresholds, ablations) and a
test world made from another seed (--test-world-seed), run only for the reported table (--test). Each
world's last --test-scenes scenes are held out; the others are the training pool. Every variant trains
the same network for the same steps and gets two headline numbers:
  * the network: Occ3D mIoU / geometric IoU within mask_camera on the held-out scenes;
  * its pseudo-labels: the pool labelled by the variant's network (the EMA teacher where there is one,
    filtered by LiDAR), scored against the exact ground truth within mask_camera: mIoU, geometric IoU, and
    at the export threshold (the recipe's drop quantile) the kept share of mask_camera and its mIoU.
A variant trained with the EMA teacher (dts.enabled) also has its teacher's weights scored on the held-out
scenes (depth-aware as the recipe says), in a row "NAME (teacher)": the two networks of one training, paired.
Variants:
  3d_supervised     3D cross-entropy on every pool frame (the bound)
  render_exact      rendering only: exact 2D labels + LiDAR depth
  render_noisy      rendering only: the world's default foundation-model-like 2D labels (noise model v2)
  render_hard       rendering only: the hard noise level
  render_noisy_v1   rendering only: the first release's noise model (v1) at the default level, same world
  fusion            no network: the pool's labels from evidence fusion (autolabel.fusion: LiDAR of +-3
                    keyframes, each point named by a vote of the default-level 2D labels of every view)
  fusion_exact / fusion_hard   the same from the exact / the hard 2D labels
  render_all        render_noisy with semantic rays at every labelled pixel (render.semantic_rays: all)
  render_fused      render_noisy + 3D targets from evidence fusion (loss.fused_3d)
  render_hard_all / render_hard_fused   the same at the hard noise level
  fused_3d          no rendering: 3D cross-entropy on the pool's fused labels only (the bound's recipe with
                    fusion's labels, made without any 3D annotation, in place of the exact ones)
  noisy_dts         render_noisy + the DTS teacher's pseudo-labels
  dts_active_5pct   noisy_dts + one round with oracle 3D labels on 5% of the pool by the default strategy (auto)
  dts_random_5pct   the same with random selection
  dts_control       the same round 1 (same steps) with no new labels: what the extra steps alone are worth
  dts_points_5pct   dts_active_5pct's selection annotated as LiDAR point labels + boxes (the simulated point
                    annotator, voxelized by autolabel.annotation; issue 24) instead of exact dense voxels
  UNIT_STRATEGY_Npct  issue 21's budget curves: round 1 like dts_active_5pct with oracle labels on N% of the
                    pool chosen by one selection strategy (random, entropy, coreset, hybrid, ...) per unit:
                    `frame_hybrid_10pct` labels whole frames (at most 1 per scene); `region_entropy_5pct` labels
                    BEV tiles under a budget of N% of the pool's frames counted in voxels (selection.unit region,
                    at most 2 frames per scene, 16 tiles of 25 x 25 cells per frame; an ablation's
                    `selection.region_size` / `max_tiles_per_frame` change both). The pool is scored once per
                    round-0 seed and tile size; the selection's seed (random draws, ties) is the training seed.
                    Strategy `fusion` (`region_fusion_5pct`) ranks by the fused labels, no network: its round 0
                    must fuse (`round0=fused_3d`). `region_oracle_5pct`, an oracle and not a strategy: the tiles
                    where the fused labels are most wrong against the exact ground truth
                    (active.error_oracle_pool), taken as `fusion` takes its tiles; its round 0 must fuse likewise
  fusion_dts        all the evidence: render_fused + the DTS teacher, its pseudo-labels filtered by the frame's
                    LiDAR and the fused labels (dts.evidence: fusion)
  hard_dts / fusion_dts_hard   noisy_dts / fusion_dts at the hard noise level
Fused labels are made once per 2D-label level (RUN/fusion_<labels>.zarr, the pool's frames) and shared by
the fusion variants and every variant that trains on them.
A variant may carry a training seed, NAME@SEED (e.g. 3d_supervised@1); the table gives mean and spread
over seeds. Ablations: --ablation NEW=BASE:key=value;key=value (recipe keys, YAML values); a round-1
ablation may name the round-0 network it continues with `round0=VARIANT` (default noisy_dts, e.g.
`--ablation f_random=frame_random_5pct:round0=fused_3d`; VARIANT may be an ablation, e.g. the recipes'
training); `labels=exact|hard|v1` trains and fuses from another level's 2D labels. --relabel
NEW=BASE:dts.key=value;... labels the pool again from every seed of BASE's checkpoints under other labelling
rules (dts.* only), no training: rows NEW (NEW@SEED) with pool scores only.

    python benchmarks/quality.py RUN [--test] [--synth 52x4] [--test-scenes 16] [--steps 3000] [--variants ...]
    python benchmarks/quality.py RUN --micro     # the CI-sized version: checks that the harness runs

Variants are dealt over --procs processes (default: one per visible GPU; several may share a GPU); the two
round-1 variants wait for noisy_dts's network (a marker file) and then run at once in their own processes
where there are enough. Every process saves its results after each variant, so a run cut short still
reports what finished (--report prints the table of what is there, from RUN/meta.json without the world).
results.json records the world seeds and a digest of the world's files, the split, the code version and
the command.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from active import (  # noqa: E402
    base_recipe,
    error_oracle_pool,
    fused_label_pool,
    make_world,
    oracle_labels,
    run_per_gpu,
    select_share,
    visible_gpus,
    write_recipe,
)

from autolabel.active.config import STRATEGIES  # noqa: E402
from autolabel.config_io import apply_overrides  # noqa: E402
from autolabel.stages import evaluate_checkpoint_networks, score_round  # noqa: E402
from autolabel.stages import train as train_round  # noqa: E402
from autolabel.stages.inputs import checkpoint_path, fused_labels, open_cache, open_frames  # noqa: E402
from autolabel.dts.label import label_round  # noqa: E402
from autolabel.provenance import recipe_record  # noqa: E402
from autolabel.fusion.label import fuse_round  # noqa: E402
from autolabel.recipe import load_recipe, save_recipe  # noqa: E402
from autolabel.store.labels import LabelStore  # noqa: E402
from autolabel.store.export import evaluate_round  # noqa: E402
from autolabel.supervision.cache import supervise  # noqa: E402
from autolabel.supervision.config import DEFAULT_RUNNER_UPS  # noqa: E402
from autolabel.supervision.providers import build_provider, resolve_device  # noqa: E402

VARIANTS = (
    "3d_supervised",
    "render_exact",
    "render_noisy",
    "render_hard",
    "render_noisy_v1",
    "noisy_dts",
    "dts_active_5pct",
    "dts_random_5pct",
    "dts_control",
    "fusion",
    "fusion_exact",
    "fusion_hard",
    "render_all",
    "render_fused",
    "render_hard_all",
    "render_hard_fused",
    "fusion_dts",
    "hard_dts",
    "fusion_dts_hard",
    "dts_points_5pct",
    "fused_3d",
)
FUSION = ("fusion", "fusion_exact", "fusion_hard")  # pseudo-labels without a network
CHAIN = ("noisy_dts", "dts_active_5pct", "dts_random_5pct", "dts_control", "dts_points_5pct")
ROUND1 = CHAIN[1:]  # round 1 starts from noisy_dts's network: these wait for it
DTS = (*CHAIN, "fusion_dts", "hard_dts", "fusion_dts_hard")  # trained with the EMA teacher
FUSED_TARGETS = ("render_fused", "render_hard_fused", "fusion_dts", "fusion_dts_hard", "fused_3d")  # loss.fused_3d
ALL_RAYS = ("render_all", "render_hard_all")  # render.semantic_rays: all
# variant 3 with one change each, to find what rendering-only lacks
DIAGNOSTICS = ("render_noisy_aux", "render_noisy_no_los", "render_noisy_lidar_target")
# 2D labels by variant; the rest use the default level
LABELS = {
    "render_exact": "exact",
    "render_hard": "hard",
    "render_noisy_v1": "v1",
    "fusion_exact": "exact",
    "fusion_hard": "hard",
    "render_hard_all": "hard",
    "render_hard_fused": "hard",
    "hard_dts": "hard",
    "fusion_dts_hard": "hard",
}
LEVELS = ("noisy", *sorted(set(LABELS.values())))  # the world's 2D-label levels (`noisy`: the default level)
DEFAULT = (
    "3d_supervised,3d_supervised@1,render_noisy,render_noisy@1,render_exact,render_hard,render_noisy_v1,"
    + ",".join(CHAIN)
)
WAIT_SECONDS = 5.0  # how often a round-1 variant looks for noisy_dts's network
# issue 21's round-1 variants: unit, strategy, share of the pool in percent
# `oracle` (region only): tiles ranked by the fused labels' errors, read from the exact ground truth (not a strategy)
SELECTION = re.compile(rf"^(frame|region)_({'|'.join((*STRATEGIES, 'oracle'))})_(\d+)pct$")
LEGACY_SELECTION = {"dts_active_5pct": ("frame", "auto", 5), "dts_random_5pct": ("frame", "random", 5)}


def selection_of(kind: str) -> tuple[str, str, int] | None:
    """A round-1 variant's (unit, strategy, percent of the pool), None for one that selects nothing."""
    if kind == "dts_points_5pct":
        return LEGACY_SELECTION["dts_active_5pct"]
    m = SELECTION.match(kind)
    return (m[1], m[2], int(m[3])) if m else LEGACY_SELECTION.get(kind)


def is_round1(kind: str) -> bool:
    """Starts from noisy_dts's network (and waits for it)."""
    return kind in ROUND1 or SELECTION.match(kind) is not None


def split_name(name: str) -> tuple[str, int]:
    """'render_noisy@1' -> ('render_noisy', 1); no '@' -> seed 0."""
    base, _, seed = name.partition("@")
    return base, int(seed or 0)


def parse_ablations(specs: list[str]) -> dict[str, tuple[str, list[str]]]:
    """['NEW=BASE:a.b=1;c.d=x'] -> {NEW: (BASE, ['a.b=1', 'c.d=x'])}."""
    out = {}
    for spec in specs:
        name, _, rest = spec.partition("=")
        base, _, sets = rest.partition(":")
        # single trainings (an ablation of noisy_dts has no round 1), the fusion variants, and round-1 variants
        # (the overrides then change round 1's training, e.g. train.labelled_share, from noisy_dts's recipe)
        bases = VARIANTS + DIAGNOSTICS
        if not name or (base not in bases and not is_round1(base)):
            raise SystemExit(
                f"--ablation {spec!r}: want NEW=BASE:key=value;... with BASE one of {bases} or UNIT_STRATEGY_Npct"
            )
        out[name] = (base, [s for s in sets.split(";") if s])
        round0 = [s for s in out[name][1] if s.startswith("round0=")]
        if round0 and not is_round1(base):
            raise SystemExit(f"--ablation {spec!r}: round0= is for round-1 variants only")
        labels = [s.partition("=")[2] for s in out[name][1] if s.startswith("labels=")]
        if labels and labels[-1] not in LEVELS:
            raise SystemExit(f"--ablation {spec!r}: labels is one of {LEVELS}")
    for name, (_, sets) in out.items():  # round 0: a variant that trains from scratch, or an ablation of one
        round0 = [s.partition("=")[2] for s in sets if s.startswith("round0=")]
        trains = round0 and (round0[-1] in VARIANTS or (round0[-1] in out and not is_round1(out[round0[-1]][0])))
        if round0 and not trains:
            raise SystemExit(f"--ablation {name}: round0 names one of {VARIANTS} or an ablation of one")
    return out


def parse_relabels(specs: list[str], ablations: dict) -> dict[str, list[tuple[str, list[str]]]]:
    """['NEW=BASE:dts.a=1;dts.b=x'] -> {BASE: [(NEW, ['dts.a=1', 'dts.b=x'])]}: the pool labelled again from
    BASE's checkpoint (every seed of it) under other labelling rules, no training (dts.* keys only: anything
    else would change what the network is, and the row would not say so)."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for spec in specs:
        name, _, rest = spec.partition("=")
        base, _, sets = rest.partition(":")
        keys = [s for s in sets.split(";") if s]
        kind = ablations[base][0] if base in ablations else base
        if not name or not keys or kind not in VARIANTS or kind in FUSION or is_round1(kind):
            raise SystemExit(f"--relabel {spec!r}: want NEW=BASE:dts.key=value;... with BASE a variant that trains")
        if any(not k.startswith("dts.") for k in keys):
            raise SystemExit(f"--relabel {spec!r}: only the labelling rules (dts.*) may change")
        out.setdefault(base, []).append((name, keys))
    return out


def ablation_sets(name: str, ablations: dict) -> list[str]:
    """What an ablation sets (key=value, round0=, labels=), of any seed of it; [] for a built-in variant."""
    return ablations[split_name(name)[0]][1] if split_name(name)[0] in ablations else []


def recipe_overrides(name: str, ablations: dict) -> list[str]:
    """An ablation's recipe overrides (key=value), without its round0= and labels= choices."""
    sets = ablation_sets(name, ablations)
    return [s for s in sets if not s.startswith(("round0=", "labels="))]


def labels_of(name: str, kind: str, ablations: dict) -> str:
    """The 2D labels a variant trains and fuses from: its kind's (LABELS, else the default level), or an
    ablation's `labels=exact|noisy|hard|v1` (the same labeller on other 2D labels)."""
    sets = ablation_sets(name, ablations)
    return ([s.partition("=")[2] for s in sets if s.startswith("labels=")] or [LABELS.get(kind, "noisy")])[-1]


def round0_of(name: str, ablations: dict) -> str:
    """The round-0 network a round-1 variant continues with, of the same seed ('noisy_dts' or 'x@1')."""
    sets = ablation_sets(name, ablations)
    base = ([s.partition("=")[2] for s in sets if s.startswith("round0=")] or ["noisy_dts"])[-1]
    seed = split_name(name)[1]
    return f"{base}@{seed}" if seed else base


def kind_of(name: str, ablations: dict) -> str:
    """The built-in variant a name runs: 'x@1' -> 'x'; an ablation -> its base."""
    kind = split_name(name)[0]
    return ablations[kind][0] if kind in ablations else kind


def variant_recipe(run: Path, base: dict, name: str, ablations: dict) -> dict:
    kind, seed = kind_of(name, ablations), split_name(name)[1]
    overrides = recipe_overrides(name, ablations)
    r = json.loads(json.dumps(base))
    r["name"], r["out"] = name.replace("@", "_s"), str(run / name.replace("@", "_s"))
    r["train"]["seed"] = seed
    labels = labels_of(name, kind, ablations)
    if is_round1(kind):  # its recipe is its round 0's (round1 loads that one); the same cache and fused labels
        round0 = round0_of(name, ablations)
        kind = kind_of(round0, ablations)
        labels = labels_of(round0, kind, ablations)
        overrides = recipe_overrides(round0, ablations) + overrides  # a round 0 that is an ablation: its settings
    r["supervision"]["precomputed"]["variant"] = labels
    r["supervision"]["cache"] = str(run / f"cache_{labels}.zarr")
    dts = kind in DTS
    r["dts"]["enabled"] = dts
    r["loss"]["pseudo_3d"] = 1.0 if dts else 0.0
    r["fusion"] = {"enabled": kind in FUSED_TARGETS or kind in FUSION, "store": str(run / f"fusion_{labels}.zarr")}
    if kind in FUSED_TARGETS:
        r["loss"]["fused_3d"] = 1.0
    if kind in ("fusion_dts", "fusion_dts_hard"):
        r["dts"]["evidence"] = "fusion"
    if kind in ALL_RAYS:
        r["render"]["semantic_rays"] = "all"
    if kind in ("3d_supervised", "fused_3d"):  # 3D labels only; LiDAR depth bins cost the bound 6 mIoU (dev world)
        r["loss"].update(depth=0.0, semantics_2d=0.0, depth_distribution=0.0, line_of_sight=0.0, labels_3d=1.0)
    if kind in ("render_noisy_no_los", "render_noisy_lidar_target"):  # without the line-of-sight loss
        r["loss"]["line_of_sight"] = 0.0
    if kind == "render_noisy_lidar_target":  # depth targets at the LiDAR return for every ray
        r["render"]["depth_target"] = "lidar"
    if kind == "render_noisy_aux":  # RenderOcc's auxiliary-frame rays: the neighbouring keyframes' views
        r["data"]["aux_frames"] = 1
        r["render"]["aux_rays_per_frame"] = r["render"]["rays_per_frame"] // 2
    r = apply_overrides(r, overrides)
    settings = {k: v for k, v in r["fusion"].items() if k not in ("enabled", "store")}
    runner_ups = r["supervision"].get("runner_ups", DEFAULT_RUNNER_UPS)
    if runner_ups != DEFAULT_RUNNER_UPS:  # a cache keeping another number of runner-up names, and labels fused from it
        r["supervision"]["cache"] = str(run / f"cache_{labels}_r{runner_ups}.zarr")
        settings["supervision.runner_ups"] = runner_ups
    if settings:  # an ablation of the fusion settings: its own fused labels
        tag = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        r["fusion"]["store"] = str(run / f"fusion_{labels}_{tag}.zarr")
    return r


def prepared_variant(run: Path, base: dict, name: str, ablations: dict, fuse: bool = True):
    """The variant's recipe written to RUN/<name>.yaml and loaded, its 2D supervision cache written
    (shared by the variants with the same labels; `supervise` skips frames already done), and where it
    uses them (and `fuse`) the pool's fused labels (shared likewise; `fuse_round` skips frames already done)."""
    recipe = load_recipe(write_recipe(run, name.replace("@", "_s"), variant_recipe(run, base, name, ablations)))
    frames = open_frames(recipe, "all", load_images=False, load_gt=False)
    supervise(
        frames,
        build_provider(recipe.supervision, frames.dataroot),
        recipe.cache_path,
        recipe.network.image_size,
        progress=False,
        runner_ups=recipe.supervision.runner_ups,
    )
    if recipe.fusion.enabled and fuse:
        pool = open_frames(recipe, "train", load_images=False, load_gt=False)
        fuse_round(
            pool,
            open_cache(recipe),
            LabelStore(recipe.fusion_path, recipe.network.grid, create=True),
            0,
            recipe.network.grid,
            recipe.fusion,
            resolve_device(recipe.device),
            progress=False,
        )
    return recipe


def pool_scores(recipe, k: int, world: Path, t0: float, store: Path | None = None) -> dict:
    """Round k of the variant's store (or `store`) against the world's exact ground truth within mask_camera:
    all labels, and at the export threshold the kept share and its scores; label_seconds counted from t0."""
    q = recipe.rounds.export_drop_quantile
    e = evaluate_round(LabelStore.open(store or recipe.store_path), k, world, (q,), progress=False)
    p, kept = e["scores"].as_dict(), e["curve"][0]
    return {
        "miou": p["miou"],
        "geometric_iou": p["geometric_iou"],
        "per_class": p["per_class_iou"],
        "drop_quantile": q,
        "kept_share": kept["coverage"],
        "kept_miou": kept["miou"],
        "kept_geometric_iou": kept["geometric_iou"],
        "label_seconds": round(time.perf_counter() - t0, 1),
    }


def variant_groups(wanted: list[str], procs: int, ablations: dict | None = None) -> list[list[str]]:
    """Variants per process, each to the least loaded one: first the trainings from scratch (one unit each),
    then the round-1 variants (a quarter each), which come last in their process because they wait for
    noisy_dts's network; no process waits for one that comes after it, so there is no deadlock."""
    groups: list[list[str]] = [[] for _ in range(max(1, procs))]
    load = [0.0] * len(groups)
    round1 = [v for v in wanted if is_round1(kind_of(v, ablations or {}))]
    for v in [v for v in wanted if v not in round1] + round1:
        i = load.index(min(load))
        groups[i].append(v)
        load[i] += 0.25 if v in round1 else 1.0
    return [g for g in groups if g]


def shared_pool_scores(run: Path, dts_name: str, dts, region_size: int):
    """The pool scored by round 0 of `dts_name` (its teacher and student, with the scores of BEV tiles of
    `region_size` cells so that frame and region selections read the same scores), once per round-0 network and
    tile size: the first round-1 variant to ask scores it (holding RUN/pool_<dts_name>_r<size>.lock) and saves
    RUN/pool_<dts_name>_r<size>.pkl; the others wait and load. The file names the checkpoint it scored (size and
    mtime): one left by an earlier network is scored again."""
    stem = f"pool_{dts_name}_r{region_size}"
    path, lock = run / f"{stem}.pkl", run / f"{stem}.lock"
    ckpt = checkpoint_path(dts, 0).stat()
    key = (ckpt.st_size, ckpt.st_mtime_ns)
    while True:
        if path.is_file():
            saved = pickle.loads(path.read_bytes())
            if saved["checkpoint"] == key:
                return saved["pool"]
            path.unlink(missing_ok=True)  # scored by another round-0 network
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            time.sleep(WAIT_SECONDS)
            continue
        os.close(fd)
        try:
            # the budget is not used by scoring; region scoring needs one that buys a tile
            budget = float(np.prod(dts.network.grid.shape))
            region = dict(unit="region", region_size=region_size, budget=budget, cost_model=False)
            scored = replace(dts, selection=replace(dts.selection, **region))
            pool = score_round(scored, 0, progress=False)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps({"checkpoint": key, "pool": pool}))
            tmp.replace(path)
        finally:
            lock.unlink()


def run_group(run: Path, base: dict, world: Path, wanted: list[str], args, tag: str, ablations: dict) -> dict:
    """Train and score `wanted` in this process; results saved to results.<tag>.json after each variant (and each
    of its --relabel rows)."""
    out = run / f"results.{tag}.json"
    relabels = parse_relabels(args.relabel, ablations)
    results: dict[str, dict] = json.loads(out.read_text()) if out.is_file() else {}  # a rerun does only the rest

    def log(msg: str) -> None:
        print(f"[{tag}] {msg}", flush=True)

    def save() -> None:
        out.write_text(json.dumps(results, indent=1))

    def score(name: str, recipe, k: int, seconds: float) -> None:
        """Network on the held-out scenes, then its pseudo-labels of the pool."""
        # the EMA teacher's weights too where there is one, on the same scenes: paired with the student's
        nets = ("student", "teacher") if recipe.dts.enabled else ("student",)
        scored = evaluate_checkpoint_networks(recipe, checkpoint_path(recipe, k), weights=nets, progress=False)
        s = scored["student"].as_dict()
        hist = recipe.round_dir(k) / "train" / "history.jsonl"
        rows = [json.loads(x) for x in hist.read_text().splitlines()]
        ms = 1e3 * (rows[-1]["seconds"] - rows[0]["seconds"]) / max(1, rows[-1]["step"] - rows[0]["step"])
        r = {
            "miou": s["miou"],
            "geometric_iou": s["geometric_iou"],
            "per_class": s["per_class_iou"],
            "history": str(hist),
            "ms_per_step": round(ms, 1),
            "train_seconds": round(seconds, 1),
        }
        if "teacher" in scored:
            t = scored["teacher"].as_dict()
            r["teacher"] = {"miou": t["miou"], "geometric_iou": t["geometric_iou"], "per_class": t["per_class_iou"]}
            log(f"{name}: its EMA teacher, test mIoU {t['miou']} geo {t['geometric_iou']}")
        if args.skip_pseudo:
            results[name] = r
            log(f"{name}: test mIoU {s['miou']} geo {s['geometric_iou']} ({ms:.0f} ms/step, {seconds:.0f} s)")
            return save()
        log(f"{name}: test mIoU {s['miou']}; labelling the pool")
        t0 = time.perf_counter()
        frames = open_frames(recipe, "train", load_images=True, load_gt=False)
        fused = fused_labels(recipe, training=False)
        label_round(
            frames,
            open_cache(recipe),
            LabelStore(recipe.store_path, recipe.network.grid, create=True),
            k,
            recipe.network,
            recipe.dts,
            checkpoint_path(recipe, k),
            resolve_device(recipe.device),
            recipe_record(recipe),
            progress=False,
            fused=fused,
        )
        r["pseudo_labels"] = p = pool_scores(recipe, k, world, t0)
        results[name] = r
        log(
            f"{name}: test mIoU {s['miou']} geo {s['geometric_iou']} ({ms:.0f} ms/step, {seconds:.0f} s); pool "
            f"pseudo-labels mIoU {p['miou']} geo {p['geometric_iou']}, kept {100 * p['kept_share']:.1f}%"
        )
        save()
        relabel(name, recipe, k)

    def relabel(name: str, recipe, k: int) -> None:
        """The pool labelled again from `name`'s round-k checkpoint under each --relabel rule set for its kind:
        rows NEW (NEW@SEED) with pseudo-label scores only (the network is `name`'s)."""
        base, seed = split_name(name)
        for new, keys in relabels.get(base, []):
            row = f"{new}@{seed}" if seed else new
            folder = run / row.replace("@", "_s")
            shutil.rmtree(folder, ignore_errors=True)  # a rerun labels from scratch
            own = load_recipe(run / f"{name.replace('@', '_s')}.yaml", keys, out=str(folder))
            t0 = time.perf_counter()
            label_round(
                open_frames(own, "train", load_images=True, load_gt=False),
                open_cache(own),
                LabelStore(own.store_path, own.network.grid, create=True),
                k,
                own.network,
                own.dts,
                checkpoint_path(recipe, k),
                resolve_device(own.device),
                recipe_record(own),
                progress=False,
                fused=fused_labels(own, training=False),
            )
            p = pool_scores(own, k, world, t0)
            results[row] = {"miou": None, "geometric_iou": None, "pseudo_labels": p, "relabel_of": name, "dts": keys}
            log(f"{row} ({name} relabelled, {';'.join(keys)}): pool labels mIoU {p['miou']} geo {p['geometric_iou']}")
            save()

    def train(name: str):
        log(f"{name}: training ({args.steps} steps)")
        recipe = prepared_variant(run, base, name, ablations)
        if kind_of(name, ablations) == "3d_supervised":
            pool = open_frames(recipe, "train", load_images=False, load_gt=False)
            oracle_labels(
                recipe,
                pool.tokens,
                [pool.scene_of(t) for t in pool.tokens],
                [(pool.scene_of(t), t) for t in pool.tokens],
                world,
            )
        t0 = time.perf_counter()
        train_round(recipe, 0, progress=False)
        return recipe, time.perf_counter() - t0

    def round1(name: str) -> None:
        """Round 1 from round 0's network (noisy_dts's or `round0_of`'s, of the same seed), with oracle 3D labels
        on a share of the pool picked by a selection strategy (whole frames or BEV tiles: `selection_of`), or
        none (dts_control)."""
        kind, seed = kind_of(name, ablations), split_name(name)[1]
        overrides = recipe_overrides(name, ablations)
        dts_name = round0_of(name, ablations).replace("@", "_s")
        marker = run / f"{dts_name}.done"
        log(f"{name}: waiting for {dts_name}'s network and pseudo-labels")
        while not marker.is_file():
            if marker.with_suffix(".failed").is_file():
                raise RuntimeError(f"{name}: {dts_name} failed")
            time.sleep(WAIT_SECONDS)
        dts = load_recipe(run / f"{dts_name}.yaml")
        folder = run / name.replace("@", "_s")
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "round_0" / "train").mkdir(parents=True)
        shutil.copyfile(checkpoint_path(dts, 0), folder / "round_0" / "train" / "checkpoint.pt")
        own = load_recipe(run / f"{dts_name}.yaml", overrides)  # an ablation's overrides change round 1 only
        steps = own.train.steps if any(o.startswith("train.steps=") for o in overrides) else args.round1_steps
        recipe = replace(
            own,
            name=name,
            out=str(folder),
            train=replace(own.train, steps=steps, warmup_steps=min(own.train.warmup_steps, steps)),
        )
        save_recipe(recipe, folder / "recipe.yaml")  # what round 1 trained with
        picks, used, voxels = [], "none", 0
        sel = selection_of(kind)
        if sel is not None:
            unit, strategy, percent = sel
            # the tile grid and the per-frame quota of the round's recipe (an ablation may set them)
            size, quota = own.selection.region_size, own.selection.max_tiles_per_frame
            # by the fused labels (their own uncertainty; the oracle: their errors), so round 0 fuses: no network pass
            if strategy in ("fusion", "oracle"):
                if not dts.fusion.enabled:
                    raise SystemExit(f"{name}: strategy {strategy} needs a round 0 that fuses (round0=fused_3d)")
                pool_of = fused_label_pool if strategy == "fusion" else partial(error_oracle_pool, world=world)
                scores = pool_of(
                    open_frames(dts, "train", load_images=False, load_gt=False),
                    LabelStore.open(dts.store_path),
                    LabelStore.open(dts.fusion_path),
                    class_power=own.selection.fusion_class_power,  # an ablation may set it
                    region_size=size,
                )
            else:
                scores = shared_pool_scores(run, dts_name, dts, size)
            frames_worth = max(1, round(percent / 100 * len(scores.tokens)))
            grid_voxels = int(np.prod(recipe.network.grid.shape))
            ranking = "fusion" if strategy == "oracle" else strategy  # the oracle's scores, taken in fusion's order
            # the per-scene cap only where an ablation sets it (the benchmark's caps: 1 frame, or 2 with tiles)
            capped = any(o.startswith("selection.per_scene_cap=") for o in overrides)
            cap = own.selection.per_scene_cap if capped else None
            share = own.selection.random_share  # 0 unless an ablation sets it
            picks, used, voxels = select_share(
                scores, unit, ranking, frames_worth, grid_voxels, seed, quota, cap, random_share=share
            )
            used = "oracle" if strategy == "oracle" else used
            picked = [(p.candidate.scene, p.candidate.token) for p in picks]
            if kind == "dts_points_5pct":  # issue 24: the same picks as points + boxes, voxelized
                from autolabel.annotation.deliver import oracle_point_labels

                oracle_point_labels(
                    open_frames(recipe, "train", load_images=False, load_gt=False),
                    recipe.store_path,
                    recipe.network.grid,
                    recipe.network.image_size,
                    scores.tokens,
                    scores.scenes,
                    picked,
                    folder / "point_annotations",
                )
            else:
                tiles = {p.candidate.token: [scores.regions.bounds(t) for t in p.tiles] for p in picks if p.tiles}
                oracle_labels(recipe, scores.tokens, scores.scenes, picked, world, tiles)
        log(f"{name}: round 1 ({steps} steps, {len(picks)} labelled frames, {voxels} voxels, by {used})")
        t0 = time.perf_counter()
        train_round(recipe, 1, progress=False)
        score(name, recipe, 1, time.perf_counter() - t0)
        results[name]["selected"] = [p.candidate.token for p in picks]
        results[name]["tiles"] = [len(p.tiles) for p in picks]
        results[name]["labelled_voxels"] = voxels
        results[name]["strategy"] = used
        save()

    def fused(name: str) -> None:
        """The pool labelled by evidence fusion alone, scored like a network's pseudo-labels (label_seconds: the
        fusion of the pool, 0 where it was made before, for a variant that trains on it)."""
        log(f"{name}: fusing the pool's evidence")
        t0 = time.perf_counter()
        recipe = prepared_variant(run, base, name, ablations)  # fuses the pool
        p = pool_scores(recipe, 0, world, t0, recipe.fusion_path)
        results[name] = {"miou": None, "geometric_iou": None, "pseudo_labels": p}
        log(
            f"{name}: pool labels mIoU {p['miou']} geo {p['geometric_iou']}, kept {100 * p['kept_share']:.1f}% "
            f"({p['label_seconds']:.0f} s)"
        )
        save()

    for name in wanted:  # variant_groups puts the round-1 variants last
        if name in results:
            continue
        if is_round1(kind_of(name, ablations)):
            round1(name)
            continue
        if kind_of(name, ablations) in FUSION:
            fused(name)
            continue
        # noisy_dts's marker: its network and pool labels (which pool scoring reads) are there, or it failed
        marker = run / f"{name.replace('@', '_s')}.done"
        try:
            recipe, seconds = train(name)
            score(name, recipe, 0, seconds)
        except BaseException:
            marker.with_suffix(".failed").touch()  # round-1 variants waiting for this one give up
            raise
        marker.touch()
    return results


def code_version() -> str:
    """The git commit of the code that ran (+ '-dirty' with uncommitted changes), or 'unknown'."""
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def code_digest() -> str:
    """SHA-256 over the sources that ran (paths and bytes of the Python, C++ and CUDA files): unlike the
    commit, it holds where the checkout's git metadata lags its files (a copy sent to a GPU machine)."""
    root = Path(__file__).resolve().parents[1]
    return files_digest(
        root,
        (
            p
            for d in ("autolabel", "occnet", "kernels", "benchmarks")
            for p in (root / d).rglob("*")
            if p.suffix in (".py", ".cpp", ".cu", ".h", ".cuh") and "__pycache__" not in p.parts
        ),
    )


def files_digest(root: Path, paths, decode_npz: bool = False) -> str:
    """The first 16 hex digits of SHA-256 over the files' paths (relative to root, sorted) and bytes; with
    `decode_npz`, over what an .npz file holds (each array's name, dtype, shape and values) instead of its
    bytes, which change with the deflater (the ISA-L writer of 2026-11-30 changed every world's files, not
    their arrays)."""
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(str(path.relative_to(root)).encode())
        if decode_npz and path.suffix == ".npz":
            with np.load(path) as z:
                for name in sorted(z.files):
                    a = np.ascontiguousarray(z[name])
                    h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
                    h.update(a.tobytes())
        else:
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def summarise(results: dict) -> dict[str, dict]:
    """Per variant (seeds pooled): mean and spread (max - min) of every headline number."""
    keys = {
        "miou": ("miou",),
        "geo": ("geometric_iou",),
        "pl_miou": ("pseudo_labels", "miou"),
        "pl_geo": ("pseudo_labels", "geometric_iou"),
        "kept": ("pseudo_labels", "kept_share"),
    }
    by: dict[str, list[dict]] = {}
    for name, r in results.items():
        if isinstance(r, dict) and "miou" in r:
            by.setdefault(split_name(name)[0], []).append(r)
            if isinstance(r.get("teacher"), dict):  # a row of its own: the teacher's network scores
                by.setdefault(f"{split_name(name)[0]} (teacher)", []).append(r["teacher"])
    out = {}
    for kind, rows in by.items():
        s = {"seeds": len(rows)}
        for k, path in keys.items():
            vals = [v for v in (_get(r, path) for r in rows) if v is not None]
            s[k] = (float(np.mean(vals)), float(np.max(vals) - np.min(vals))) if vals else (None, None)
        out[kind] = s
    return out


def _get(d: dict, path: tuple[str, ...]):
    for p in path:
        d = d.get(p) if isinstance(d, dict) else None
    return d


def print_table(meta: dict, results: dict) -> None:
    s = summarise(results)
    bound = (s.get("3d_supervised") or {}).get("miou", (None,))[0]
    print(
        f"\n{meta['world']} world (seed {meta['world_seed']}), held-out scenes {meta['split']['held_out']}; "
        f"{meta['steps']} steps per variant (+{meta['round1_steps']} for round 1); code {meta['code_version']}"
        # the sources' digest: a checkout sent to a GPU machine may carry stale git metadata (its commit then lies)
        + (f", sources {meta['code_digest']}" if meta.get("code_digest") else "")
    )
    print(
        f"{'variant':<30}{'seeds':>6}{'mIoU':>14}{'geo IoU':>14}{'vs 3D':>7}{'PL mIoU':>14}{'PL geo':>14}{'kept %':>8}"
    )

    def cell(v):
        m, spread = v
        return f"{'-':>14}" if m is None else (f"{m:>8.2f} +-{spread / 2:>4.1f}" if spread else f"{m:>14.2f}")

    order = [*VARIANTS, *DIAGNOSTICS] + sorted(k for k in s if k not in VARIANTS + DIAGNOSTICS and " " not in k)
    order = [row for kind in order for row in (kind, f"{kind} (teacher)")]  # a teacher's row under its student's
    for kind in order:
        if kind not in s:
            continue
        r = s[kind]
        ratio = f"{r['miou'][0] / bound:.2f}" if bound and r["miou"][0] is not None else "-"
        kept = f"{100 * r['kept'][0]:>8.1f}" if r["kept"][0] is not None else f"{'-':>8}"
        print(
            f"{kind:<30}{r['seeds']:>6}{cell(r['miou'])}{cell(r['geo'])}{ratio:>7}{cell(r['pl_miou'])}"
            f"{cell(r['pl_geo'])}{kept}"
        )
    print(
        "mIoU / geo IoU: the network on the held-out scenes; PL: the pool's pseudo-labels against exact ground truth "
        "within mask_camera; kept: share of mask_camera kept at the export threshold; +- half the spread over seeds"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--test", action="store_true", help="run on the test world (only for the reported table)")
    ap.add_argument("--world-seed", type=int, default=31, help="seed of the development world")
    ap.add_argument("--test-world-seed", type=int, default=131, help="seed of the test world")
    # 16 held-out scenes (64 keyframes) beside a pool of 36: with 4 the network's seed spread hid every round-1
    # difference (docs/ARCHITECTURE.md, "The held-out split")
    ap.add_argument("--synth", default="52x4", help="SCENESxFRAMES of each world")
    ap.add_argument("--test-scenes", type=int, default=16, help="held-out scenes (the world's last ones)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--round1-steps", type=int, default=750)
    ap.add_argument("--variants", default=DEFAULT, help="comma-separated, NAME or NAME@SEED")
    ap.add_argument("--ablation", action="append", default=[], help="NEW=BASE:key=value;key=value (repeatable)")
    ap.add_argument(
        "--relabel",
        action="append",
        default=[],
        help="NEW=BASE:dts.key=value;... (repeatable): the pool labelled again from BASE's networks, no training",
    )
    ap.add_argument("--procs", type=int, default=None, help="processes (default: one per visible GPU); GPUs are shared")
    ap.add_argument("--gpus", type=int, default=None, help=argparse.SUPPRESS)  # the old name of --procs
    ap.add_argument("--skip-pseudo", action="store_true", help="score the networks only (tuning runs)")
    ap.add_argument("--report", action="store_true", help="only merge the results so far into the table and curves")
    ap.add_argument(
        "--tag",
        default="",
        help="a second invocation on the same RUN while another runs (e.g. round-1 variants after round 0): "
        "its results.TAG<i>.json and meta.TAG.json do not overwrite the other's",
    )
    ap.add_argument("--group", default=None, help=argparse.SUPPRESS)  # internal: this process runs one group
    ap.add_argument("--micro", action="store_true")
    args, rest = ap.parse_known_args()
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.micro:
        args.synth, args.steps, args.round1_steps, args.test_scenes = "3x2", 2, 2, 1
    ablations = parse_ablations(args.ablation)
    parse_relabels(args.relabel, ablations)  # checked before any work
    wanted = args.variants.split(",")
    unknown = {split_name(v)[0] for v in wanted} - set(VARIANTS) - set(DIAGNOSTICS) - set(ablations)
    unknown = {v for v in unknown if not SELECTION.match(v)}
    if unknown:
        raise SystemExit(
            f"unknown variants {sorted(unknown)}; choose from {VARIANTS + DIAGNOSTICS}, UNIT_STRATEGY_Npct "
            f"(unit frame or region, strategy one of {STRATEGIES}) or an --ablation"
        )
    run = Path(args.run)
    for v in wanted if args.group is None else ():  # a child process runs part of the parent's variants
        kind = kind_of(v, ablations)
        dts = round0_of(v, ablations)
        if is_round1(kind) and dts not in wanted and not (run / f"{dts.replace('@', '_s')}.done").is_file():
            raise SystemExit(f"{v} starts from {dts}'s network: add {dts} to --variants")
        if is_round1(kind) and args.skip_pseudo:
            raise SystemExit(f"{v} selects by the pool's pseudo-labels: leave out --skip-pseudo")
        if kind.startswith("frame_oracle_"):
            raise SystemExit(f"{v}: the error oracle ranks BEV tiles only (region_oracle_Npct)")
    if args.report and (run / "meta.json").is_file():  # the table of what is there; the world is not needed
        meta = json.loads((run / "meta.json").read_text())
        report(run, meta, failed=[])
        return
    run.mkdir(parents=True, exist_ok=True)
    seed = args.test_world_seed if args.test else args.world_seed
    world = make_world(run / f"world_{seed}", args.synth, args.micro, seed=seed)
    scenes = sorted(p.name for p in (world / "gts").iterdir())
    held_out = scenes[-args.test_scenes :]
    base = base_recipe(run, world, held_out[-1], args.steps, args.micro)
    base["data"]["val_scenes"] = held_out
    if not args.micro:  # image features at 1/8 of the input: +2.2 mIoU for the bound on the development world
        base["network"]["feature_stride"] = 8
    if args.group is not None:  # a child process
        run_group(run, base, world, wanted, args, args.group, ablations)
        return
    meta = {
        "world": "test" if args.test else "development",
        "world_seed": seed,
        "dev_world_seed": args.world_seed,
        "test_world_seed": args.test_world_seed,
        "synth": args.synth,
        "world_digest": world_digest(world),
        "split": {"pool": [s for s in scenes if s not in held_out], "held_out": held_out},
        "steps": args.steps,
        "round1_steps": args.round1_steps,
        "code_version": code_version(),
        "code_digest": code_digest(),
        "command": " ".join(sys.argv),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "date": time.strftime("%Y-%m-%d"),
        "ablations": {k: [b, s] for k, (b, s) in ablations.items()},
    }
    meta_path = run / (f"meta.{args.tag}.json" if args.tag else "meta.json")
    if not args.report:
        meta_path.write_text(json.dumps(meta, indent=1))
    procs = args.procs or args.gpus or max(1, torch.cuda.device_count())
    groups = [] if args.report else variant_groups(wanted, procs, ablations)
    failed: list[int] = []
    for v in wanted:  # failed in an earlier attempt: tried again now (another invocation's markers stay)
        (run / f"{v.replace('@', '_s')}.failed").unlink(missing_ok=True)
    t0 = time.perf_counter()
    # the caches and the fused labels the trainings read, written once before the processes start (in
    # DataLoader workers; fusion on the GPU); a fusion variant's own labels are made in its process
    prepared: set[tuple[str, str | None]] = set()
    for v in wanted if groups else ():
        r = variant_recipe(run, base, v, ablations)
        trains_on_fused = r["fusion"]["enabled"] and kind_of(v, ablations) not in FUSION
        key = (r["supervision"]["cache"], r["fusion"]["store"] if trains_on_fused else None)
        if key in prepared:
            continue
        prepared.add(key)
        t1 = time.perf_counter()
        prepared_variant(run, base, v, ablations, fuse=trains_on_fused)
        print(
            f"supervision cache {Path(key[0]).name}"
            + (f" and fused labels {Path(key[1]).name}" if key[1] else "")
            + f" in {time.perf_counter() - t1:.0f} s",
            flush=True,
        )
    if len(groups) == 1:
        run_group(run, base, world, groups[0], args, f"{args.tag}0", ablations)
    elif groups:
        cmds = [
            [
                sys.executable,
                __file__,
                str(run),
                "--steps",
                str(args.steps),
                "--round1-steps",
                str(args.round1_steps),
                "--synth",
                args.synth,
                "--test-scenes",
                str(args.test_scenes),
                "--world-seed",
                str(args.world_seed),
                "--test-world-seed",
                str(args.test_world_seed),
                *(["--test"] if args.test else []),
                *sum((["--ablation", a] for a in args.ablation), []),
                *sum((["--relabel", a] for a in args.relabel), []),
                *(["--skip-pseudo"] if args.skip_pseudo else []),
                "--variants",
                ",".join(group),
                "--group",
                f"{args.tag}{i}",
                *(["--micro"] if args.micro else []),
            ]
            for i, group in enumerate(groups)
        ]
        failed += run_per_gpu(cmds, visible_gpus())
        if failed:
            print(f"groups {failed} failed; the table holds what finished", flush=True)
    if groups:
        meta["seconds"] = round(time.perf_counter() - t0, 1)
        meta_path.write_text(json.dumps(meta, indent=1))
    report(run, meta, failed)


def report(run: Path, meta: dict, failed: list[int]) -> None:
    """results.json, the training curves and the table from every process's results.*.json."""
    results: dict[str, dict] = {}
    for f in sorted(run.glob("results.*.json")):
        results.update(json.loads(f.read_text()))
    (run / "results.json").write_text(
        json.dumps({"meta": meta, "summary": summarise(results), "variants": results}, indent=1)
    )
    _curves(results, run / "training_curves.png")
    print_table(meta, results)
    if failed:
        sys.exit(1)


def world_digest(world: Path) -> str:
    """SHA-256 over the world's tables, Occ3D ground truth, 2D label maps and semantic prior maps (paths and
    contents, an .npz file's arrays rather than its bytes): results of two runs may be merged only when their
    worlds have the same digest. (Before 2026-11-30 the maps were left out: `fusion.map_prior` reads them.)"""
    return files_digest(
        world,
        (p for d in ("v1.0-synth", "gts", "labels2d", "maps") for p in (world / d).rglob("*") if p.is_file()),
        decode_npz=True,
    )


def _curves(results: dict, path: Path, window: int = 50) -> None:
    """Training loss per variant, a running mean over `window` steps (raw losses swing by 2x from batch to
    batch); one colour per variant kind, one line style per seed; round-1 runs start at their own step 0."""
    from autolabel.report.figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    kinds = sorted({split_name(n)[0] for n in results})
    colours = {k: plt.get_cmap("tab10")(i % 10) for i, k in enumerate(kinds)}
    for name in sorted(results):
        r = results[name]
        hist = Path(r.get("history", "")) if isinstance(r, dict) else None
        if not hist or not hist.is_file():
            continue
        rows = {}
        for line in hist.read_text().splitlines():
            row = json.loads(line)
            rows[row["step"]] = row["loss"]  # after a resume the last line of a step counts
        steps = sorted(rows)
        loss = np.array([rows[s] for s in steps])
        w = max(1, min(window, len(loss)))
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
        kind, seed = split_name(name)
        ax.plot(
            steps[w - 1 :],
            smooth,
            color=colours[kind],
            linestyle=("-", "--", ":", "-.")[seed % 4],
            label=kind if seed == min(split_name(n)[1] for n in results if split_name(n)[0] == kind) else None,
        )
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (mean of {window} steps)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
