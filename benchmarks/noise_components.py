"""Where fusion's pseudo-labels lose to exact 2D labels, by the part of noise model v2 (issue 20).

One synthetic world per row, the same scenes and sensors (one seed), whose noisy 2D label maps leave one part of
noise model v2 (autolabel/synth/noise.py, `NoiseRates`) out; each world's pool is fused by `benchmarks/quality.py`'s
`fusion` variant (the base world also by `fusion_exact`) and scored against the exact ground truth. The gain of a
row over the first is what that part of the noise costs fusion (the parts interact: the gains need not add up).

    python benchmarks/noise_components.py RUN [--synth 6x4] [--seed 31] [--test-scenes 2] [--rows base,naming,...]

Rows: base (noise model v2 as is), naming (the classifier's signal x 100: names right, confidences near 1), edges
(no boundary moves, no spills), misses (no small / thin / far misses), merges (no under-segmentation).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autolabel.synth.noise import NoiseRates  # noqa: E402
from autolabel.synth.writer import SynthConfig, write_dataset  # noqa: E402
from kernels.grid import GridSpec  # noqa: E402

ROWS = {
    "base": {},
    "naming": {"signal": NoiseRates().signal * 100},
    "edges": {"boundary": 0.0, "spill": 0.0},
    "misses": {"miss_small": 0.0, "miss_thin": 0.0, "miss_far": 0.0},
    "merges": {"merge": 0.0},
}


def fused_pool(run: Path, synth: str, seed: int, test_scenes: int, overrides: dict, variants: str) -> dict:
    """Pseudo-label scores by variant of the world whose noise leaves `overrides` out (generated into run first:
    quality.py uses a world it finds there)."""
    world = run / f"world_{seed}"
    if not (world / "v1.0-synth").is_dir():
        scenes, frames = (int(v) for v in synth.split("x"))
        cfg = SynthConfig(scenes, frames, seed, (225, 400), noise_rates=replace(NoiseRates(), **overrides))
        write_dataset(world, cfg, GridSpec(), progress=False, workers=min(scenes, os.cpu_count() or 1))
    cmd = [sys.executable, str(Path(__file__).with_name("quality.py")), str(run), "--synth", synth]
    cmd += ["--world-seed", str(seed), "--test-scenes", str(test_scenes), "--steps", "1", "--variants", variants]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    results = json.loads((run / "results.json").read_text())["variants"]
    return {v: results[v]["pseudo_labels"] for v in variants.split(",")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--synth", default="6x4", help="SCENESxFRAMES")
    ap.add_argument("--seed", type=int, default=31, help="the world's seed (the development world's by default)")
    ap.add_argument("--test-scenes", type=int, default=2, help="held-out scenes (not fused: the rest is the pool)")
    ap.add_argument("--rows", default=",".join(ROWS))
    args = ap.parse_args()
    rows = args.rows.split(",")
    unknown = set(rows) - set(ROWS)
    if unknown:
        ap.error(f"unknown rows {sorted(unknown)}; choose from {', '.join(ROWS)}")
    base = None
    print(f"| noisy 2D labels (world {args.synth}, seed {args.seed}) | PL mIoU | PL geo IoU | gain |")
    print("|---|---:|---:|---:|")
    for row in rows:
        variants = "fusion,fusion_exact" if row == "base" else "fusion"
        scores = fused_pool(Path(args.run) / row, args.synth, args.seed, args.test_scenes, ROWS[row], variants)
        pl = scores["fusion"]
        base = pl["miou"] if row == "base" else base
        gain = "-" if base is None or row == "base" else f"{pl['miou'] - base:+.2f}"
        print(f"| {row} | {pl['miou']:.2f} | {pl['geometric_iou']:.2f} | {gain} |", flush=True)
        if row == "base":
            exact = scores["fusion_exact"]
            print(
                f"| exact 2D labels | {exact['miou']:.2f} | {exact['geometric_iou']:.2f} | "
                f"{exact['miou'] - pl['miou']:+.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
