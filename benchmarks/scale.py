"""Scale benchmark (issue 23 part 6): the loop's data path at nuScenes resolution, per stage, one table.

A synthetic world at nuScenes resolution (six 1600x900 cameras, 10 LiDAR sweeps per keyframe: the keyframe
sweep and 9 earlier ones) goes through the stages of a label-free round as `autolabel run` does them, with
the nuScenes recipe (recipes/nuscenes_label_free.yaml: network input, batch sizes, rays, losses, DTS), the
2D labels from the precomputed provider (the foundation-model cost is excluded; providers_speed.py times it):
  1 supervision cache write    `supervise`: JPEG decoding, resizing, LiDAR depth maps from the sweeps, writes
  1b fusion                    `fuse_round` (the recipe's fusion stage): LiDAR of +-3 keyframes and their
                               sweeps, named by the cached 2D labels of every view; training and labelling read it.
                               Its cost grows with the window, which a scene of F keyframes cuts to at most F:
                               benchmarks/fusion_profile.py times it on scenes long enough for the whole window
  2 training                   `train_round`: steps with the real DataLoader over the cache (the trainer's
                               workers), rendering-only steps and steps with the DTS teacher; beside them the
                               same Trainer on random in-memory input of the same shapes, same steps
  3 labelling                  `label_round` with a freshly initialised network's checkpoint
  4 export                     `export_occ3d` to Occ3D labels.npz files
  5 store size and file count  the round's group of the label store, the cache, the export; extrapolated with
                               the shard layout the stores would have at full size (frames per shard file)
  6 memory                     peak host memory (the process tree, sampled) and peak GPU memory per stage
Warm-up is left out: cache writes, fusion and labelling run once on the first scene and once on the whole
world untimed (so that no timed call meets a batch shape first: cuDNN's autotuning, CUDA's lazy loading), then
--repeats times the pair: the first scene again and the whole world; a pair's steady per-frame cost is the
difference of its two calls over the difference of their frames (what a call pays once, such as the
DataLoader start, cancels), and the stage's is the median over pairs; each training phase drops its first
--warmup-steps steps; export is timed after an untimed export. Per-frame
costs are extrapolated to nuScenes trainval (34,149 keyframes), training to 12 epochs-equivalent (12 x 34,149
frames seen at the recipe's batch size, the recipe's share of DTS steps), and set against the issue's targets.
Device: CUDA when available, else the CPU (then training and labelling times are only indicative).
Results: OUT/scale_results.json (written after every stage) and OUT/scale_table.md.

    python benchmarks/scale.py RUN [--world DIR] [--scenes 2 --frames 4] [--steps 3 --warmup-steps 2] [--out DIR]
    python benchmarks/scale.py RUN --micro     # the CI-sized version: checks that the harness runs
RUN holds the world (RUN/world unless --world) and the stores; --out (default RUN) the results.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autolabel.data.nuscenes import NuScenesFrames  # noqa: E402
from autolabel.stages import train as train_round  # noqa: E402
from autolabel.stages.inputs import fused_labels, open_cache, open_frames  # noqa: E402
from autolabel.dts.label import label_round  # noqa: E402
from autolabel.provenance import recipe_record  # noqa: E402
from autolabel.fusion.label import fuse_round  # noqa: E402
from autolabel.dts.teacher import EMATeacher  # noqa: E402
from autolabel.recipe import load_recipe  # noqa: E402
from autolabel.store.frame_arrays import ArraySpec, frame_bytes, frames_per_shard  # noqa: E402
from autolabel.store.labels import LabelStore  # noqa: E402
from autolabel.store.export import export_occ3d  # noqa: E402
from autolabel.supervision.cache import supervise  # noqa: E402
from autolabel.supervision.providers import build_provider, resolve_device  # noqa: E402
from autolabel.network_input import FrameDataset  # noqa: E402
from occnet.network import OccupancyNetwork  # noqa: E402
from occnet.trainer import Trainer, default_workers  # noqa: E402

STAGES = ("supervise", "fuse", "train", "label", "export")
TRAINVAL = 34_149  # nuScenes v1.0-trainval keyframes
EPOCHS = 12
RECIPE = ROOT / "recipes" / "nuscenes_label_free.yaml"
VERSION = "v1.0-synth"
# the targets (one H200, nuScenes resolution)
TARGET_RATIO = 1.10  # training step with real data loading / on random input
TARGET_LABEL_FPS = 20.0
TARGET_EXPORT_FPS = 100.0  # on the 2-core machine
TARGET_ROUND_HOURS = 4.0  # training (12 epochs-equivalent) + labelling
TARGET_ROUND_FILES = 1000
MICRO_GRID = {"range_min": [-12.8, -12.8, -1.0], "range_max": [12.8, 12.8, 2.2], "voxel_size": 0.4}
MICRO_SET = [
    f"network.grid={json.dumps(MICRO_GRID)}",
    "network.image_size=[32, 64]",
    "network.depth_bins=8",
    "network.depth_max=25.0",
    "network.context_channels=8",
    "network.voxel_channels=8",
    "render.rays_per_frame=256",
    "train.batch_size=1",
    "dts.batch_size=1",
]


# ---- memory ---------------------------------------------------------------------------------------
def _process_tree(root_pid: int) -> set[int]:
    """`root_pid` and its descendants (DataLoader workers)."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    parent[int(d)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, todo = {root_pid}, [root_pid]
    while todo:
        p = todo.pop()
        for child, pp in parent.items():
            if pp == p and child not in tree:
                tree.add(child)
                todo.append(child)
    return tree


