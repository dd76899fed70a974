"""Which voxels a small manual budget should buy (issue 21): the exported dataset's quality when N% of the pool's
voxels are annotated, by how they are chosen. No network: the pseudo-labels are evidence fusion's (the pool's
fused labels of a `benchmarks/quality.py` run with the `fusion` variant, RUN/fusion_noisy.zarr), and the
scores that rank frames and tiles are the fused labels' own (`selection.strategy: fusion`,
`autolabel.active.pool.fusion_pool`), so everything here runs on the CPU in a few minutes.

Ways of choosing, each spending the same voxels (N% of the pool's keyframes x the grid's voxels):
  frames_stratified  whole keyframes, scene-stratified random, at most one per scene (`auto` for frames)
  frames_fusion      whole keyframes with the highest fused-label uncertainty, at most one per scene
  tiles_random       BEV tiles (selection.region_size) at random, at most 2 keyframes per scene
  tiles_fusion       BEV tiles with the highest fused-label uncertainty, at most 2 keyframes per scene (`auto`
                     for tiles of a run that fuses)
The oracle annotator labels the choice with the world's exact labels; the round is exported as `autolabel run`
exports it (`export_occ3d`, manual labels carried through their scenes as `rounds.export_propagate` says,
default static_free) and scored against the exact ground truth within its mask_camera.

    python benchmarks/quality.py RUN [--test] --synth 40x4 --steps 1 --procs 1 --variants fusion
    python benchmarks/selection_export.py RUN [--test] [--percent 5] [--seeds 0,1,2]

Random ways are drawn once per seed; the fusion ways are deterministic (one row). Tune on the development
world only; the test world (--test) is for the reported table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from active import fused_label_pool, select_share  # noqa: E402
from carried_export import add_run_arguments, fused_run, run_one  # noqa: E402

from autolabel.active.config import PROPAGATE_MODES  # noqa: E402
from autolabel.data.nuscenes import NuScenesFrames  # noqa: E402
from autolabel.store.labels import LabelStore  # noqa: E402

WAYS = ("frames_stratified", "frames_fusion", "tiles_random", "tiles_fusion")


def save(path: Path, results: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)


def choose(way: str, pool, frames_worth: int, grid_voxels: int, seed: int) -> tuple[list[str], dict, int]:
    """The annotated keyframes, their tiles' bounds (token -> bounds; empty for whole keyframes) and the voxels."""
    unit, strategy = way.split("_")
    picks, _, voxels = select_share(
        pool, "frame" if unit == "frames" else "region", strategy, frames_worth, grid_voxels, seed
    )
    tiles = {p.candidate.token: [pool.regions.bounds(t) for t in p.tiles] for p in picks if p.tiles}
    return [p.candidate.token for p in picks], tiles, voxels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(ap)
    ap.add_argument("--percent", default="5", help="shares of the pool's voxels annotated, comma-separated")
    ap.add_argument("--seeds", default="0,1,2", help="draws of the random ways")
    ap.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated, of {WAYS}")
    ap.add_argument("--propagate", default="static_free", choices=PROPAGATE_MODES, help="rounds.export_propagate")
    args = ap.parse_args()
    ways = args.ways.split(",")
    if set(ways) - set(WAYS):
        raise SystemExit(f"unknown ways {sorted(set(ways) - set(WAYS))}; choose from {WAYS}")
    run, seed, world, fused_path = fused_run(args)
    fused = LabelStore.open(fused_path)
    rnd = fused.round(0)
    scene_of = fused.scene_of(rnd)
    pool_frames = NuScenesFrames(
        world, "v1.0-synth", load_images=False, load_gt=False, grid=fused.grid, scenes=sorted(set(scene_of.values()))
    )
    if pool_frames.tokens != rnd.tokens:
        raise SystemExit(f"{fused_path}: its frames are not the pool's scenes' keyframes in the dataset's order")
    frames = NuScenesFrames(world, "v1.0-synth", load_images=False, grid=fused.grid)  # for carrying
    grid_voxels = int(np.prod(fused.grid.shape))
    pool = fused_label_pool(pool_frames, fused, fused)
    out = run / f"selection_export_{seed}.json"
    results: dict = {
        "world": str(world),
        "world_seed": seed,
        "pool_frames": len(rnd.tokens),
        "propagate": args.propagate,
        "rows": [],
    }
    if out.is_file():  # another invocation's rows (other budgets): kept, and not computed again
        before = json.loads(out.read_text())
        if before.get("propagate", "static_free") != args.propagate:
            raise SystemExit(f"{out} holds rows exported with --propagate {before.get('propagate')}; move it away")
        results["rows"] = before["rows"]
    done = {(r["percent"], r["way"], r["seed"]) for r in results["rows"]}
    with tempfile.TemporaryDirectory() as tmp:
        if (0, "none", None) not in done:
            base = run_one(fused_path, world, frames, [], "none", Path(tmp))
            results["rows"].append({"percent": 0, "way": "none", "seed": None, **base})
            print(f"none: mIoU {base['miou']}", flush=True)
        for pct in (float(p) for p in args.percent.split(",")):
            frames_worth = max(1, round(pct / 100 * len(rnd.tokens)))
            for way in ways:
                for s in [0] if way.endswith("fusion") else [int(v) for v in args.seeds.split(",")]:
                    if (pct, way, s) in done:
                        continue
                    picks, tiles, voxels = choose(way, pool, frames_worth, grid_voxels, s)
                    r = run_one(fused_path, world, frames, picks, args.propagate, Path(tmp), tiles or None)
                    row = {"percent": pct, "way": way, "seed": s, "keyframes": len(picks), "voxels": voxels, **r}
                    results["rows"].append(row)
                    print(
                        f"{pct:g}% {way} seed {s}: mIoU {r['miou']} geo {r['geometric_iou']} "
                        f"({len(picks)} keyframes, {voxels} voxels)",
                        flush=True,
                    )
                    save(out, results)  # after every row: a rerun resumes
    save(out, results)
    print_table(results)
    figure(results, out.with_suffix(".png"))


