"""``autolabel run``: the whole loop as resumable stages.

data -> 2D supervision (cached) -> per round: train -> label (pseudo-labels into the store) -> evaluate
(where ground truth exists) -> export (Occ3D) -> report -> select -> ingest (simulated oracle or a
folder of real annotations) -> next round. Each finished stage is recorded in ``<run>/stages.json``
(written atomically) and skipped on a rerun; the stages themselves resume inside (training from its
checkpoint, labelling from the store's done flags), so a crash or Ctrl-C loses at most the work since
the last checkpoint or frame.

Under torchrun (several processes) the 2D supervision, training and labelling stages run on every rank
(sharded frames, DDP), and so does the pool scoring of selection (rank 0 then selects); the others (world,
evaluation, export, ingest, report) run on rank 0 while the rest wait at a barrier. Only rank 0 writes
``stages.json``; the other ranks read it back.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from occnet.atomic import atomic_write
from occnet.distributed import barrier, is_main

from .errors import AwaitingAnnotations, DataError, one_line
from .provenance import recipe_record
from .recipe import RESOLVED_RECIPE, Recipe, save_recipe

STAGES_FILE = "stages.json"
STOPPED_FILE = "stopped.json"  # the stage that last stopped the run, and why (removed when a stage finishes)


class Stages:
    def __init__(self, run_dir: Path):
        self.path = run_dir / STAGES_FILE
        self.stopped = run_dir / STOPPED_FILE
        self.done: dict[str, dict] = read_stages(run_dir)

    def _record_stop(self, name: str, status: str, message: str) -> None:
        if is_main():
            text = json.dumps(
                {"stage": name, "status": status, "message": message, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                indent=1,
            )
            atomic_write(self.stopped, lambda fh: fh.write(text.encode()))

    def run(self, name: str, fn: Callable[[], dict | None], every_rank: bool = False) -> dict:
        """Run a stage once. every_rank: all processes run it (it shards its own work); otherwise rank 0
        runs it and the others wait. Rank 0 records the result (its own, for a sharded stage); a stage
        that raises is recorded in stopped.json (failed / waiting / interrupted, with the message)."""
        if name in self.done:
            return self.done[name]
        t0 = time.perf_counter()
        try:
            result = (fn() or {}) if every_rank or is_main() else None
        except AwaitingAnnotations as exc:
            self._record_stop(name, "waiting", one_line(exc))
            raise
        except KeyboardInterrupt:
            self._record_stop(name, "interrupted", "interrupted; rerun to resume")
            raise
        except Exception as exc:
            self._record_stop(name, "failed", f"{type(exc).__name__}: {one_line(exc)}")
            raise
        barrier()  # a sharded stage is finished when every rank is; a rank-0 stage before anyone goes on
        if is_main():
            self.done[name] = {**result, "seconds": round(time.perf_counter() - t0, 2)}
            text = json.dumps(self.done, indent=1)
            atomic_write(self.path, lambda fh: fh.write(text.encode()))
            self.stopped.unlink(missing_ok=True)
        barrier()
        if not is_main():
            self.done = json.loads(self.path.read_text())
        return self.done[name]


def read_stages(run_dir: Path) -> dict[str, dict]:
    path = run_dir / STAGES_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(
            f"{path}: not valid JSON ({exc}); it is written atomically, so it was changed by hand or by "
            f"another program — restore it or delete the run folder"
        ) from None


def check_run_folder(recipe: Recipe) -> None:
    """A run folder may be continued by a recipe that differs from the saved one only in keys that no
    finished stage read (recipe.STAGE_READS): more rounds, a later stage's settings, another --out
    spelling of the same folder. Anything else is refused with the keys and the stages that read them."""
    saved = recipe.run_dir / RESOLVED_RECIPE
    if not saved.is_file():
        return
    from .recipe import forbidding_changes, load_recipe

    try:
        old = load_recipe(saved)
    except DataError as exc:
        raise DataError(
            f"{recipe.run_dir} holds a run whose saved recipe cannot be read ({exc}); choose another --out"
        ) from None
    changes = forbidding_changes(old, recipe, read_stages(recipe.run_dir))
    if changes:
        raise DataError(
            f"{recipe.run_dir} holds a run of another recipe ({saved}): {', '.join(changes)} changed, and "
            f"finished stages used the old value; resume it with the same values, or choose another --out"
        )


# torchvision's ImageNet weights of each backbone (IMAGENET1K_V1 for resnet18 / resnet34, V2 for resnet50 / resnet101)
BACKBONE_DOWNLOADS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-cd907fc2.pth",
}


def check_backbone(recipe: Recipe) -> None:
    """network.backbone_weights, when set, must be a torchvision state dict of network.backbone (keys and
    shapes): a DataError naming the key and the file otherwise, before any work."""
    from occnet.network import backbone_state

    net = recipe.network
    if net.backbone_weights is None:
        return
    try:
        backbone_state(net.backbone, net.backbone_weights)
    except ValueError as exc:
        hint = (
            (
                f": put a torchvision {net.backbone} state dict there (e.g. {BACKBONE_DOWNLOADS[net.backbone]}) or "
                f"unset the key for random initialisation"
            )
            if not Path(net.backbone_weights).exists()
            else ""
        )
        raise DataError(f"network.backbone_weights {net.backbone_weights}: {exc}{hint}") from None


def preflight(recipe: Recipe) -> None:
    """Every check of paths, models and recipe values that needs no work, before the run folder is
    written: a failing first run leaves nothing behind, and a resumed one nothing changed."""
    from .dataset import check_annotator, check_dataroot
    from .supervision.providers import check_models, resolve_device

    resolve_device(recipe.device)  # also joins the process group under torchrun before the first barrier
    check_dataroot(recipe)
    check_annotator(recipe)
    check_models(recipe.supervision)
    if "round_0/train" not in read_stages(recipe.run_dir):  # later rounds start from checkpoints, not the file
        check_backbone(recipe)
    check_run_folder(recipe)


def run_recipe(recipe: Recipe, progress: bool = True) -> dict:
    from .dataset import ensure_dataset, open_frames

    preflight(recipe)
    progress = progress and is_main()
    if is_main():
        recipe.run_dir.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, recipe.run_dir / RESOLVED_RECIPE)  # the values the stages run from here on read
    barrier()
    stages = Stages(recipe.run_dir)
    stages.run("data", lambda: {"dataroot": str(ensure_dataset(recipe, progress))})

    def supervise_all() -> dict:
        from .supervision.cache import supervise
        from .supervision.providers import build_provider

        frames = open_frames(recipe, "all", load_images=False, load_gt=False)
        provider = build_provider(recipe.supervision, frames.dataroot, frames.nusc)
        return supervise(
            frames,
            provider,
            recipe.cache_path,
            recipe.network.image_size,
            recipe.supervision.lidar_min_depth,
            recipe.supervision.lidar_max_depth,
            progress,
            extra_attrs={"recipe": recipe.digest()},
        )

    stages.run("supervise", supervise_all, every_rank=True)
    if recipe.fusion.enabled:
        stages.run("fuse", lambda: fuse_stage(recipe, progress), every_rank=True)  # sharded over ranks like labelling
    history = []
    for k in range(recipe.rounds.count):
        history.append(_round(recipe, k, stages, history, progress))
    return {"run_dir": str(recipe.run_dir), "rounds": history, "stages": stages.done}


def fuse_stage(recipe: Recipe, progress: bool) -> dict:
    """The training frames' labels from evidence fusion (autolabel.fusion) into recipe.fusion_path (the stage
    `fuse` of `autolabel run`, and `autolabel fuse`)."""
    from .dataset import open_frames
    from .dts.label import labelling_store
    from .fusion.label import fuse_round
    from .supervision.providers import resolve_device
    from .training.rounds import open_cache

    frames = open_frames(recipe, "train", load_images=False, load_gt=False)
    store = labelling_store(recipe.fusion_path, recipe.network.grid)
    return fuse_round(
        frames,
        open_cache(recipe),
        store,
        0,
        recipe.network.grid,
        recipe.fusion,
        resolve_device(recipe.device),
        progress,
    )


def _has_gts(recipe: Recipe) -> bool:
    return (recipe.dataroot / "gts").is_dir()


def _round(recipe: Recipe, k: int, stages: Stages, history: list[dict], progress: bool) -> dict:
    from .dataset import open_frames
    from .dts.label import label_round, labelling_store
    from .store.labels import LabelStore
    from .store.rounds import evaluate_round, export_occ3d
    from .supervision.providers import resolve_device
    from .training.evaluate import evaluate_checkpoint
    from .training.rounds import (
        checkpoint_path,
        fused_labels,
        labelled_voxels,
        manual_labels,
        open_cache,
        selected_from,
        train_round,
    )

    p = f"round_{k}"
    stages.run(
        f"{p}/train",
        lambda: {key: v for key, v in train_round(recipe, k, progress).items() if key != "last"},
        every_rank=True,
    )

    def label() -> dict:
        frames = open_frames(recipe, "train", load_images=True, load_gt=False)
        store = labelling_store(recipe.store_path, recipe.network.grid)
        fused = fused_labels(recipe, training=False)
        return label_round(
            frames,
            open_cache(recipe),
            store,
            k,
            recipe.network,
            recipe.dts,
            checkpoint_path(recipe, k),
            resolve_device(recipe.device),
            recipe_record(recipe),
            progress=progress,
            fused=fused,
        )

    stages.run(f"{p}/label", label, every_rank=True)

    def evaluate() -> dict:
        manual = manual_labels(recipe.store_path, recipe.network.grid, selected_from(recipe, k))
        out: dict = {"labelled": len(manual), "labelled_voxels": labelled_voxels(manual, recipe.network.grid.shape)}
        if not _has_gts(recipe):
            return out
        if recipe.data.val_scenes:
            out["val"] = evaluate_checkpoint(recipe, checkpoint_path(recipe, k), "val", progress=progress).as_dict()
        r = evaluate_round(
            LabelStore.open(recipe.store_path),
            k,
            recipe.dataroot,
            (recipe.rounds.export_drop_quantile,),
            progress=progress,
        )
        out["pseudo"] = r["scores"].as_dict()
        out["pseudo_thresholded"] = r["curve"][0]
        return out

    metrics = stages.run(f"{p}/evaluate", evaluate)
    export_dir = recipe.run_dir / "export" / p
    exported = stages.run(
        f"{p}/export",
        lambda: (
            {
                key: v
                for key, v in export_occ3d(
                    LabelStore.open(recipe.store_path), k, export_dir, recipe.rounds.export_drop_quantile, progress
                ).items()
                if key in ("frames", "frames_pseudo", "kept_in_mask_camera")
            }
            | {"folder": str(export_dir)}
        ),
    )
    entry = {
        "round": k,
        "labelled": metrics.get("labelled", 0),
        "labelled_voxels": metrics.get("labelled_voxels"),
        "val_miou": (metrics.get("val") or {}).get("miou"),
        "pseudo_miou": (metrics.get("pseudo") or {}).get("miou"),
        "export": str(export_dir),
    }
    last = k == recipe.rounds.count - 1
    if not last:
        stages.run(f"{p}/select", lambda: _select(recipe, k), every_rank=True)  # scoring is sharded
        stages.run(f"{p}/ingest", lambda: _ingest(recipe, k))

    def report() -> dict:
        from .report.round_report import write_round_report

        return {"page": str(write_round_report(recipe, k, metrics, history + [entry], exported))}

    entry["report"] = stages.run(f"{p}/report", report)["page"]
    return entry


def _select(recipe: Recipe, k: int) -> dict:
    from .active.pool import score_pool, select_pool
    from .active.rounds import write_manifest
    from .active.select import distance_device
    from .store.labels import LabelStore

    pool = score_pool(recipe, k, progress=False)  # every rank scores its share; rank 0 gets the pool
    if pool is None:
        return {}
    lab = pool.labelled
    picks, strategy = select_pool(pool, recipe.selection, distance_device(recipe.device))
    path = write_manifest(
        recipe,
        k,
        picks,
        strategy,
        len(pool.tokens),
        int(lab.sum()),
        LabelStore.open(recipe.store_path, recipe.network.grid),
        pool.regions,
    )
    out = {"strategy": strategy, "selected": len(picks), "manifest": str(path)}
    if pool.regions is not None:
        out |= {"tiles": sum(len(p.tiles) for p in picks), "voxels": sum(p.voxels for p in picks)}
    return out


def _ingest(recipe: Recipe, k: int) -> dict:
    from .active.rounds import ingest, oracle_annotate

    if recipe.rounds.annotator == "oracle":
        folder = recipe.round_dir(k) / "oracle_annotations"
        oracle_annotate(recipe, k, recipe.dataroot, folder)
    else:
        folder = recipe.delivery_dir(k)
        if not folder.is_dir():
            done = _ingested_by_hand(recipe, k)
            if done is not None:
                return done
            raise AwaitingAnnotations(
                f"round {k}: waiting for annotations in {folder} (the frames are listed in "
                f"{recipe.round_dir(k) / 'select' / 'index.html'}); deliver them and rerun "
                f"`autolabel run`"
            )
    s = ingest(recipe, k, folder)
    return {
        "added": len(s["added"]),
        "manual_total": s["manual_total"],
        "voxels_added": s["voxels_added"],
        "manual_voxels": s["manual_voxels"],
    }


def _ingested_by_hand(recipe: Recipe, k: int) -> dict | None:
    """The ingest stage's result when every frame of round k's manifest already has a manual label (delivered
    elsewhere and stored with `autolabel ingest RECIPE --round K DIR`, as the selection page offers), else None."""
    from .active.rounds import manifest_path, read_manifest
    from .store.labels import LabelStore

    if not (recipe.store_path / "zarr.json").is_file() or not manifest_path(recipe, k).is_file():
        return None
    manual = LabelStore.open(recipe.store_path, recipe.network.grid).manual()
    if manual is None:
        return None
    done = {t for t, d in zip(manual.tokens, manual.done()) if d}
    wanted = {row["token"] for row in read_manifest(manifest_path(recipe, k))["selected"]}
    if not wanted or not wanted <= done:
        return None
    return {"added": 0, "manual_total": len(done), "ingested_by_hand": len(wanted)}


def summary_text(recipe: Recipe, result: dict) -> str:
    lines = [f"run {recipe.name} finished: {result['run_dir']}"]
    for r in result["rounds"]:
        val = f"val mIoU {r['val_miou']:.2f}" if r.get("val_miou") is not None else "val mIoU -"
        pseudo = (
            f"pseudo-label mIoU {r['pseudo_miou']:.2f}" if r.get("pseudo_miou") is not None else "pseudo-label mIoU -"
        )
        voxels = f" ({r['labelled_voxels']:,} labelled voxels)" if r.get("labelled_voxels") is not None else ""
        lines.append(f"  round {r['round']}: {r['labelled']} frames with manual 3D labels{voxels}; {val}; {pseudo}")
        lines.append(f"    Occ3D export {r['export']}/gts   report {r['report']}")
    lines.append(f"  pseudo-label store {recipe.store_path}   2D supervision cache {recipe.cache_path}")
    lines.append(
        f"  stages and timings {recipe.run_dir / STAGES_FILE}; rerunning resumes at the first unfinished stage"
    )
    return "\n".join(lines)
