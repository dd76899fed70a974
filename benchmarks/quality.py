"""Label-quality benchmark (issue 10): does rendering-only supervision reach 3D-supervised quality?

One seeded synthetic world: a training pool and disjoint validation scenes. The same network, the same
budget of steps, these variants, each scored on the validation scenes (Occ3D mIoU, geometric IoU and
per-class IoU within mask_camera):
  1. 3d_supervised     3D cross-entropy on every training frame (the upper bound)
  2. render_exact      rendering only: exact 2D labels + LiDAR depth
  3. render_noisy      rendering only: noisy foundation-model-like 2D labels (the world's noise model)
  4. noisy_dts         3 + the DTS teacher's pseudo-labels
  5. dts_active_5pct   4 + one round with oracle 3D labels on 5% of the pool chosen by active selection
     dts_random_5pct   the same with random selection
Also the pseudo-labels' own mIoU (teacher + LiDAR filtering) on the pool. Writes results.json, the
training curves (PNG) and prints one table.

    python benchmarks/quality.py RUN [--synth 8x8] [--steps 3000] [--round1-steps 750] [--variants ...] [--seed 0]
    python benchmarks/quality.py RUN --micro     # the CI-sized version: checks that the harness runs

With several GPUs (--gpus, default every visible one) the variants run in one process per GPU: the DTS
chain on the last one, each other variant on the least loaded; each process saves its results after
every variant, so a run cut short still reports what finished (--report prints the table of what is
there). Diagnostic variants of 3, asked for by name in --variants: render_noisy_aux (+ rays from the
neighbouring keyframes), render_noisy_no_los (- the LiDAR line-of-sight loss), render_noisy_lidar_target
(- the line-of-sight loss, and depth targets at the LiDAR return on the ground too: `render.depth_target`
"lidar"; the method before issue 10's fixes, read out at the calibrated threshold).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from active import base_recipe, make_world, oracle_labels, run_per_gpu, write_recipe  # noqa: E402

from autolabel.active.config import SelectionConfig  # noqa: E402
from autolabel.active.pool import score_pool  # noqa: E402
from autolabel.active.select import select_frames  # noqa: E402
from autolabel.dataset import open_frames  # noqa: E402
from autolabel.dts.label import label_round  # noqa: E402
from autolabel.recipe import load_recipe  # noqa: E402
from autolabel.store.labels import LabelStore  # noqa: E402
from autolabel.store.rounds import evaluate_round  # noqa: E402
from autolabel.supervision.cache import supervise  # noqa: E402
from autolabel.supervision.providers import build_provider, resolve_device  # noqa: E402
from autolabel.training.evaluate import evaluate_checkpoint  # noqa: E402
from autolabel.training.rounds import checkpoint_path, open_cache, train_round  # noqa: E402

VARIANTS = ("3d_supervised", "render_exact", "render_noisy", "noisy_dts", "dts_active_5pct", "dts_random_5pct")


def variant_recipe(run: Path, base: dict, name: str) -> dict:
    r = json.loads(json.dumps(base))
    r["name"], r["out"] = name, str(run / name)
    noisy = name != "render_exact"
    r["supervision"]["precomputed"]["variant"] = "noisy" if noisy else "exact"
    r["supervision"]["cache"] = str(run / ("cache_noisy.zarr" if noisy else "cache_exact.zarr"))
    dts = name in ("noisy_dts", "dts_active_5pct", "dts_random_5pct")
    r["dts"]["enabled"] = dts
    r["loss"]["pseudo_3d"] = 1.0 if dts else 0.0
    if name == "3d_supervised":
        r["loss"].update(depth=0.0, semantics_2d=0.0, depth_distribution=0.0, line_of_sight=0.0, labels_3d=1.0)
    if name in ("render_noisy_no_los", "render_noisy_lidar_target"):  # without the line-of-sight loss
        r["loss"]["line_of_sight"] = 0.0
    if name == "render_noisy_lidar_target":  # depth targets at the LiDAR return for every ray
        r["render"]["depth_target"] = "lidar"
    if name == "render_noisy_aux":  # RenderOcc's auxiliary-frame rays: the neighbouring keyframes' views
        r["data"]["aux_frames"] = 1
        r["render"]["aux_rays_per_frame"] = r["render"]["rays_per_frame"] // 2
    return r


def prepared_variant(run: Path, base: dict, name: str):
    """The variant's recipe written to RUN/<name>.yaml and loaded, its 2D supervision cache written
    (shared by the variants with the same labels; `supervise` skips frames already done)."""
    recipe = load_recipe(write_recipe(run, name, variant_recipe(run, base, name)))
    frames = open_frames(recipe, "all", load_images=False, load_gt=False)
    supervise(frames, build_provider(recipe.supervision, frames.dataroot), recipe.cache_path, recipe.network.image_size,
              progress=False)
    return recipe


def train_variant(run: Path, base: dict, name: str, world: Path, log) -> tuple:
    recipe = prepared_variant(run, base, name)
    pool = open_frames(recipe, "train", load_images=False, load_gt=False)
    if name == "3d_supervised":
        oracle_labels(recipe, pool.tokens, [pool.scene_of(t) for t in pool.tokens],
                      [(pool.scene_of(t), t) for t in pool.tokens], world)
    t0 = time.perf_counter()
    train_round(recipe, 0, progress=False)
    log(f"{name}: trained in {time.perf_counter() - t0:.0f} s")
    return recipe, pool


# variant 3 with one change each, to find what rendering-only lacks
DIAGNOSTICS = ("render_noisy_aux", "render_noisy_no_los", "render_noisy_lidar_target")


def variant_groups(wanted: list[str], gpus: int) -> list[list[str]]:
    """Variants per process (one process per GPU): the DTS chain (train, label, two shorter round-1 runs:
    about 1.5 trainings) stays together on the last GPU; each other variant goes to the least loaded one."""
    chain = [v for v in wanted if v in ("noisy_dts", "dts_active_5pct", "dts_random_5pct")]
    groups: list[list[str]] = [[] for _ in range(max(1, gpus))]
    load = [0.0] * len(groups)
    if chain:
        groups[-1] += chain
        load[-1] = 1.5
    for v in wanted:
        if v not in chain:
            i = load.index(min(load))
            groups[i].append(v)
            load[i] += 1.0
    return [g for g in groups if g]


def run_group(run: Path, base: dict, world: Path, wanted: list[str], args, tag: str) -> dict:
    """Train and score `wanted` in this process; results saved to results.<tag>.json after each variant."""
    results: dict[str, dict] = {}
    out = run / f"results.{tag}.json"

    def log(msg: str) -> None:
        print(f"[{tag}] {msg}", flush=True)

    def score(name: str, recipe, k: int) -> None:
        s = evaluate_checkpoint(recipe, checkpoint_path(recipe, k), progress=False).as_dict()
        hist = recipe.round_dir(k) / "train" / "history.jsonl"
        rows = [json.loads(x) for x in hist.read_text().splitlines()]
        ms = 1e3 * (rows[-1]["seconds"] - rows[0]["seconds"]) / max(1, rows[-1]["step"] - rows[0]["step"])
        results[name] = {"miou": s["miou"], "geometric_iou": s["geometric_iou"], "per_class": s["per_class_iou"],
                         "history": str(hist), "ms_per_step": round(ms, 1)}
        log(f"{name}: val mIoU {s['miou']} geo {s['geometric_iou']} ({ms:.0f} ms/step)")
        out.write_text(json.dumps(results, indent=1))

    for name in ("3d_supervised", "render_exact", "render_noisy", *DIAGNOSTICS):
        if name in wanted:
            recipe, _ = train_variant(run, base, name, world, log)
            score(name, recipe, 0)
    if any(v in wanted for v in ("noisy_dts", "dts_active_5pct", "dts_random_5pct")):
        dts, pool = train_variant(run, base, "noisy_dts", world, log)
        score("noisy_dts", dts, 0)
        t0 = time.perf_counter()
        label_round(open_frames(dts, "train", load_images=True, load_gt=False), open_cache(dts),
                    LabelStore(dts.store_path, dts.network.grid, create=True), 0, dts.network, dts.dts,
                    checkpoint_path(dts, 0), resolve_device(dts.device), dts, progress=False)
        log(f"labelled the pool in {time.perf_counter() - t0:.0f} s")
        r = evaluate_round(LabelStore.open(dts.store_path), 0, world, (dts.dts.drop_quantile,), progress=False)
        results["pseudo_labels"] = {"miou": r["scores"].as_dict()["miou"], "geometric_iou": r["scores"].as_dict()["geometric_iou"],
                                    "per_class": r["scores"].as_dict()["per_class_iou"], "thresholded": r["curve"][0]}
        log(f"pseudo-labels (teacher + LiDAR, pool): mIoU {results['pseudo_labels']['miou']}")
        out.write_text(json.dumps(results, indent=1))
        scores = score_pool(dts, 0, progress=False)
        budget = max(1, round(0.05 * len(scores.tokens)))
        for name, strategy in (("dts_active_5pct", "auto"), ("dts_random_5pct", "random")):
            if name not in wanted:
                continue
            folder = run / name
            shutil.rmtree(folder, ignore_errors=True)
            (folder / "round_0" / "train").mkdir(parents=True)
            shutil.copyfile(checkpoint_path(dts, 0), folder / "round_0" / "train" / "checkpoint.pt")
            recipe = replace(dts, name=name, out=str(folder),
                             train=replace(dts.train, steps=args.round1_steps, warmup_steps=min(dts.train.warmup_steps, args.round1_steps)))
            picks, used = select_frames(scores.candidates, scores.features, scores.features[:0],
                                        SelectionConfig(strategy=strategy, budget=budget, per_scene_cap=1), 0, len(scores.tokens))
            oracle_labels(recipe, scores.tokens, scores.scenes, [(p.candidate.scene, p.candidate.token) for p in picks], world)
            train_round(recipe, 1, progress=False)
            score(name, recipe, 1)
            results[name]["selected"] = [p.candidate.token for p in picks]
            results[name]["strategy"] = used
            out.write_text(json.dumps(results, indent=1))
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--world", default=None)
    ap.add_argument("--synth", default="8x8")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--round1-steps", type=int, default=750)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seed", type=int, default=0, help="training seed of every variant (the world stays the same)")
    ap.add_argument("--gpus", type=int, default=None, help="processes, one per GPU (default: every visible GPU)")
    ap.add_argument("--report", action="store_true", help="only merge the results so far into the table and curves")
    ap.add_argument("--group", default=None, help=argparse.SUPPRESS)  # internal: this process runs one group
    ap.add_argument("--micro", action="store_true")
    args = ap.parse_args()
    if args.micro:
        args.synth, args.steps, args.round1_steps = "3x2", 2, 2
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    world = make_world(Path(args.world) if args.world else run / "world", args.synth, args.micro)
    scenes = sorted(p.name for p in (world / "gts").iterdir())
    n_val = 1 if len(scenes) < 6 else 2
    base = base_recipe(run, world, scenes[-1], args.steps, args.micro)
    base["data"]["val_scenes"] = scenes[-n_val:]
    base["train"]["seed"] = args.seed
    wanted = args.variants.split(",")
    unknown = set(wanted) - set(VARIANTS) - set(DIAGNOSTICS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {VARIANTS + DIAGNOSTICS}")
    if args.group is not None:  # a child process: its GPU is the only one it sees
        run_group(run, base, world, wanted, args, args.group)
        return
    gpus = args.gpus if args.gpus is not None else max(1, torch.cuda.device_count())
    groups = variant_groups(wanted, gpus)
    failed: list[int] = []
    if args.report:
        groups = []
    for f in run.glob("results.*.json") if not args.report else ():
        f.unlink()
    # the caches every variant reads, written once before the processes start
    for variant in ("render_noisy", "render_exact") if groups else ():
        prepared_variant(run, base, variant)
    if len(groups) == 1:
        run_group(run, base, world, groups[0], args, "0")
    elif groups:
        cmds = [[sys.executable, __file__, str(run), "--world", str(world), "--steps", str(args.steps),
                 "--round1-steps", str(args.round1_steps), "--seed", str(args.seed), "--variants", ",".join(group), "--group", str(i),
                 *(["--micro"] if args.micro else [])] for i, group in enumerate(groups)]
        failed += run_per_gpu(cmds, [str(i) for i in range(max(1, torch.cuda.device_count()))])
        if failed:
            print(f"groups {failed} failed; the table holds what finished", flush=True)
    results: dict[str, dict] = {}
    for f in sorted(run.glob("results.*.json")):
        results.update(json.loads(f.read_text()))
    (run / "results.json").write_text(json.dumps(results, indent=1))
    _curves(results, run / "training_curves.png")
    upper = (results.get("3d_supervised") or {}).get("miou")
    print(f"\nvalidation scenes {base['data']['val_scenes']}; {args.steps} steps per variant (+{args.round1_steps} for round 1)")
    print(f"{'variant':<28}{'mIoU':>8}{'geo IoU':>9}{'vs 3D':>8}")
    for name in (*VARIANTS, *DIAGNOSTICS, "pseudo_labels"):
        if name in results:
            m, g = results[name]["miou"], results[name]["geometric_iou"]
            # the pseudo-labels are scored on the training pool, not the validation scenes: no ratio
            ratio = f"{m / upper:.2f}" if upper and m is not None and name != "pseudo_labels" else "-"
            print(f"{name:<28}{m if m is not None else float('nan'):>8.2f}{g if g is not None else float('nan'):>9.2f}{ratio:>8}")
    if failed:
        sys.exit(1)


def _curves(results: dict, path: Path) -> None:
    from autolabel.report.figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        hist = Path(r.get("history", "")) if isinstance(r, dict) else None
        if not hist or not hist.is_file():
            continue
        rows = {}
        for line in hist.read_text().splitlines():
            row = json.loads(line)
            rows[row["step"]] = row["loss"]  # after a resume the last line of a step counts
        steps = sorted(rows)
        ax.plot(steps, [rows[s] for s in steps], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