def print_table(results: dict) -> None:
    rows = results["rows"]
    print(
        f"\n{results['world']} (seed {results['world_seed']}), {results['pool_frames']} pool keyframes; pseudo-labels:"
        " evidence fusion; manual labels carried as rounds.export_propagate; scored within the exact mask_camera;"
        " mean +- half the spread over draws"
    )
    print(f"{'annotated':<12}{'way':<20}{'keyframes':>10}{'mIoU':>15}{'geo IoU':>15}{'kept %':>15}")
    keys = sorted({(r["percent"], r["way"]) for r in rows}, key=lambda k: (k[0], (("none",) + WAYS).index(k[1])))
    for pct, way in keys:
        sel = [r for r in rows if r["percent"] == pct and r["way"] == way]

        def cell(key: str, scale: float = 1.0) -> str:
            v = np.array([r[key] for r in sel], float) * scale
            return f"{v.mean():.2f}" + (f" +- {(v.max() - v.min()) / 2:.2f}" if len(v) > 1 else "")

        kf = f"{np.mean([r.get('keyframes', 0) for r in sel]):.0f}"
        print(
            f"{'none' if pct == 0 else f'{pct:g}%':<12}{way:<20}{kf:>10}{cell('miou'):>15}{cell('geometric_iou'):>15}"
            f"{cell('kept_share', 100):>15}"
        )


def figure(results: dict, path: Path) -> None:
    """The exported labels' mIoU against the share of the pool's voxels annotated, one line per way (error bars:
    half the spread over draws), fusion alone as a line."""
    from autolabel.report.figures import pyplot, save_figure

    plt = pyplot()
    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in rows:
        if r["way"] == "none":
            ax.axhline(r["miou"], color="grey", lw=1, label="fused labels alone (no annotation)")
    for way in WAYS:
        pcts = sorted({r["percent"] for r in rows if r["way"] == way})
        if not pcts:
            continue
        vals = [[r["miou"] for r in rows if r["way"] == way and r["percent"] == p] for p in pcts]
        half = [(max(v) - min(v)) / 2 for v in vals]
        ax.errorbar(pcts, [np.mean(v) for v in vals], yerr=half, marker="o", capsize=3, label=way)
    pcts = sorted({r["percent"] for r in rows if r["way"] != "none"})
    ax.set_xscale("log")
    ax.set_xticks(pcts)
    ax.set_xticklabels([f"{p:g}%" for p in pcts])
    ax.set_xlabel("share of the pool annotated (its keyframes' voxels)")
    ax.set_ylabel("exported labels' mIoU (exact mask_camera)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{Path(results['world']).name}: {results['pool_frames']} pool keyframes", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    main()