def _resident_bytes(pids: set[int]) -> int:
    """The processes' PSS summed (shared pages divided among the sharers) where the kernel reports it, else RSS."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("Pss:")) * 1024
        except (OSError, StopIteration, ValueError):
            try:
                with open(f"/proc/{p}/statm") as fh:
                    total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, ValueError):
                pass
    return total


class MemorySampler:
    """Peak host memory of this process tree while a stage runs (PSS sampled every `period` seconds, the
    tree looked up again every `rescan` samples: light enough not to slow the stage), and the peak GPU memory
    allocated by torch in this process."""

    def __init__(self, device: torch.device, period: float = 0.5, rescan: int = 4):
        self.device, self.period, self.rescan = device, period, rescan
        self.peak, self._stop, self._thread = 0, threading.Event(), None

    def _sample(self, i: int) -> None:
        if i % self.rescan == 0:
            self._pids = _process_tree(os.getpid())
        self.peak = max(self.peak, _resident_bytes(self._pids))

    def _run(self) -> None:
        i = 1
        while not self._stop.wait(self.period):
            self._sample(i)
            i += 1

    def __enter__(self) -> "MemorySampler":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._sample(0)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(0)

    def result(self) -> dict:
        gpu = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None
        return {
            "host_peak_bytes": self.peak,
            "gpu_peak_bytes": gpu,
            "main_rss_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }


# ---- files on disk --------------------------------------------------------------------------------
def tree_size(path: Path) -> tuple[int, int]:
    """(files, bytes) under `path`."""
    files = [p for p in Path(path).rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def group_at_scale(group_dir: Path, frames_now: int, frames_full: int) -> dict:
    """A FrameArrays group (label-store round or supervision cache) on disk now, and extrapolated to
    `frames_full` frames: bytes scale with the frames; data files are one per shard of S frames for every
    per-frame array, where S is what `frames_per_shard` gives the group's arrays at full size (a small
    world packs all its frames into one shard); `tokens` is one chunk; metadata one zarr.json per array and
    group."""
    files, size = tree_size(group_dir)
    arrays = {}
    for meta in sorted(group_dir.glob("*/zarr.json")):
        m = json.loads(meta.read_text())
        if m.get("node_type") == "array":
            arrays[meta.parent.name] = m
    per_frame = {n: m for n, m in arrays.items() if n != "tokens"}
    specs = [ArraySpec(n, tuple(m["shape"][1:]), m["data_type"], 0) for n, m in per_frame.items() if n != "done"]
    s_full = frames_per_shard(specs, frames_full)
    meta_files = len(list(group_dir.rglob("zarr.json")))
    data_full = len(per_frame) * math.ceil(frames_full / s_full) + 1  # + the tokens chunk
    shards_now = {n: m["chunk_grid"]["configuration"]["chunk_shape"][0] for n, m in per_frame.items()}
    return {
        "files": files,
        "bytes": size,
        "frames": frames_now,
        "bytes_per_frame": size / frames_now,
        "frames_per_shard_now": max(shards_now.values()) if shards_now else None,
        "frames_per_shard_full": s_full,
        "arrays_per_frame": len(per_frame),
        "files_full": data_full + meta_files,
        "bytes_full": size / frames_now * frames_full,
        # what a writer process (ShardWriter) holds at full size: one shard's frames, raw
        "writer_bytes_full": s_full * frame_bytes(specs),
    }


# ---- the stages -----------------------------------------------------------------------------------
def make_world(world: Path, args) -> dict:
    """Generate the world unless it is there; returns what it is (scenes, frames, image size, sweeps)."""
    t0 = time.perf_counter()
    generated = False
    if not (world / VERSION).is_dir():
        from autolabel.synth.writer import SynthConfig, write_dataset
        from kernels.grid import GridSpec

        cfg = SynthConfig(
            scenes=args.scenes,
            frames_per_scene=args.frames,
            seed=args.seed,
            image_size=(112, 200) if args.micro else tuple(int(x) for x in args.image_size.split("x")),
            sweeps=args.sweeps,
        )
        grid = GridSpec.from_dict(MICRO_GRID) if args.micro else GridSpec()
        tmp = world.with_name(world.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        write_dataset(
            tmp, cfg, grid, progress=False, workers=1 if args.micro else min(args.scenes, os.cpu_count() or 1)
        )
        tmp.rename(world)
        generated = True
    tables = {
        name: json.loads((world / VERSION / f"{name}.json").read_text()) for name in ("scene", "sample", "sample_data")
    }
    cams = [r for r in tables["sample_data"] if r["fileformat"] == "jpg" and r["is_key_frame"]]
    lidar = [r for r in tables["sample_data"] if r["fileformat"] != "jpg"]
    return {
        "path": str(world),
        "scenes": len(tables["scene"]),
        "keyframes": len(tables["sample"]),
        "image_size": [cams[0]["height"], cams[0]["width"]],
        "lidar_sweeps_per_keyframe": len(lidar) / max(len(tables["sample"]), 1),
        "generated_seconds": round(time.perf_counter() - t0, 1) if generated else None,
    }


def recipe_for(run: Path, world: Path, args, extra: list[str] = ()):
    """The nuScenes recipe on the synthetic world: precomputed (noisy) 2D labels instead of SAM + CLIP,
    the world's sweeps; everything else as the recipe says (plus --set and, with --micro, a tiny network)."""
    sets = [
        f"data.dataroot={world}",
        f"data.version={VERSION}",
        f"data.sweeps={args.sweeps}",
        "supervision.provider=precomputed",
        "supervision.precomputed.variant=noisy",
        f"device={args.device}",
        *(MICRO_SET if args.micro else []),
        *args.set,
        *extra,
    ]
    return load_recipe(RECIPE, sets, out=str(run))


