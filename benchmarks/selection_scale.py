"""Active selection at nuScenes scale (issue 21): seconds and peak host memory of each strategy.

A synthetic feature pool the size of nuScenes' training split: 35,000 frames (875 scenes x 40 keyframes)
with 2,048-number L2-normalised pooled BEV features (a scene centre plus per-frame variation, so frames
of a scene cluster as real ones do), 1,500 of them already labelled, the other 33,500 candidates with
random uncertainty scores; budget 280 frames at most 2 per scene (recipes/nuscenes_active_rounds.yaml).
Each strategy runs in a fresh process, so its peak resident memory (ru_maxrss, which includes Python,
torch and the pool itself) is its own; "pool MB" is that peak before the selection started (imports and
the pool: 275 MB of candidate features at full size).

    python benchmarks/selection_scale.py [--smoke] [--device cuda] [--strategies coreset,hybrid]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("random", "stratified", "entropy", "coreset", "kmeans", "hybrid")
FULL = {"frames": 35_000, "dim": 2048, "labelled": 1500, "per_scene": 40, "budget": 280}
SMOKE = {"frames": 2_000, "dim": 256, "labelled": 100, "per_scene": 40, "budget": 20}


def rss_mb() -> float:
    """This process's peak resident set so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_pool(size: dict, seed: int = 0):
    """(candidates, candidate features (N, D) float32, labelled features (M, D) float32)."""
    from autolabel.active.select import Candidate

    rng = np.random.default_rng(seed)
    n, dim, per = size["frames"], size["dim"], size["per_scene"]
    scenes = np.arange(n) // per
    centres = rng.standard_normal((scenes.max() + 1, dim), dtype=np.float32)
    labelled = np.zeros(n, bool)
    labelled[rng.choice(n, size["labelled"], replace=False)] = True
    out = {
        True: np.empty((int(labelled.sum()), dim), np.float32),
        False: np.empty((n - int(labelled.sum()), dim), np.float32),
    }
    filled = {True: 0, False: 0}
    for a in range(0, n, 4096):  # in chunks, so that building the pool does not set the memory peak
        f = centres[scenes[a : a + 4096]] + 0.6 * rng.standard_normal(
            (len(scenes[a : a + 4096]), dim), dtype=np.float32
        )
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        for flag in (True, False):
            rows = f[labelled[a : a + 4096] == flag]
            out[flag][filled[flag] : filled[flag] + len(rows)] = rows
            filled[flag] += len(rows)
    unc = rng.random(n)
    cands = [
        Candidate(f"frame{i:06d}", f"scene{scenes[i]:04d}", {"uncertainty": float(unc[i])})
        for i in np.flatnonzero(~labelled)
    ]
    return cands, out[False], out[True]


def run_one(strategy: str, size: dict, device: str | None) -> dict:
    """In this process: build the pool, select once, report time and memory."""
    from autolabel.active.config import SelectionConfig
    from autolabel.active.select import select_frames

    cands, feats, lab = synthetic_pool(size)
    before = rss_mb()
    cfg = SelectionConfig(strategy=strategy, budget=size["budget"], per_scene_cap=2)
    t0 = time.perf_counter()
    picks, used = select_frames(
        cands, feats, lab, cfg, n_labelled=len(lab), pool_size=len(cands) + len(lab), device=device
    )
    seconds = time.perf_counter() - t0
    return {
        "strategy": used,
        "seconds": round(seconds, 2),
        "picked": len(picks),
        "pool_mb": round(before),
        "peak_mb": round(rss_mb()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="2,000 x 256 features, 100 labelled (a CI check of seconds)")
    ap.add_argument("--device", default=None, help="cuda / cuda:N for the distance products (default: CPU)")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process: one strategy, JSON out
    args = ap.parse_args()
    size = SMOKE if args.smoke else FULL
    if args.one:
        print(json.dumps(run_one(args.one, size, args.device)))
        return 0
    n, m, dim = size["frames"] - size["labelled"], size["labelled"], size["dim"]
    print(
        f"pool {size['frames']:,} frames x {dim:,} features, {m:,} labelled, {n:,} candidates, budget "
        f"{size['budget']} frames, <= 2 per scene; device {args.device or 'cpu'}"
    )
    print(f"(the pre-issue-21 core-set distance array would be {n * m * dim * 8 / 1e9:,.1f} GB)")
    print("| strategy | seconds | frames picked | pool MB | peak MB |\n|---|---:|---:|---:|---:|")
    for s in args.strategies.split(","):
        cmd = (
            [sys.executable, __file__, "--one", s]
            + (["--smoke"] if args.smoke else [])
            + (["--device", args.device] if args.device else [])
        )
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            return 1
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {s} | {r['seconds']:.2f} | {r['picked']} | {r['pool_mb']:,} | {r['peak_mb']:,} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
