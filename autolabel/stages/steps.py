"""The loop's stages: one function per step, each taking the recipe (and the round).

    prepare_data -> supervise -> [fuse] -> per round k: train -> label -> evaluate -> export -> select ->
    ingest -> report

Each stage opens what it reads from the recipe (autolabel.stages.inputs), unpacks the recipe's sections
into the library calls below it, and returns a small dict: `autolabel run` (autolabel.pipeline) records it
in ``stages.json`` and the commands (autolabel.commands) print it. A stage resumes inside on its own
(training from its checkpoint, labelling and supervision from their done flags); which stages are done is
the pipeline's business, not theirs. Under torchrun supervise, fuse, train, label and select's pool
scoring run on every rank (they shard their own work); the pipeline runs the rest on rank 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from occnet.distributed import is_main
from occnet.metrics import OccupancyScores

from ..active.pool import PoolScores, fusion_pool, needs_scores, score_pool, select_pool, unscored_pool
from ..active.propagate import PropagatedLabels
from ..active.ingest import ingest as ingest_delivery
from ..active.ingest import oracle_annotate
from ..active.manifest import read_manifest, write_manifest
from ..active.select import Pick, distance_device, fusion_default
from ..checkpoint import load_network, readout
from ..dts.label import label_round, labelling_store
from ..errors import AwaitingAnnotations
from ..fusion.label import fuse_round
from ..network_input import FrameDataset
from ..provenance import recipe_record
from ..recipe import Recipe
from ..report.round_report import write_round_report
from ..store.export import evaluate_round, export_occ3d
from ..store.labels import LabelStore
from ..store.manual import labelled_frames, labelled_voxels, manual_labels
from ..supervision.cache import supervise as supervise_frames
from ..supervision.providers import build_provider, resolve_device
from ..training.evaluate import evaluate_network
from ..training.round_training import train_round
from .inputs import (
    check_checkpoint,
    checkpoint_path,
    ensure_dataset,
    export_dir,
    fused_labels,
    has_gts,
    manifest_path,
    open_cache,
    open_frames,
    round_manual_labels,
    select_dir,
)


def prepare_data(recipe: Recipe, progress: bool = True) -> dict:
    """The dataset: checked, or the synthetic world generated into the run folder."""
    return {"dataroot": str(ensure_dataset(recipe, progress))}


def supervise(recipe: Recipe, progress: bool = True) -> dict:
    """The 2D supervision of every frame into the cache, once (resumes where it stopped)."""
    sup = recipe.supervision
    frames = open_frames(recipe, "all", load_images=False, load_gt=False)
    provider = build_provider(sup, frames.dataroot, frames.nusc)
    return supervise_frames(
        frames,
        provider,
        recipe.cache_path,
        recipe.network.image_size,
        sup.lidar_min_depth,
        sup.lidar_max_depth,
        progress,
        extra_attrs={"recipe": recipe.digest()},
        runner_ups=sup.runner_ups,
    )


def fuse(recipe: Recipe, progress: bool = True) -> dict:
    """The training frames' labels from evidence fusion (autolabel.fusion) into recipe.fusion_path (stage
    `fuse` of `autolabel run` with fusion.enabled, and `autolabel fuse`)."""
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


def train(recipe: Recipe, k: int, progress: bool = True, until: int | None = None) -> dict:
    """Train round k (resuming its checkpoint; a new round starts from round k-1's weights), on the cached 2D
    supervision, the manual labels ingested before round k's selection and, where the recipe reads them, the
    fused labels."""
    device = resolve_device(recipe.device)
    frames = open_frames(recipe, "train", load_images=True, load_gt=False)
    cache = open_cache(recipe)
    manual = round_manual_labels(recipe, k)
    # the fused labels, for the student's 3D targets (loss.fused_3d) and the teacher's evidence
    fused = fused_labels(recipe, training=True)
    # the manual labels, and with rounds.propagate what they carry to the other keyframes of their scenes (never
    # clearing what the fused labels see occupied)
    mode, grid = recipe.rounds.propagate, recipe.network.grid
    labels3d = PropagatedLabels(manual, frames, grid, mode, now=fused) if mode != "none" and manual else None
    result = train_round(
        frames,
        cache,
        recipe.round_dir(k) / "train",
        recipe.network,
        recipe.render,
        recipe.loss,
        recipe.train,
        recipe.dts,
        device,
        aux_frames=recipe.data.aux_frames,
        manual=manual,
        labels3d=labels3d,
        fused=fused,
        previous=checkpoint_path(recipe, k - 1) if k > 0 else None,
        progress=progress,
        until=until,
    )
    return {"round": k, **result}


def label(recipe: Recipe, k: int, progress: bool = True) -> dict:
    """Round k's network labels the pool into the store (resumes after a crash)."""
    device = resolve_device(recipe.device)  # under torchrun this also joins the process group, before any I/O
    frames = open_frames(recipe, "train", load_images=True, load_gt=False)
    cache = open_cache(recipe)
    checkpoint = check_checkpoint(recipe, k)  # before the store is written
    store = labelling_store(recipe.store_path, recipe.network.grid)
    fused = fused_labels(recipe, training=False)
    return label_round(
        frames,
        cache,
        store,
        k,
        recipe.network,
        recipe.dts,
        checkpoint,
        device,
        recipe_record(recipe),
        progress=progress,
        fused=fused,
    )


def evaluate_checkpoint(
    recipe: Recipe, checkpoint: Path, split: str = "val", weights: str = "student", progress: bool = True
) -> OccupancyScores:
    """Occ3D scores of a trained network (the student, or the teacher depth-aware as configured) on the
    recipe's `split` frames with ground truth."""
    return evaluate_checkpoint_networks(recipe, checkpoint, split, (weights,), progress)[weights]


def evaluate_checkpoint_networks(
    recipe: Recipe, checkpoint: Path, split: str = "val", weights: tuple[str, ...] = ("student",), progress: bool = True
) -> dict[str, OccupancyScores]:
    """`evaluate_checkpoint` for several of the checkpoint's networks at once (the frames are read once)."""
    device = resolve_device(recipe.device)
    frames = open_frames(recipe, split, load_images=True, load_gt=True)
    return evaluate_network(
        frames, checkpoint, recipe.network, recipe.dts, device, split, weights, progress, where=f"recipe {recipe.name}"
    )


def evaluate(recipe: Recipe, k: int, progress: bool = True) -> dict:
    """Round k's manual labels counted; where the dataset has ground truth, the network on the validation
    scenes ("val"; with DTS also the teacher that labels, depth-aware as configured: "val_teacher") and the pool's
    pseudo-labels (all, and at the export threshold)."""
    manual = round_manual_labels(recipe, k)
    out: dict = {"labelled": len(manual), "labelled_voxels": labelled_voxels(manual, recipe.network.grid.shape)}
    if not has_gts(recipe):
        return out
    if recipe.data.val_scenes:
        nets = ("student", "teacher") if recipe.dts.enabled else ("student",)
        scored = evaluate_checkpoint_networks(recipe, checkpoint_path(recipe, k), "val", nets, progress)
        out["val"] = scored["student"].as_dict()
        if "teacher" in scored:
            out["val_teacher"] = scored["teacher"].as_dict()
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


def export(recipe: Recipe, k: int, progress: bool = True) -> dict:
    """Round k as Occ3D files in ``<run>/export/round_<K>/`` at the recipe's drop quantile: the ingested manual
    labels, with rounds.export_propagate what they carry to the other keyframes of their scenes, pseudo-labels
    elsewhere."""
    folder = export_dir(recipe, k)
    carried, mode = None, recipe.rounds.export_propagate
    if mode != "none":
        manual = manual_labels(recipe.store_path, recipe.network.grid)  # every ingested label, as export writes
        if manual:
            frames = open_frames(recipe, "train", load_images=False, load_gt=False)
            carried = PropagatedLabels(manual, frames, recipe.network.grid, mode)
    s = export_occ3d(
        LabelStore.open(recipe.store_path),
        k,
        folder,
        recipe.rounds.export_drop_quantile,
        progress,
        carried=carried,
    )
    keys = ("frames", "frames_pseudo", "frames_carried", "kept_in_mask_camera")
    return {key: v for key, v in s.items() if key in keys} | {"folder": str(folder)}


def score_round(recipe: Recipe, k: int, progress: bool = True, workers: int | None = None) -> PoolScores | None:
    """Round k's pool scored by its teacher and student (every rank scores its share; rank 0 gets the pool,
    the others None)."""
    device = resolve_device(recipe.device)  # joins the process group under torchrun
    frames = open_frames(recipe, "train", load_images=True, load_gt=False)
    store = LabelStore.open(recipe.store_path, recipe.network.grid)
    return score_pool(
        frames,
        open_cache(recipe),
        store,
        k,
        checkpoint_path(recipe, k),
        recipe.network,
        recipe.render,
        recipe.dts,
        recipe.selection,
        device,
        progress=progress,
        workers=workers,
    )


@dataclass
class Selection:
    """What the select stage chose: the scored pool, the picks, the strategy and the manifest's path."""

    pool: PoolScores
    picks: list[Pick]
    strategy: str
    manifest: Path

    def record(self) -> dict:
        out = {"strategy": self.strategy, "selected": len(self.picks), "manifest": str(self.manifest)}
        if self.pool.regions is not None:
            out |= {"tiles": sum(len(p.tiles) for p in self.picks), "voxels": sum(p.voxels for p in self.picks)}
        return out


def select(recipe: Recipe, k: int, progress: bool = True) -> Selection | None:
    """Active selection after round k: the pool scored (sharded over ranks) when the strategy reads scores
    (`needs_scores`), frames or tiles picked under the recipe's budget, the manifest and the annotators' page
    written (rank 0; other ranks return None)."""
    device = resolve_device(recipe.device)  # joins the process group under torchrun
    store = LabelStore.open(recipe.store_path, recipe.network.grid)
    frames = open_frames(recipe, "train", load_images=True, load_gt=False)  # the manifest's page shows the cameras
    n_labelled = int(labelled_frames(store, list(frames.tokens)).sum())
    selection = fusion_default(recipe.selection, recipe.fusion.enabled)
    if selection.strategy == "fusion":  # the fused labels' own uncertainty, no network (the recipe checks that
        # fusion is enabled); every rank reads its share, rank 0 gets the pool
        pool = fusion_pool(frames, store, k, LabelStore.open(recipe.fusion_path), selection, progress)
    elif needs_scores(selection, n_labelled, len(frames)):
        pool = score_round(recipe, k, progress=progress)
    else:
        pool = unscored_pool(frames, store, k, recipe.network.grid, selection) if is_main() else None
    if pool is None:
        return None
    picks, strategy = select_pool(pool, selection, distance_device(device))
    path = write_manifest(
        select_dir(recipe, k),
        k,
        picks,
        strategy,
        len(pool.tokens),
        int(pool.labelled.sum()),
        selection,
        frames,
        recipe.digest(),
        recipe.delivery_dir(k) if recipe.rounds.annotator == "folder" else None,
        store,
        pool.regions,
    )
    return Selection(pool, picks, strategy, path)


def ingest_folder(recipe: Recipe, k: int, folder: str | Path) -> dict:
    """Annotations of round k's manifest delivered in `folder` (Occ3D files, or point labels + boxes) into
    the store's manual group; the full summary (tokens added, unchanged, missing; voxels)."""
    frames = open_frames(recipe, "train", load_images=False, load_gt=False)
    return ingest_delivery(
        manifest_path(recipe, k), k, folder, frames, recipe.store_path, recipe.network.grid, recipe.network.image_size
    )


def oracle_delivery(recipe: Recipe, k: int, gts_root: str | Path, out: str | Path) -> int:
    """The simulated annotator's delivery of round k's manifest into `out` (from the ground truth under
    `gts_root`, or the world's point labels and boxes); the number of frames delivered."""
    frames = open_frames(recipe, "train", load_images=False, load_gt=False)
    return oracle_annotate(manifest_path(recipe, k), gts_root, out, recipe.network.grid, frames)


def ingest(recipe: Recipe, k: int) -> dict:
    """The ingest stage of `autolabel run`: the simulated annotator's delivery (rounds.annotator oracle), or
    the annotators' folder ``rounds.annotations_dir/round_<K>``; AwaitingAnnotations until it exists, unless
    every frame was already ingested by hand (`autolabel ingest`)."""
    if recipe.rounds.annotator == "oracle":
        folder = recipe.round_dir(k) / "oracle_annotations"
        oracle_delivery(recipe, k, recipe.dataroot, folder)
    else:
        folder = recipe.delivery_dir(k)
        if not folder.is_dir():
            done = _ingested_by_hand(recipe, k)
            if done is not None:
                return done
            raise AwaitingAnnotations(
                f"round {k}: waiting for annotations in {folder} (the frames are listed in "
                f"{select_dir(recipe, k) / 'index.html'}); deliver them and rerun "
                f"`autolabel run`"
            )
    s = ingest_folder(recipe, k, folder)
    return {
        "added": len(s["added"]),
        "manual_total": s["manual_total"],
        "voxels_added": s["voxels_added"],
        "manual_voxels": s["manual_voxels"],
    }


def _ingested_by_hand(recipe: Recipe, k: int) -> dict | None:
    """The ingest stage's result when every frame of round k's manifest already has a manual label (delivered
    elsewhere and stored with `autolabel ingest RECIPE --round K DIR`, as the selection page offers), else None."""
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


def report(recipe: Recipe, k: int, metrics: dict, history: list[dict], exported: dict | None = None) -> dict:
    """Round k's HTML report in ``<run>/report/round_<K>/``: the student on a few validation (else pool)
    frames, the scores, the selection, the budget curve over `history` (one entry per round so far)."""
    device = resolve_device(recipe.device)
    checkpoint = checkpoint_path(recipe, k)
    model = load_network(recipe.network, checkpoint, device, "student").model
    threshold = readout(recipe.dts, checkpoint).occupied_threshold
    split = "val" if recipe.data.val_scenes else "train"
    frames = open_frames(recipe, split, load_images=True, load_gt=True)
    dataset = FrameDataset(
        frames,
        recipe.network.image_size,
        labels="cache",
        cache=open_cache(recipe),
        grid=recipe.network.grid,
        manual=None,
    )
    mpath = manifest_path(recipe, k)
    manifest = read_manifest(mpath) if mpath.is_file() else None
    page = write_round_report(
        recipe.run_dir / "report" / f"round_{k}",
        k,
        model,
        threshold,
        dataset,
        split,
        device,
        recipe.network.grid,
        recipe.network.image_size,
        recipe.render,
        select_dir(recipe, k),
        manifest,
        k == recipe.rounds.count - 1,
        recipe.rounds.export_drop_quantile,
        metrics,
        history,
        exported,
        title=recipe.name,
        run_dir=recipe.run_dir,
    )
    return {"page": str(page)}