def first_scene(frames: NuScenesFrames, recipe, load_images: bool) -> NuScenesFrames:
    return NuScenesFrames(
        frames.dataroot,
        frames.version,
        sweeps=recipe.data.sweeps,
        load_images=load_images,
        load_gt=False,
        grid=recipe.network.grid,
        scenes=[frames.scene_names[0]],
    )


def steady(small: tuple[int, float], full: tuple[int, float]) -> float:
    """Seconds per frame in the steady state from two timed calls of one stage, (frames, seconds) on the first
    scene and on the whole world: the difference leaves out what a call pays once (DataLoader start, the
    first batch). Without a positive difference (a one-scene world; noise larger than the extra frames'
    time) the whole call's seconds per frame, start-up included."""
    (n_a, t_a), (n_b, t_b) = small, full
    return (t_b - t_a) / (n_b - n_a) if n_b > n_a and t_b > t_a else t_b / n_b


def warm_then_timed(
    call, first, whole, run: Path, name: str, final: Path, count: str, device, repeats: int = 1
) -> dict:
    """One stage's calls, each into an empty folder: untimed warm-ups on the first scene and on the whole
    world (RUN/warmup/NAME: the shapes of both timed calls meet cuDNN's autotuning and CUDA's lazy loading
    there, not in a timed call), then `repeats` timed pairs, the first scene (RUN/first_scene/NAME) and the
    whole world (RUN/timed/NAME; the last pair into `final`, with memory sampled). `count` names the frames
    a call did in its result. Returns the last pair's frames and seconds, the steady seconds per frame
    (`steady`) of each pair and their median, and the memory peaks."""

    def fresh(path: Path) -> Path:
        shutil.rmtree(path, ignore_errors=True)
        return path

    call(first, fresh(run / "warmup" / name))
    call(whole, fresh(run / "warmup" / name))
    pairs = []
    for r in range(repeats):
        a = call(first, fresh(run / "first_scene" / name))
        if r < repeats - 1:
            b = call(whole, fresh(run / "timed" / name))
        else:
            with MemorySampler(device) as mem:
                b = call(whole, fresh(final))
        pairs.append(steady((a[count], a["seconds"]), (b[count], b["seconds"])))
    return {
        "frames": b[count],
        "seconds": b["seconds"],
        "first_scene_frames": a[count],
        "first_scene_seconds": a["seconds"],
        "s_per_frame": statistics.median(pairs),
        "s_per_frame_pairs": pairs,
        **mem.result(),
    }


def stage_supervise(run: Path, recipe, device, repeats: int) -> dict:
    """Untimed warm-ups, then `repeats` timed pairs of calls (`warm_then_timed`)."""
    frames = open_frames(recipe, "all", load_images=False, load_gt=False)
    provider = build_provider(recipe.supervision, frames.dataroot, frames.nusc)
    sup = recipe.supervision

    def call(f, path: Path) -> dict:
        return supervise(
            f,
            provider,
            path,
            recipe.network.image_size,
            sup.lidar_min_depth,
            sup.lidar_max_depth,
            progress=False,
            runner_ups=sup.runner_ups,
        )

    r = warm_then_timed(
        call,
        first_scene(frames, recipe, False),
        frames,
        run,
        "supervision.zarr",
        recipe.cache_path,
        "computed",
        device,
        repeats,
    )
    return {**r, "workers": default_workers(), "s_per_frame_whole_call": r["seconds"] / r["frames"]}


def stage_fuse(run: Path, recipe, device, repeats: int) -> dict:
    """The recipe's fusion stage (fusion.enabled), timed as `warm_then_timed` does; the last whole-world call
    writes the store training and labelling read."""
    frames = open_frames(recipe, "train", load_images=False, load_gt=False)
    cache = open_cache(recipe)

    def call(f, path: Path) -> dict:
        store = LabelStore(path, recipe.network.grid, create=True)
        return fuse_round(f, cache, store, 0, recipe.network.grid, recipe.fusion, device, progress=False)

    r = warm_then_timed(
        call,
        first_scene(frames, recipe, False),
        frames,
        run,
        "fusion.zarr",
        recipe.fusion_path,
        "labelled",
        device,
        repeats,
    )
    return {**r, "window": recipe.fusion.window, "hours_full": TRAINVAL * r["s_per_frame"] / 3600}


