"""What a small manual budget buys in the exported dataset (issue 21): the pool's pseudo-labels, the annotated
keyframes' manual labels and, with `rounds.propagate`, what those carry to the other keyframes of their scenes,
exported as Occ3D files (`export_occ3d`, as `autolabel run` exports a round) and scored against the synthetic
world's exact ground truth. No network: the pseudo-labels are evidence fusion's (the pool's fused labels of a
`benchmarks/quality.py` run with the `fusion` variant, RUN/fusion_noisy.zarr), which need no training.

Per share of the pool annotated (whole keyframes, at most one per scene, scenes drawn at random with --seeds;
the oracle annotator's exact labels), and per way of using them:
  none          the pseudo-labels alone (no annotation)
  manual        the annotated keyframes hold their manual labels, every other keyframe its pseudo-labels
  static        + the static classes carried to the scene's other keyframes (rounds.propagate: static)
  static_free   + their free voxels too (static_free)
Scores of the exported files within the ground truth's mask_camera: mIoU and geometric IoU of every label as
exported (all pool keyframes; and the keyframes that are not annotated, where only carrying can change
anything), and the share of mask_camera kept at the export threshold (mask_confident) with its mIoU.

    python benchmarks/quality.py RUN [--test] --synth 40x4 --steps 1 --procs 1 --variants fusion
    python benchmarks/carried_export.py RUN [--test] [--percent 5,10] [--seeds 0,1,2]

Tune on the development world only; the test world (--test, as for quality.py) is for the reported table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from active import oracle_into  # noqa: E402

from autolabel.active.config import PROPAGATE_MODES  # noqa: E402
from autolabel.active.propagate import PropagatedLabels  # noqa: E402
from autolabel.data.nuscenes import NuScenesFrames  # noqa: E402
from autolabel.data.occ3d import labels_path, read_labels  # noqa: E402
from autolabel.store.export import export_occ3d  # noqa: E402
from autolabel.store.labels import LabelStore  # noqa: E402
from autolabel.store.manual import manual_labels  # noqa: E402
from occnet.metrics import OccupancyMetric  # noqa: E402

WAYS = ("none", "manual", *PROPAGATE_MODES[1:])
DROP_QUANTILE = 0.3  # the recipes' rounds.export_drop_quantile


def annotated_keyframes(tokens: list[str], scenes: list[str], n: int, seed: int) -> list[str]:
    """n keyframes, at most one per scene: n scenes drawn at random, one keyframe of each at random."""
    rng = np.random.default_rng(seed)
    names = sorted(set(scenes))
    if n > len(names):
        raise SystemExit(f"{n} annotated keyframes at one per scene need {n} scenes; the pool has {len(names)}")
    out = []
    for scene in rng.choice(names, size=n, replace=False):
        own = [t for t, s in zip(tokens, scenes) if s == scene]
        out.append(own[rng.integers(len(own))])
    return out


def score_export(out: Path, world: Path, tokens: list[str], scenes: list[str], annotated: set[str], grid) -> dict:
    """The exported files against the exact ground truth, within its mask_camera."""
    every, others, kept_m = OccupancyMetric(), OccupancyMetric(), OccupancyMetric()
    kept = total = 0
    for token, scene in zip(tokens, scenes):
        gt = read_labels(labels_path(world, scene, token), grid)
        got = read_labels(labels_path(out, scene, token), grid)
        cam = gt.mask_camera.astype(bool)
        every.update(got.semantics, gt.semantics, cam)
        if token not in annotated:
            others.update(got.semantics, gt.semantics, cam)
        keep = cam & got.mask_confident.astype(bool)
        kept_m.update(got.semantics, gt.semantics, keep)
        kept, total = kept + int(keep.sum()), total + int(cam.sum())
    a, o, k = every.compute().as_dict(), others.compute().as_dict(), kept_m.compute().as_dict()
    return {
        "miou": a["miou"],
        "geometric_iou": a["geometric_iou"],
        "miou_not_annotated": o["miou"],
        "geometric_iou_not_annotated": o["geometric_iou"],
        "kept_share": kept / max(total, 1),
        "kept_miou": k["miou"],
        "per_class_iou": a["per_class_iou"],
    }


def run_one(
    fused: Path, world: Path, frames: NuScenesFrames, picks: list[str], way: str, tmp: Path, tiles: dict | None = None
) -> dict:
    """Export the pool's fused labels with `picks` annotated (used as `way` says; `tiles`: token -> the BEV tiles'
    bounds annotated in that keyframe, whole keyframes otherwise) and score the files."""
    store_path = tmp / "labels.zarr"
    shutil.rmtree(store_path, ignore_errors=True)
    shutil.copytree(fused, store_path)
    store = LabelStore.open(store_path)
    rnd = store.round(0)
    tokens, scenes = list(rnd.tokens), [store.scene_of(rnd)[t] for t in rnd.tokens]
    if way != "none":
        oracle_into(store_path, store.grid, tokens, scenes, [(frames.scene_of(t), t) for t in picks], world, tiles)
    carried = None
    if way in PROPAGATE_MODES[1:]:
        carried = PropagatedLabels(manual_labels(store_path, store.grid), frames, store.grid, way)
    out = tmp / "export"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    s = export_occ3d(store, 0, out, DROP_QUANTILE, progress=False, carried=carried)
    seconds = time.perf_counter() - t0
    annotated = set(picks) if way != "none" else set()
    r = score_export(out, world, tokens, scenes, annotated, store.grid)
    return r | {"frames_carried": s["frames_carried"], "frames_manual": s["frames_manual"], "export_s": seconds}


def add_run_arguments(ap: argparse.ArgumentParser) -> None:
    """The arguments naming a quality.py run's world and fused labels (`fused_run` reads them)."""
    ap.add_argument("run", help="a benchmarks/quality.py run folder holding the world and fusion_noisy.zarr")
    ap.add_argument("--test", action="store_true", help="the test world (seed 131), only for the reported table")
    ap.add_argument("--world-seed", type=int, default=None, help="default 31, or 131 with --test")


