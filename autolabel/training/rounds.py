"""Training of one round: rendering losses on the cached 2D supervision, the DTS teacher, and 3D losses
on the frames annotated so far (the store's manual labels)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from occnet.atomic import atomic_write
from occnet.distributed import barrier, is_main
from occnet.network import OccupancyNetwork
from occnet.trainer import CHECKPOINT, Trainer

from ..checkpoint import read_checkpoint, save_threshold, teacher_state
from ..data.occ3d import Occ3DLabels
from ..dataset import open_frames
from ..dts.teacher import EMATeacher
from ..errors import DataError
from ..fusion.store import open_fused
from ..network_input import FrameDataset
from ..recipe import Recipe
from ..store.frame_arrays import FrameArrays
from ..store.labels import LabelStore, read_frame
from ..supervision.cache import SupervisionCache
from ..supervision.providers import resolve_device
from .calibrate import calibrate_threshold


def manual_labels(store_path: Path, grid, exclude: set[str] = frozenset()) -> dict[str, Occ3DLabels]:
    """Token -> Occ3D labels of every ingested manual frame but those in `exclude` (empty when nothing
    was annotated yet). A region-level label (issue 21) carries `mask_annotated`, the voxels an annotator
    labelled (the manual group's confidence 255); a whole-frame label has None (every voxel)."""
    if not (store_path / "zarr.json").is_file():
        return {}
    manual = LabelStore.open(store_path, grid).manual()
    if manual is None:
        return {}
    out = {}
    done = manual.done()
    for i, token in enumerate(manual.tokens):
        if done[i] and token not in exclude:
            f = read_frame(manual, i)
            annotated = f["confidence"] == 255
            out[token] = Occ3DLabels(
                f["semantics"],
                f["mask_lidar"],
                f["mask_camera"],
                mask_annotated=None if annotated.all() else annotated.astype(np.uint8),
            )
    return out


def labelled_voxels(manual: dict[str, Occ3DLabels], shape) -> int:
    """Voxels labelled by annotators in `manual_labels`' frames: a whole frame counts the grid, a region-level
    label its annotated tiles."""
    whole = int(np.prod(shape))
    return sum(whole if lab.mask_annotated is None else int(lab.mask_annotated.sum()) for lab in manual.values())


def selected_from(recipe: Recipe, k: int) -> set[str]:
    """Tokens that round k or a later round selected for annotation. Round k does not train on their
    manual labels: they answer a later selection, so retraining round k of a finished run sees what it saw
    then. Manual labels that answer no selection of this run (given before it, or written directly by a
    benchmark's oracle) count for every round."""
    from ..active.rounds import manifest_path, read_manifest

    out: set[str] = set()
    j = k
    while manifest_path(recipe, j).is_file():
        out |= {row["token"] for row in read_manifest(manifest_path(recipe, j))["selected"]}
        j += 1
    return out


def open_cache(recipe: Recipe) -> SupervisionCache:
    if not (recipe.cache_path / "zarr.json").is_file():
        raise DataError(
            f"no 2D supervision cache at {recipe.cache_path}; run `autolabel supervise` with this recipe first"
        )
    return SupervisionCache.open(recipe.cache_path)


def fused_labels(recipe: Recipe, training: bool) -> FrameArrays | None:
    """The run's fused labels (autolabel.fusion) where a round reads them, else None: training reads them for
    loss.fused_3d and for a teacher with dts.evidence: fusion, labelling for dts.evidence: fusion."""
    teacher = recipe.dts.evidence == "fusion" and (recipe.dts.enabled or not training)
    if not (teacher or (training and recipe.loss.fused_3d > 0)):
        return None
    return open_fused(recipe.fusion_path, recipe.network.grid)


def checkpoint_path(recipe: Recipe, k: int) -> Path:
    return recipe.round_dir(k) / "train" / CHECKPOINT


def _trim_history(log: Path, step: int) -> None:
    """Drop the log lines of steps after the checkpoint: a run killed at step 54 with its checkpoint at 50
    redoes steps 51-54, which must then appear once, not twice."""
    if not log.is_file():
        return

    def kept(line: str) -> bool:
        try:
            return json.loads(line)["step"] <= step
        except (ValueError, KeyError, TypeError):  # a line cut short by the kill
            return False

    lines = log.read_text().splitlines(keepends=True)
    keep = [line for line in lines if kept(line)]
    if len(keep) != len(lines):
        atomic_write(log, lambda fh: fh.write("".join(keep).encode()))


def train_round(recipe: Recipe, k: int, progress: bool = True, until: int | None = None) -> dict:
    """Train round k (resuming its checkpoint; a new round starts from round k-1's weights)."""
    device = resolve_device(recipe.device)
    frames = open_frames(recipe, "train", load_images=True, load_gt=False)
    cache = open_cache(recipe)
    manual = manual_labels(recipe.store_path, recipe.network.grid, selected_from(recipe, k))
    # the fused labels, for the student's 3D targets (loss.fused_3d) and the teacher's evidence
    fused = fused_labels(recipe, training=True)
    dataset = FrameDataset(
        frames,
        recipe.network.image_size,
        labels="cache",
        cache=cache,
        grid=recipe.network.grid,
        aux_frames=recipe.data.aux_frames,
        manual=manual,
        fused=fused,
    )
    torch.manual_seed(recipe.train.seed)
    out_dir = recipe.round_dir(k) / "train"
    prev = checkpoint_path(recipe, k - 1) if k > 0 else None
    # network.backbone_weights initialise a fresh round 0 only: a checkpoint's weights replace them otherwise
    fresh = not (out_dir / CHECKPOINT).exists() and not (prev is not None and prev.exists())
    model = OccupancyNetwork(recipe.network, pretrained=fresh)
    if not (out_dir / CHECKPOINT).exists() and prev is not None and prev.exists():
        state = read_checkpoint(prev)
        model.load_state_dict(state["model"])  # fine-tune from the last round; optimiser and schedule start afresh
    teacher = EMATeacher(model, recipe.dts) if recipe.dts.enabled else None
    if teacher is not None and not (out_dir / CHECKPOINT).exists() and prev is not None and prev.exists():
        saved = teacher_state(state)
        if saved is not None:
            teacher.load_state_dict(saved)
    trainer = Trainer(
        model,
        recipe.render,
        recipe.loss,
        recipe.train,
        out_dir,
        device,
        hooks=[teacher] if teacher else [],
        annotate=teacher.annotate if teacher else None,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "history.jsonl"  # one line per step
    if (out_dir / CHECKPOINT).exists():
        trainer.load_state(read_checkpoint(out_dir / CHECKPOINT, map_location=device))
    if is_main():
        _trim_history(log, trainer.step)

    def on_log(step: int, row: dict) -> None:
        with open(log, "a") as fh:
            fh.write(json.dumps({"step": step, **row}) + "\n")

    labelled = [i for i, idx in enumerate(dataset.indices) if frames.tokens[idx] in manual]
    history = trainer.fit(
        dataset,
        batch_size=recipe.train.batch_size,
        progress=progress,
        until=until,
        on_log=on_log,
        labelled=labelled,
        resume=False,
    )
    if recipe.dts.calibrate_threshold and trainer.step >= recipe.train.steps and is_main():
        save_threshold(out_dir, calibrate_threshold(model, dataset, device))
    barrier()
    return {
        "round": k,
        "steps": trainer.step,
        "frames": len(dataset),
        "manual_frames": len(manual),
        "manual_voxels": labelled_voxels(manual, recipe.network.grid.shape),
        "checkpoint": str(out_dir / CHECKPOINT),
        "last": history[-1] if history else None,
    }