def step_times(history: Path, warmup: int, start_step: int, total: int) -> tuple[list[float], list[float]]:
    """Per-step wall times of a `train_round` run from its history.jsonl (seconds since fit() began, logged
    after every step: the difference of two rows is one step including the wait for its batch), split into
    rendering-only steps and steps with the DTS teacher, each phase's first `warmup` steps left out."""
    rows = [json.loads(line) for line in history.read_text().splitlines()]
    t = {r["step"]: r["seconds"] for r in rows}
    render, dts = [], []
    for step in range(2, total + 1):  # row `step` ends the optimiser step taken at trainer.step = step - 1
        k = step - 1
        if k < start_step and k >= warmup:
            render.append(t[step] - t[step - 1])
        elif k >= start_step + warmup:
            dts.append(t[step] - t[step - 1])
    return render, dts


def random_like(batch: dict, seed: int = 0) -> dict:
    """Random input of a real batch's shapes and dtypes (train_step.py's kind): uint8 images, LiDAR-like
    sparse depth with the real batch's share of pixels with a return, random classes and confidences; the
    calibration (intrinsics, poses) and the empty 3D targets stay the real ones."""
    g = torch.Generator().manual_seed(seed)
    out = dict(batch)
    out["images"] = torch.randint(0, 256, batch["images"].shape, generator=g, dtype=torch.uint8)
    d = batch["depth"]
    share = float((d > 0).float().mean())
    depth = torch.rand(d.shape, generator=g) * (float(d.max()) - 1.0) + 1.0
    out["depth"] = torch.where(torch.rand(d.shape, generator=g) < share, depth, torch.zeros_like(depth))
    out["semantics"] = torch.randint(0, 17, batch["semantics"].shape, generator=g, dtype=torch.uint8)
    conf = batch["confidence"]  # uint8 levels from the cache (decoded on the device), or float fractions
    out["confidence"] = (
        torch.randint(0, 256, conf.shape, generator=g, dtype=torch.uint8)
        if conf.dtype == torch.uint8
        else torch.rand(conf.shape, generator=g)
    )
    return out


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def timed_sections(sections, device, spent: dict[str, float]):
    """Within the block, each (object, attribute, name) of `sections` is wrapped in device synchronisations and
    the seconds its calls take add up in spent[name]; the originals are put back after (the profile scripts)."""
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in sections]

    def timed(name: str, fn):
        def wrapper(*a, **k):
            sync(device)
            t0 = time.perf_counter()
            out = fn(*a, **k)
            sync(device)
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
            return out

        return wrapper

    try:
        for (obj, attr, name), (_, _, fn) in zip(sections, saved):
            setattr(obj, attr, timed(name, fn))
        yield spent
    finally:
        for obj, attr, fn in saved:
            setattr(obj, attr, fn)


def supervised_world(run: Path, scenes: int, frames: int, image_size: tuple[int, int], sweeps: int, device_name: str):
    """A world of SCENES x FRAMES keyframes at `image_size` with `sweeps` sweeps before each keyframe's in RUN/world
    and its supervision cache in RUN/stores (each made once), and the recipe that reads them (`recipe_for`)."""
    from autolabel.synth.writer import SynthConfig, write_dataset
    from kernels.grid import GridSpec

    world = run / "world"
    if not (world / VERSION).is_dir():
        tmp = run / "world.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        cfg = SynthConfig(scenes=scenes, frames_per_scene=frames, seed=0, image_size=image_size, sweeps=sweeps)
        write_dataset(tmp, cfg, GridSpec(), progress=False, workers=scenes)
        tmp.rename(world)
    args = types.SimpleNamespace(sweeps=sweeps, device=device_name, micro=False, set=[])
    recipe = recipe_for(run / "stores", world, args)
    done = run / "stores" / "supervised"
    if not done.is_file():
        f = open_frames(recipe, "all", load_images=False, load_gt=False)
        sup = recipe.supervision
        provider = build_provider(sup, f.dataroot, f.nusc)
        supervise(
            f,
            provider,
            recipe.cache_path,
            recipe.network.image_size,
            sup.lidar_min_depth,
            sup.lidar_max_depth,
            runner_ups=sup.runner_ups,
        )
        done.write_text("cache written\n")
    return recipe, resolve_device(recipe.device)