def fused_run(args: argparse.Namespace) -> tuple[Path, int, Path, Path]:
    """(run folder, world seed, world, fused store) of `add_run_arguments`' arguments; SystemExit if either is
    missing."""
    run = Path(args.run)
    seed = args.world_seed if args.world_seed is not None else (131 if args.test else 31)
    world, fused = run / f"world_{seed}", run / "fusion_noisy.zarr"
    if not (world / "v1.0-synth").is_dir() or not (fused / "zarr.json").is_file():
        raise SystemExit(f"{run}: want world_{seed}/ and fusion_noisy.zarr (quality.py RUN --variants fusion)")
    return run, seed, world, fused


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(ap)
    ap.add_argument("--percent", default="5,10", help="shares of the pool annotated, comma-separated")
    ap.add_argument("--seeds", default="0,1,2", help="draws of the annotated keyframes")
    args = ap.parse_args()
    run, seed, world, fused = fused_run(args)
    store = LabelStore.open(fused)
    rnd = store.round(0)
    tokens = list(rnd.tokens)
    scenes = [store.scene_of(rnd)[t] for t in tokens]
    frames = NuScenesFrames(world, "v1.0-synth", load_images=False, grid=store.grid)
    results: dict = {"world": str(world), "world_seed": seed, "pool_frames": len(tokens), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = run_one(fused, world, frames, [], "none", Path(tmp))
        results["rows"].append({"percent": 0, "seed": None, "way": "none", **base})
        for pct in (float(p) for p in args.percent.split(",")):
            n = max(1, round(pct / 100 * len(tokens)))
            for s in (int(v) for v in args.seeds.split(",")):
                picks = annotated_keyframes(tokens, scenes, n, s)
                for way in WAYS[1:]:
                    r = run_one(fused, world, frames, picks, way, Path(tmp))
                    results["rows"].append({"percent": pct, "seed": s, "way": way, "annotated": n, **r})
                    print(f"{pct:g}% ({n} keyframes) draw {s} {way}: {json.dumps(r)}", flush=True)
    (run / f"carried_export_{seed}.json").write_text(json.dumps(results, indent=1))
    print_table(results)


def print_table(results: dict) -> None:
    rows = results["rows"]
    print(
        f"\n{results['world']} (seed {results['world_seed']}), {results['pool_frames']} pool keyframes; pseudo-labels:"
        " evidence fusion; exported at drop quantile 0.3; scored within the exact mask_camera; mean +- half the "
        "spread over draws"
    )
    print(f"{'annotated':<18}{'way':<13}{'mIoU':>15}{'geo IoU':>15}{'mIoU others':>15}{'kept %':>15}{'kept mIoU':>15}")
    keys = sorted({(r["percent"], r["way"]) for r in rows}, key=lambda k: (k[0], WAYS.index(k[1])))
    for pct, way in keys:
        sel = [r for r in rows if r["percent"] == pct and r["way"] == way]

        def cell(key: str, scale: float = 1.0) -> str:
            v = np.array([r[key] for r in sel], float) * scale
            return f"{v.mean():.2f}" + (f" +- {(v.max() - v.min()) / 2:.1f}" if len(v) > 1 else "")

        label = "none" if pct == 0 else f"{pct:g}% ({sel[0]['annotated']} kf)"
        print(
            f"{label:<18}{way:<13}{cell('miou'):>15}{cell('geometric_iou'):>15}{cell('miou_not_annotated'):>15}"
            f"{cell('kept_share', 100):>15}{cell('kept_miou'):>15}"
        )


if __name__ == "__main__":
    main()
