"""Training of one round: rendering losses on the cached 2D supervision, the DTS teacher, and 3D losses
on the frames annotated so far (the store's manual labels) and on the fused labels."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from occnet.atomic import atomic_write
from occnet.config import LossConfig, NetworkConfig, RenderConfig, TrainConfig
from occnet.distributed import barrier, is_main
from occnet.network import OccupancyNetwork
from occnet.trainer import CHECKPOINT, Trainer

from ..checkpoint import read_checkpoint, save_threshold, teacher_state
from ..data.nuscenes import NuScenesFrames
from ..data.occ3d import Occ3DLabels
from ..dts.config import DTSConfig
from ..dts.teacher import EMATeacher
from ..network_input import FrameDataset
from ..store.frame_arrays import FrameArrays
from ..store.manual import labelled_voxels
from ..supervision.cache import SupervisionCache
from .calibrate import calibrate_threshold


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


def train_round(
    frames: NuScenesFrames,
    cache: SupervisionCache,
    out_dir: Path,
    network: NetworkConfig,
    render: RenderConfig,
    loss: LossConfig,
    train: TrainConfig,
    dts: DTSConfig,
    device: torch.device,
    aux_frames: int = 0,
    manual: dict[str, Occ3DLabels] | None = None,
    labels3d: Mapping[str, Occ3DLabels] | None = None,
    fused: FrameArrays | None = None,
    previous: Path | None = None,
    progress: bool = True,
    until: int | None = None,
) -> dict:
    """Train a round's network into `out_dir` (resuming its checkpoint there; a new round starts from the
    `previous` round's checkpoint when it exists). `manual`: token -> the annotators' 3D labels (only
    frames of `frames` count); `labels3d`: the 3D labels training reads, where they are more than `manual`
    (manual labels carried to other keyframes, `autolabel.active.propagate`; the labelled share of batches and
    the counts stay those of `manual`); `fused`: the fused labels, for loss.fused_3d and a teacher with
    dts.evidence: fusion."""
    manual = manual if manual is not None else {}
    dataset = FrameDataset(
        frames,
        network.image_size,
        labels="cache",
        cache=cache,
        grid=network.grid,
        aux_frames=aux_frames,
        manual=manual if labels3d is None else labels3d,
        fused=fused,
    )
    torch.manual_seed(train.seed)
    prev = previous
    # network.backbone_weights initialise a fresh round 0 only: a checkpoint's weights replace them otherwise
    fresh = not (out_dir / CHECKPOINT).exists() and not (prev is not None and prev.exists())
    model = OccupancyNetwork(network, pretrained=fresh)
    if not (out_dir / CHECKPOINT).exists() and prev is not None and prev.exists():
        state = read_checkpoint(prev)
        model.load_state_dict(state["model"])  # fine-tune from the last round; optimiser and schedule start afresh
    teacher = EMATeacher(model, dts) if dts.enabled else None
    if teacher is not None and not (out_dir / CHECKPOINT).exists() and prev is not None and prev.exists():
        saved = teacher_state(state)
        if saved is not None:
            teacher.load_state_dict(saved)
            # a checkpoint written before the teacher counted its updates: it saw one per step of its round
            teacher.updates = teacher.updates or int(state.get("step", 0))
    trainer = Trainer(
        model,
        render,
        loss,
        train,
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
        batch_size=train.batch_size,
        progress=progress,
        until=until,
        on_log=on_log,
        labelled=labelled,
        resume=False,
    )
    if dts.calibrate_threshold and trainer.step >= train.steps and is_main():
        save_threshold(out_dir, calibrate_threshold(model, dataset, device))
    barrier()
    return {
        "steps": trainer.step,
        "frames": len(dataset),
        "manual_frames": len(manual),
        "manual_voxels": labelled_voxels(manual, network.grid.shape),
        "checkpoint": str(out_dir / CHECKPOINT),
        "last": history[-1] if history else None,
    }