def stage_train(run: Path, world: Path, args, device) -> dict:
    """train_round (real data through the trainer's DataLoader) for W + T rendering steps then W + T steps
    with the DTS teacher; then the same Trainer set-up on random in-memory input of the same shapes."""
    w, n = args.warmup_steps, args.steps
    start, total = w + n, 2 * (w + n)
    # train.steps one past the run: the after-training threshold calibration (once per round) stays out
    recipe = recipe_for(
        run, world, args, [f"train.steps={total + 1}", f"dts.start_step={start}", f"train.checkpoint_every={10**9}"]
    )
    shutil.rmtree(recipe.round_dir(0) / "train", ignore_errors=True)
    with MemorySampler(device) as mem:
        train_round(recipe, 0, progress=False, until=total)
    real_mem = mem.result()
    render, dts = step_times(recipe.round_dir(0) / "train" / "history.jsonl", w, start, total)

    # the baseline: the same network, losses, teacher and steps; the input already in device memory
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    frames = open_frames(recipe, "train", load_images=True, load_gt=False)
    # the fused labels too where the recipe trains on them: the random batch keeps the real one's 3D targets
    dataset = FrameDataset(
        frames,
        recipe.network.image_size,
        labels="cache",
        cache=open_cache(recipe),
        grid=recipe.network.grid,
        manual={},
        fused=fused_labels(recipe, training=True),
    )
    b = recipe.train.batch_size * recipe.train.accumulate
    real = torch.utils.data.default_collate([dataset[i % len(dataset)] for i in range(b)])
    batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in random_like(real).items()}
    torch.manual_seed(recipe.train.seed)
    model = OccupancyNetwork(recipe.network, pretrained=False)
    teacher = EMATeacher(model, recipe.dts)
    trainer = Trainer(
        model,
        recipe.render,
        recipe.loss,
        recipe.train,
        run / "random_input",
        device,
        hooks=[teacher],
        annotate=teacher.annotate,
    )
    rnd_render, rnd_dts = [], []
    with MemorySampler(device) as mem:
        for _ in range(total):
            k = trainer.step
            sync(device)
            t0 = time.perf_counter()
            trainer.train_step(batch)
            sync(device)
            dt = time.perf_counter() - t0
            if w <= k < start:
                rnd_render.append(dt)
            elif k >= start + w:
                rnd_dts.append(dt)
    rand_mem = mem.result()
    del trainer, model, teacher, batch
    share = dts_share(recipe_for(run, world, args))  # the recipe's own share, not this run's
    med = statistics.median
    real_step = (1 - share) * med(render) + share * med(dts)
    rand_step = (1 - share) * med(rnd_render) + share * med(rnd_dts)
    steps_full = math.ceil(EPOCHS * TRAINVAL / b)
    return {
        "batch": b,
        "workers": default_workers(),
        "warmup_steps": w,
        "timed_steps_per_phase": n,
        "real_render_s": render,
        "real_dts_s": dts,
        "random_render_s": rnd_render,
        "random_dts_s": rnd_dts,
        "real_render_median_s": med(render),
        "real_dts_median_s": med(dts),
        "random_render_median_s": med(rnd_render),
        "random_dts_median_s": med(rnd_dts),
        "dts_share": share,
        "real_step_s": real_step,
        "random_step_s": rand_step,
        "ratio": real_step / rand_step,
        "ratio_render": med(render) / med(rnd_render),
        "ratio_dts": med(dts) / med(rnd_dts),
        "steps_full": steps_full,
        "hours_full": steps_full * real_step / 3600,
        "real": real_mem,
        "random": rand_mem,
    }


def dts_share(recipe) -> float:
    """Share of a round's steps that run the DTS teacher (the recipe's start_step of its steps)."""
    if not recipe.dts.enabled or recipe.loss.pseudo_3d <= 0:
        return 0.0
    return max(0.0, 1 - recipe.dts.start_step / recipe.train.steps)


def fresh_checkpoint(recipe, path: Path) -> Path:
    """A freshly initialised network (and its EMA teacher) saved as a training checkpoint."""
    torch.manual_seed(recipe.train.seed)
    model = OccupancyNetwork(recipe.network, pretrained=False)
    teacher = EMATeacher(model, recipe.dts)
    return Trainer(model, recipe.render, recipe.loss, recipe.train, path.parent, "cpu", hooks=[teacher]).save(path)


def labeller(recipe, ckpt: Path, device):
    """call(frames, path) -> `label_round`'s summary: the network at `ckpt` labels `frames` into a new store at
    `path`, with the recipe's cache and (where the recipe fuses) fused labels."""
    cache, fused = open_cache(recipe), fused_labels(recipe, training=False)

    def call(f, path: Path) -> dict:
        store = LabelStore(path, recipe.network.grid, create=True)
        return label_round(
            f,
            cache,
            store,
            0,
            recipe.network,
            recipe.dts,
            ckpt,
            device,
            recipe_record(recipe),
            progress=False,
            fused=fused,
        )

    return call


def stage_label(run: Path, recipe, device, repeats: int) -> dict:
    """Untimed warm-ups, then `repeats` timed pairs of calls (`warm_then_timed`)."""
    ckpt = fresh_checkpoint(recipe, run / "fresh" / "checkpoint.pt")
    frames = open_frames(recipe, "train", load_images=True, load_gt=False)
    call = labeller(recipe, ckpt, device)
    r = warm_then_timed(
        call,
        first_scene(frames, recipe, True),
        frames,
        run,
        "labels.zarr",
        recipe.store_path,
        "labelled",
        device,
        repeats,
    )
    per = r.pop("s_per_frame")  # labelling is reported as a rate
    return {
        **r,
        "batch": recipe.dts.batch_size,
        "workers": default_workers(),
        "frames_per_s": 1 / per,
        "frames_per_s_whole_call": r["frames"] / r["seconds"],
        "hours_full": TRAINVAL * per / 3600,
    }


