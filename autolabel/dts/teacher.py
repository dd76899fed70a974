"""The EMA teacher: a Trainer step hook that follows the student, and annotates batches with
pseudo-labels for the student's confidence-weighted 3D cross-entropy."""

from __future__ import annotations

import copy

import torch

from occnet.classes import IGNORE_ID
from occnet.distributed import is_distributed
from occnet.inference import voxel_labels, voxel_probabilities
from occnet.network import OccupancyNetwork

from ..store.confidence import class_thresholds, confidence_histogram, threshold, to_levels
from .config import DTSConfig
from .pseudo import apply_fusion, apply_lidar, best_threshold, lidar_free_and_hits, lidar_iou_counts


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model  # DistributedDataParallel


class EMATeacher:
    """teacher = m * teacher + (1 - m) * student after every optimiser step, with
    m = min(momentum, 1 - (1 + warmup) / (age + 1 + warmup)) so that the teacher tracks the young
    student closely and averages over longer and longer windows later. Buffers (BatchNorm statistics)
    are copied, not averaged. Its age is the number of updates its weights have seen: the round's step in
    round 0, and with `dts.carry_teacher` the previous rounds' updates plus the step in a later round, which
    starts from the previous round's teacher (a teacher that restarted its ramp there took the student's
    weights within a few steps: momentum 0.08 at the first)."""

    def __init__(self, student: torch.nn.Module, cfg: DTSConfig):
        self.cfg = cfg
        self.model: OccupancyNetwork = copy.deepcopy(_unwrap(student)).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.lidar_counts: torch.Tensor | None = None  # (2, C) running LiDAR IoU counts of the online read-out
        self.updates = 0  # EMA updates the weights have seen, over every round they were carried through

    def momentum(self, step: int) -> float:
        return min(self.cfg.momentum, 1 - (1 + self.cfg.warmup) / (step + 1 + self.cfg.warmup))

    def age(self, step: int) -> int:
        """The teacher's age at the round's `step`: what its momentum ramp and dts.start_step count. The max
        holds a round resumed from a checkpoint written before the count was kept (age = step there)."""
        return max(self.updates, step) if self.cfg.carry_teacher else step

    @torch.no_grad()
    def __call__(self, student: torch.nn.Module, step: int) -> None:
        self.updates = max(self.updates + 1, step)
        m = self.momentum(self.age(step))
        s = _unwrap(student)
        self.to(next(s.parameters()).device)  # the trainer moves the student after the teacher was made
        for tp, sp in zip(self.model.parameters(), s.parameters()):
            tp.mul_(m).add_(sp.detach(), alpha=1 - m)
        for tb, sb in zip(self.model.buffers(), s.buffers()):
            tb.copy_(sb)
        if is_distributed():
            # parameters are equal on every rank after DDP's all-reduce, BatchNorm statistics are not (each
            # rank normalised its own frames): rank 0's go to all, so that every rank's teacher is the same
            for tb in self.model.buffers():
                torch.distributed.broadcast(tb, src=0)

    def to(self, device: torch.device) -> "EMATeacher":
        self.model.to(device)
        return self

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "lidar_counts": self.lidar_counts, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.lidar_counts = state.get("lidar_counts")  # checkpoints before online calibration have none
        self.updates = int(state.get("updates", 0))  # nor before 2026-12-02 the count of updates (`age`)

    # ---- predictions ---------------------------------------------------------------------------
    @torch.no_grad()
    def probabilities(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher forward (depth-aware: with the LiDAR depth prior) -> occ, cls, pcls (B, X, Y, Z)."""
        return teacher_probabilities(self.model, batch, self.cfg.depth_aware)

    @torch.no_grad()
    def annotate(self, batch: dict, step: int) -> dict:
        """Pseudo-label targets for a batch already on the device: pseudo_semantics (B, X, Y, Z) int64 ids
        (255 = dropped), pseudo_confidence (B, X, Y, Z) float, has_pseudo (B,) = frames without 3D labels.
        Nothing before the teacher's age (`age`) reaches cfg.start_step: a teacher that has seen too few steps
        teaches noise."""
        if self.age(step) < self.cfg.start_step:
            return {}
        self.to(batch["images"].device)
        occ, cls, pcls = self.probabilities(batch)
        grid = self.model.cfg.grid
        lidar = [
            frame_lidar(batch, i, grid) if self.cfg.lidar_filter or self.cfg.online_calibration else None
            for i in range(occ.shape[0])
        ]
        occupied = self.online_threshold(occ, lidar)
        sems, levels = [], []
        for i in range(occ.shape[0]):
            s, lv = pseudo_labels(
                occ[i],
                cls[i],
                pcls[i],
                lidar[i] if self.cfg.lidar_filter else None,
                occupied,
                frame_fused(batch, i) if self.cfg.evidence == "fusion" else None,
                fusion_doubt=self.cfg.target_fusion_doubt,
                doubt_ground_only=self.cfg.doubt_classes == "ground",
                fusion_free=self.cfg.target_fusion_free,
            )
            sems.append(s)
            levels.append(lv)
        sem, lev = torch.stack(sems), torch.stack(levels)
        thr = class_thresholds(confidence_histogram(sem, lev), self.cfg.drop_quantile)
        sem = threshold(sem, lev, thr).long()
        conf = lev.float() / 255
        conf = torch.where(sem == IGNORE_ID, torch.zeros_like(conf), conf)
        has_gt = batch.get("has_gt", torch.zeros(occ.shape[0], dtype=torch.bool, device=occ.device))
        return {"pseudo_semantics": sem, "pseudo_confidence": conf, "has_pseudo": ~has_gt.bool()}

    def online_threshold(self, occ: torch.Tensor, lidar: list) -> float:
        """The occupancy threshold for this batch's pseudo-labels: `dts.occupied_threshold`, or with
        `dts.online_calibration` the candidate whose occupied voxels best match the LiDAR-hit voxels, over
        running counts (decay 0.9 per batch, summed over ranks) of the batches annotated so far. The same
        criterion as the read-out calibrated after training (autolabel.training.calibrate), applied while
        the teacher's density field is still moving."""
        if not self.cfg.online_calibration:
            return self.cfg.occupied_threshold
        counts = torch.stack([torch.stack(lidar_iou_counts(occ[i], *lidar[i])) for i in range(occ.shape[0])]).sum(0)
        if is_distributed():
            torch.distributed.all_reduce(counts)
        counts = counts.cpu()
        self.lidar_counts = counts if self.lidar_counts is None else 0.9 * self.lidar_counts + counts
        return best_threshold(*self.lidar_counts)[0]


def teacher_probabilities(model: OccupancyNetwork, batch: dict, depth_aware: bool):
    was = model.training
    model.eval()
    try:
        cuda = batch["images"].is_cuda
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out = model(batch["images"], batch["intrinsics"], batch["cam2ego"], batch["depth"] if depth_aware else None)
        return voxel_probabilities(out, float(min(model.cfg.grid.voxel_size)))
    finally:
        model.train(was)


def frame_lidar(batch: dict, i: int, grid) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame i's LiDAR free and hit voxels (X, Y, Z) from the batch's depth maps and 2D labels."""
    return lidar_free_and_hits(
        batch["depth"][i], batch["intrinsics"][i], batch["cam2ego"][i], grid, batch["semantics"][i]
    )


def frame_fused(batch: dict, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame i's fused labels (X, Y, Z) and their confidence, from the batch (FrameDataset(fused=...))."""
    if "fused_semantics" not in batch:
        raise ValueError("dts.evidence: fusion, but the batch has no fused labels (FrameDataset(fused=...))")
    return batch["fused_semantics"][i], batch["fused_confidence"][i]


def pseudo_labels(
    occ: torch.Tensor,
    cls: torch.Tensor,
    pcls: torch.Tensor,
    lidar: tuple | None,
    occupied_threshold: float,
    fused: tuple | None = None,
    fusion_doubt: float = 0.0,
    fusion_free: bool = False,
    fill: bool = True,
    doubt_ground_only: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame's labels before thresholding: semantics (X, Y, Z) uint8 (free = 17) and uint8 confidence
    levels; `lidar` = (free, hit) from `frame_lidar` to apply LiDAR filtering, or None; `fused` = (labels,
    confidence) from `frame_fused` to filter by the fused evidence as well (needs `lidar`); `fusion_doubt`:
    fusion's names less confident than this yield to a surer teacher (`doubt_ground_only`: flat-ground names
    to its flat-ground classes only), `fusion_free`: fusion's free space wins over the frame's returns, `fill`:
    the teacher's read-out fills what neither the LiDAR nor fusion observed, else it stays unlabelled
    (`apply_fusion`)."""
    sem, conf = voxel_labels(occ, cls, pcls, occupied_threshold)
    if fused is not None:
        sem, conf = apply_fusion(
            sem,
            conf,
            cls,
            pcls,
            *lidar,
            *fused,
            fusion_doubt=fusion_doubt,
            fusion_free=fusion_free,
            fill=fill,
            doubt_ground_only=doubt_ground_only,
        )
    elif lidar is not None:
        sem, conf = apply_lidar(sem, conf, cls, pcls, *lidar)
    return sem, to_levels(conf)
