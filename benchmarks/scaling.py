"""Scaling on real data (issue 11): `autolabel train` and `autolabel label` on 1 GPU and under torchrun on
all GPUs of the machine, and K single-GPU trainings sharing one card. One table.

    python benchmarks/scaling.py RUN [--world DIR | --synth 4x8] [--steps 200] [--batch 2] [--concurrent 3]

The same recipe (synthetic world, 224x400 input, Occ3D grid, 16,384 rays per frame, rendering + DTS
losses) runs as the user would run it: the CLI in a subprocess, wall time measured around it. Training
speed is also read from history.jsonl (steps after the first 20, so start-up and DataLoader warm-up do not
count). Frames per GPU per step stay fixed (`--batch`), so N GPUs train N x batch frames per step;
scaling efficiency = frames/s on N GPUs / (N x frames/s on one). Labelling shards frames by rank.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from active import base_recipe, make_world, run_per_gpu, write_recipe  # noqa: E402


def cli(args: list[str], gpus: int, log: Path | None = None) -> float:
    """Run `autolabel ARGS` (under torchrun when gpus > 1); returns wall seconds."""
    if gpus > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(gpus),
            "-m",
            "autolabel.cli",
            *args,
        ]
    else:
        cmd = [sys.executable, "-m", "autolabel.cli", *args]
    t0 = time.perf_counter()
    with open(log or os.devnull, "w") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}); log {log}")
    return time.perf_counter() - t0


def steady_step_s(history: Path, skip: int = 20) -> float:
    rows = [json.loads(x) for x in history.read_text().splitlines()]
    rows = [r for r in rows if r["step"] > skip]
    return (rows[-1]["seconds"] - rows[0]["seconds"]) / (rows[-1]["step"] - rows[0]["step"])


def recipe_for(run: Path, name: str, base: dict) -> Path:
    r = json.loads(json.dumps(base))
    r["name"], r["out"] = name, str(run / name)
    return write_recipe(run, name, r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--world", default=None)
    ap.add_argument("--synth", default="4x8")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--concurrent", type=int, default=3, help="single-GPU trainings sharing GPU 0 (0 = skip)")
    args = ap.parse_args()
    n_gpu = torch.cuda.device_count()
    if n_gpu < 1:
        raise SystemExit("scaling.py needs a GPU")
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    world = make_world(Path(args.world) if args.world else run / "world", args.synth, False)
    scenes = sorted(p.name for p in (world / "gts").iterdir())
    base = base_recipe(run, world, scenes[-1], args.steps, False)
    base["data"].pop("val_scenes")
    base["train"].update(batch_size=args.batch, checkpoint_every=args.steps)
    base["dts"]["start_step"] = 0  # the teacher's pseudo-label pass is part of every step, as in a real round
    rows = []
    one = recipe_for(run, "gpu1", base)
    cli(["supervise", str(one)], 1, log=run / "supervise.log")
    for gpus in sorted({1, n_gpu}):
        recipe = recipe_for(run, f"gpu{gpus}", base)
        shutil.rmtree(run / f"gpu{gpus}", ignore_errors=True)
        wall = cli(["train", str(recipe)], gpus, log=run / f"train{gpus}.log")
        step = steady_step_s(run / f"gpu{gpus}" / "round_0" / "train" / "history.jsonl")
        rows.append(("train", gpus, 1, wall, args.batch * gpus / step, step * 1e3))
        print(f"train on {gpus} GPU(s): {wall:.0f} s wall, {step * 1e3:.1f} ms/step", flush=True)
        wall = cli(["label", str(recipe)], gpus, log=run / f"label{gpus}.log")
        n = len(list((world / "gts").rglob("labels.npz")))
        rows.append(("label", gpus, 1, wall, n / wall, float("nan")))
        print(f"label on {gpus} GPU(s): {wall:.0f} s wall for {n} frames", flush=True)
    if args.concurrent > 1:
        cmds = []
        for j in range(args.concurrent):
            shutil.rmtree(run / f"share{j}", ignore_errors=True)
            cmds.append([sys.executable, "-m", "autolabel.cli", "train", str(recipe_for(run, f"share{j}", base))])
        t0 = time.perf_counter()
        if run_per_gpu(cmds, ["0"], [run / f"share{j}.log" for j in range(args.concurrent)]):
            raise SystemExit("a concurrent training failed; see share*.log")
        wall = time.perf_counter() - t0
        steps = [
            steady_step_s(run / f"share{j}" / "round_0" / "train" / "history.jsonl") for j in range(args.concurrent)
        ]
        fps = sum(args.batch / s for s in steps)
        rows.append(
            (f"train x{args.concurrent} on GPU 0", 1, args.concurrent, wall, fps, sum(steps) / len(steps) * 1e3)
        )
    base_fps = {kind: fps for kind, g, _, _, fps, _ in rows if g == 1 and kind in ("train", "label")}
    print(
        f"\n{torch.cuda.get_device_name()} x {n_gpu}; world {args.synth}, {args.steps} steps, batch {args.batch} per "
        "GPU"
    )
    print(f"{'job':<20}{'GPUs':>5}{'wall s':>8}{'frames/s':>10}{'ms/step':>9}{'efficiency':>11}")
    for kind, g, k, wall, fps, ms in rows:
        ref = base_fps.get(kind.split(" ")[0] if k == 1 else "train")
        eff = fps / (g * ref) if ref and k == 1 else fps / ref if ref else float("nan")
        print(f"{kind:<20}{g:>5}{wall:>8.0f}{fps:>10.2f}{ms:>9.1f}{eff:>11.2f}")


if __name__ == "__main__":
    main()