def stage_export(run: Path, recipe, device, repeats: int) -> dict:
    store = LabelStore.open(recipe.store_path)
    q = recipe.rounds.export_drop_quantile
    export_occ3d(store, 0, run / "warmup" / "export", q, progress=False)
    times = []
    with MemorySampler(device) as mem:
        for _ in range(repeats):
            shutil.rmtree(run / "export", ignore_errors=True)
            t0 = time.perf_counter()
            s = export_occ3d(store, 0, run / "export", q, progress=False)
            times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    files, size = tree_size(run / "export")
    return {
        "frames": s["frames"],
        "seconds": times,
        "median_seconds": sec,
        "frames_per_s": s["frames"] / sec,
        "hours_full": TRAINVAL / (s["frames"] / sec) / 3600,
        "files": files,
        "bytes": size,
        "files_full": TRAINVAL + 1,
        "bytes_full": size / s["frames"] * TRAINVAL,
        **mem.result(),
    }


def stage_store(recipe) -> dict:
    frames = len(json.loads((recipe.dataroot / VERSION / "sample.json").read_text()))
    return {
        "round": group_at_scale(recipe.store_path / "round_0", frames, TRAINVAL),
        "cache": group_at_scale(recipe.cache_path / "supervision", frames, TRAINVAL),
    }


# ---- report ---------------------------------------------------------------------------------------
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads), torch {torch.__version__}"


def gib(b) -> str:
    return "-" if b is None else f"{b / 2**30:.2f} GiB"


def hours(h: float) -> str:
    return f"{h:,.2f} h" if h < 100 else f"{h:,.0f} h"


def workers(n: int) -> str:
    return f"{n} DataLoader worker{'' if n == 1 else 's'}"


def spread(stage: dict, rate: bool) -> str:
    """The steady figure of each timed pair (frames/s when `rate`, else s per frame), when there were several."""
    pairs = stage.get("s_per_frame_pairs", [])
    if len(pairs) < 2:
        return ""
    values = ", ".join(f"{1 / p:.1f}" if rate else f"{p:.3f}" for p in pairs)
    return f"; median of {len(pairs)} pairs ({values})"


def verdict(ok: bool, meaningful: bool) -> str:
    return ("met" if ok else "missed") + ("" if meaningful else " (indicative)")


def table(r: dict) -> str:
    meta, cuda = r["meta"], r["meta"]["device"].startswith("cuda")
    w = meta["world"]
    lines = [
        f"device: {meta['device_name']}; world {w['scenes']} scenes x {w['keyframes'] // max(w['scenes'], 1)} "
        f"keyframes = {w['keyframes']} frames, cameras {w['image_size'][1]}x{w['image_size'][0]}, "
        f"{w['lidar_sweeps_per_keyframe']:.0f} LiDAR sweeps per keyframe; recipe {meta['recipe']} "
        f"(network input {meta['image_size'][1]}x{meta['image_size'][0]}, {meta['rays_per_frame']:,} rays/frame, "
        f"data.sweeps {meta['data_sweeps']}); extrapolated to {TRAINVAL:,} keyframes"
    ]
    if not cuda:
        lines.append(
            "CPU run: export rates and store sizes / file counts are meaningful here; training and labelling "
            "times are indicative only (the targets are for one H200)"
        )
    lines += ["", "| stage | measured | per frame | at 34,149 keyframes | target | |", "|---|---|---:|---:|---|---|"]
    s = r.get("supervise")
    if s:
        lines.append(
            f"| supervision cache write (precomputed 2D labels, LiDAR depth from the sweeps; "
            f"{workers(s['workers'])}) | {s['frames']} frames in {s['seconds']:.1f} s, the first scene's "
            f"{s['first_scene_frames']} in "
            f"{s['first_scene_seconds']:.1f} s{spread(s, False)} | {s['s_per_frame']:.3f} s | "
            f"{hours(s['s_per_frame'] * TRAINVAL / 3600)} | - | |"
        )
    fu = r.get("fuse")
    if fu and "s_per_frame" in fu:
        lines.append(
            f"| evidence fusion (+-{fu['window']} keyframes) | {fu['frames']} frames in {fu['seconds']:.1f} s, "
            f"the first scene's {fu['first_scene_frames']} in {fu['first_scene_seconds']:.1f} s{spread(fu, False)} | "
            f"{fu['s_per_frame']:.3f} s | "
            f"{hours(fu['hours_full'])} | <= 0.5 s per frame | {verdict(fu['s_per_frame'] <= 0.5, cuda)} |"
        )
    t = r.get("train")
    if t:
        pf = t["batch"]
        lines.append(
            f"| training step, real data (cache, {workers(t['workers'])}), batch {pf} | rendering "
            f"{1e3 * t['real_render_median_s']:.0f} ms, DTS {1e3 * t['real_dts_median_s']:.0f} ms | "
            f"{1e3 * t['real_step_s'] / pf:.1f} ms | {t['steps_full']:,} steps ({EPOCHS} epochs, "
            f"{100 * t['dts_share']:.0f}% DTS): {hours(t['hours_full'])} | - | |"
        )
        lines.append(
            f"| training step, random in-memory input, same shapes | rendering "
            f"{1e3 * t['random_render_median_s']:.0f} ms, DTS {1e3 * t['random_dts_median_s']:.0f} ms | "
            f"{1e3 * t['random_step_s'] / pf:.1f} ms | {hours(t['steps_full'] * t['random_step_s'] / 3600)} | - | |"
        )
        lines.append(
            f"| real / random step time | rendering {t['ratio_render']:.3f}, DTS {t['ratio_dts']:.3f} | "
            f"{t['ratio']:.3f} | | <= {TARGET_RATIO:.2f} | {verdict(t['ratio'] <= TARGET_RATIO, cuda)} |"
        )
    lab = r.get("label")
    if lab:
        lines.append(
            f"| labelling (fresh network, batch {lab['batch']}, {workers(lab['workers'])}) | {lab['frames']} frames "
            f"in {lab['seconds']:.1f} s, the first "
            f"scene's {lab['first_scene_frames']} in {lab['first_scene_seconds']:.1f} s{spread(lab, True)} | "
            f"{lab['frames_per_s']:.2f} frames/s | {hours(lab['hours_full'])} | >= {TARGET_LABEL_FPS:.0f} frames/s | "
            f"{verdict(lab['frames_per_s'] >= TARGET_LABEL_FPS, cuda)} |"
        )
    if t and lab:
        total = t["hours_full"] + lab["hours_full"]
        lines.append(
            f"| label-free round: training + labelling | | | {hours(total)} | <= {TARGET_ROUND_HOURS:.0f} H200-h | "
            f"{verdict(total <= TARGET_ROUND_HOURS, cuda)} |"
        )
    e = r.get("export")
    if e:
        lines.append(
            f"| export to Occ3D labels.npz | {e['frames']} frames in {e['median_seconds']:.2f} s "
            f"(median of {len(e['seconds'])}) | {e['frames_per_s']:.1f} frames/s | {hours(e['hours_full'])} | "
            f">= {TARGET_EXPORT_FPS:.0f} frames/s (2 cores) | "
            f"{verdict(e['frames_per_s'] >= TARGET_EXPORT_FPS, True)} |"
        )
    st = r.get("store")
    if st:
        g = st["round"]
        lines.append(
            f"| store: the round's group (labels.zarr/round_0) | {g['files']} files, {g['bytes'] / 1e6:.1f} MB "
            f"| {g['bytes_per_frame'] / 1e3:.0f} kB | {g['files_full']:,} files ({g['arrays_per_frame']} arrays x "
            f"{math.ceil(TRAINVAL / g['frames_per_shard_full'])} shards of {g['frames_per_shard_full']} frames; "
            f"a writer holds {g['writer_bytes_full'] / 2**20:.0f} MiB), "
            f"{g['bytes_full'] / 1e9:.1f} GB | <= {TARGET_ROUND_FILES:,} files | "
            f"{verdict(g['files_full'] <= TARGET_ROUND_FILES, True)} |"
        )
        c = st["cache"]
        lines.append(
            f"| supervision cache (supervision.zarr) | {c['files']} files, {c['bytes'] / 1e6:.1f} MB | "
            f"{c['bytes_per_frame'] / 1e6:.2f} MB | {c['files_full']:,} files ({c['arrays_per_frame']} arrays x "
            f"{math.ceil(TRAINVAL / c['frames_per_shard_full'])} shards of {c['frames_per_shard_full']} frames; "
            f"a writer holds {c['writer_bytes_full'] / 2**20:.0f} MiB), "
            f"{c['bytes_full'] / 1e9:.0f} GB | - | |"
        )
    if e:
        lines.append(
            f"| Occ3D export (one labels.npz per frame + export.json) | {e['files']} files, {e['bytes'] / 1e6:.1f} MB "
            f"| {e['bytes'] / e['frames'] / 1e3:.0f} kB | {e['files_full']:,} files, {e['bytes_full'] / 1e9:.1f} GB | "
            "- | |"
        )
    mems = [
        (name, r[key] if sub is None else r[key][sub])
        for name, key, sub in (
            ("supervision", "supervise", None),
            ("training, real data", "train", "real"),
            ("training, random input", "train", "random"),
            ("labelling", "label", None),
            ("export", "export", None),
        )
        if key in r
    ]
    if mems:
        lines.append(
            "| peak host memory (process tree: main + workers, PSS) | "
            + ", ".join(f"{n} {gib(m['host_peak_bytes'])}" for n, m in mems)
            + " | | | - | |"
        )
        if cuda:
            lines.append(
                "| peak GPU memory (torch, allocated) | "
                + ", ".join(f"{n} {gib(m['gpu_peak_bytes'])}" for n, m in mems)
                + " | | | - | |"
            )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="working folder: the world (unless --world) and the stores")
    ap.add_argument(
        "--world", default=None, help="an existing world (autolabel synth ... --image-size 900x1600 --sweeps 9)"
    )
    ap.add_argument("--scenes", type=int, default=2, help="world to generate: scenes (default 2)")
    ap.add_argument("--frames", type=int, default=4, help="world to generate: keyframes per scene (default 4)")
    ap.add_argument(
        "--sweeps",
        type=int,
        default=9,
        help="earlier LiDAR sweeps per keyframe, in the world and in the "
        "depth maps (data.sweeps); 9 = nuScenes' 10 sweeps with the keyframe's (default 9)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per phase (rendering, DTS)")
    ap.add_argument("--warmup-steps", type=int, default=2, help="training steps per phase left out of the timing")
    ap.add_argument("--export-repeats", type=int, default=3)
    ap.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed pairs (first scene, whole world) of the supervision, fusion and labelling stages; their "
        "steady seconds per frame is the median over pairs (default 3)",
    )
    ap.add_argument(
        "--image-size",
        default="900x1600",
        help="camera images of the world to generate, HxW (default nuScenes' 900x1600; training and labelling "
        "read the cache at the network's input size whatever this is)",
    )
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override (repeatable)")
    ap.add_argument("--out", default=None, help="results folder (default RUN)")
    ap.add_argument(
        "--stages",
        default=",".join(STAGES),
        help="stages to run (default all); a later stage alone "
        "reuses the stores in RUN/stores and keeps the other stages' results in OUT/scale_results.json",
    )
    ap.add_argument("--micro", action="store_true", help="CI size: tiny world, grid and network, one step per phase")
    args = ap.parse_args()
    if args.steps < 1 or args.warmup_steps < 1:
        ap.error("--steps and --warmup-steps must be >= 1 (a step's time is the difference of two logged steps)")
    if args.micro:
        args.scenes, args.frames, args.sweeps = 2, 1, min(args.sweeps, 2)
        args.steps, args.warmup_steps, args.export_repeats, args.repeats = 1, 1, 1, 1
    run = Path(args.run).absolute()
    out = Path(args.out).absolute() if args.out else run
    out.mkdir(parents=True, exist_ok=True)
    world = Path(args.world).absolute() if args.world else run / "world"
    w = make_world(world, args)
    stores = run / "stores"
    stages = args.stages.split(",")
    if unknown := set(stages) - set(STAGES):
        ap.error(f"--stages: unknown {sorted(unknown)}; choose from {','.join(STAGES)}")
    if "supervise" in stages:  # every stage times work from scratch
        shutil.rmtree(stores, ignore_errors=True)
    elif not (stores / "supervision.zarr").is_dir() or (
        "export" in stages and "label" not in stages and not (stores / "labels.zarr").is_dir()
    ):
        ap.error(f"--stages {args.stages}: the earlier stages' stores are not in {stores}; run them first")
    recipe = recipe_for(stores, world, args)
    device = resolve_device(recipe.device)
    results = {
        "meta": {
            "date": time.strftime("%Y-%m-%d"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "code_version": _git_version(),
            "device": str(device),
            "device_name": device_name(device),
            "cpu_cores": os.cpu_count(),
            "world": w,
            "recipe": str(RECIPE.relative_to(ROOT)),
            "overrides": args.set,
            "micro": args.micro,
            "image_size": list(recipe.network.image_size),
            "rays_per_frame": recipe.render.rays_per_frame,
            "data_sweeps": recipe.data.sweeps,
            "train_batch": recipe.train.batch_size,
            "trainval_keyframes": TRAINVAL,
            "epochs": EPOCHS,
        }
    }
    path = out / "scale_results.json"
    if set(stages) != set(STAGES) and path.is_file():  # the stages not rerun keep their earlier results
        results = {**json.loads(path.read_text()), "meta": results["meta"]}

    def save(stage: str, fn) -> None:
        t0, load = time.perf_counter(), os.getloadavg()
        value = fn()
        # when and how each stage ran, and how busy the machine was (load average over 1, 5, 15 minutes)
        value["run"] = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "command": results["meta"]["command"],
            "code_version": results["meta"]["code_version"],
            "load_average_start": load,
            "load_average_end": os.getloadavg(),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        results[stage] = value
        path.write_text(json.dumps(results, indent=1))
        print(f"{stage}: done in {value['run']['seconds']} s", flush=True)

    print(
        f"world {w['path']}: {w['keyframes']} keyframes in {w['scenes']} scenes at {w['image_size'][1]}x"
        f"{w['image_size'][0]}" + (f" (generated in {w['generated_seconds']} s)" if w["generated_seconds"] else ""),
        flush=True,
    )
    run_stage = {
        "supervise": lambda: stage_supervise(stores, recipe, device, args.repeats),
        "fuse": lambda: (
            stage_fuse(stores, recipe, device, args.repeats) if recipe.fusion.enabled else {"skipped": "fusion off"}
        ),
        "train": lambda: stage_train(stores, world, args, device),
        "label": lambda: stage_label(stores, recipe, device, args.repeats),
        "export": lambda: stage_export(stores, recipe, device, args.export_repeats),
    }
    for stage in STAGES:
        if stage in stages:
            save(stage, run_stage[stage])
    if (recipe.store_path / "round_0").is_dir():
        save("store", lambda: stage_store(recipe))
    text = table(results)
    (out / "scale_table.md").write_text(text + "\n")
    print("\n" + text)
    return 0


def _git_version() -> str:
    try:
        return (
            subprocess.run(
                ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
