"""Training by rendering: AdamW + warm-up + cosine, bf16 autocast on GPU, gradient clipping, EMA hooks,
atomic checkpoints that resume exactly (step, optimiser, scheduler, hooks; batches and rays are a
function of the step, so a resumed run continues the same curve)."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, Protocol

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from . import interrupt
from .atomic import atomic_write
from .augment import check_bev_grid, draw_bev, flip_cameras
from .classes import DYNAMIC_CLASS_IDS
from .config import LossConfig, RenderConfig, TrainConfig
from .fractions import batch_fractions
from .distributed import barrier, rank, world_size
from .losses import depth_distribution_ce, line_of_sight, opacity_entropy, rendered_semantics_ce, silog, voxel_ce
from .network import NetworkOutput, OccupancyNetwork
from .rays import concat_rays, render, sample_rays

CHECKPOINT = "checkpoint.pt"


@functools.lru_cache(maxsize=8)  # the same mask every step
def within_range(grid, metres: float, device: torch.device) -> torch.Tensor:
    """(X, Y, 1) float: 1 where a voxel column's centre lies within `metres` of the ego (horizontally), else 0."""
    x, y, _ = grid.shape
    centres = grid.index_to_world(
        torch.stack(torch.meshgrid(torch.arange(x), torch.arange(y), torch.arange(1), indexing="ij"), -1)
    )
    return (centres[..., :2].norm(dim=-1) <= metres).float().to(device)


class StepHook(Protocol):
    """Called after every optimiser step (e.g. the DTS teacher's EMA update)."""

    def __call__(self, model: torch.nn.Module, step: int) -> None: ...


def default_workers() -> int:
    """DataLoader workers sized to the machine: leave a core for the main process, at most 8
    (AUTOLABEL_WORKERS overrides, e.g. when several trainings share a machine)."""
    if os.environ.get("AUTOLABEL_WORKERS"):
        return int(os.environ["AUTOLABEL_WORKERS"])
    return max(0, min(8, (os.cpu_count() or 1) - 1))


class StepBatches(Sampler[list[int]]):
    """Batches as a function of the step: epoch e is a permutation seeded by (seed, e). Under several
    processes, the step's global batch (batch_size x world frames) is cut into one slice per rank.

    With `priority` frames (those with 3D labels) and share > 0, labelled frames cycle through their own
    permutations in the first max(1, round(share x global batch)) positions of every step; with a global
    batch of one frame, every round(1 / share)-th step is a labelled frame instead."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        start: int,
        stop: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        priority: list[int] | None = None,
        share: float = 0.0,
    ):
        self.n, self.batch_size, self.start, self.stop, self.seed = n, batch_size, start, stop, seed
        self.rank, self.world = rank, world
        self.priority = list(priority or [])
        self.per_step = batch_size * world
        active = bool(self.priority) and share > 0 and len(self.priority) < n
        self.n_priority = max(1, round(share * self.per_step)) if active and self.per_step > 1 else 0
        self.period = max(2, round(1 / share)) if active and self.per_step == 1 else 0

    @staticmethod
    def _pick(k: int, n: int, seed: int) -> int:
        epoch, pos = divmod(k, n)
        return int(torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))[pos])

    def _labelled(self, k: int) -> int:
        return self.priority[self._pick(k, len(self.priority), self.seed + 7919)]

    def indices(self, step: int) -> list[int]:
        if self.period:  # one frame per step: interleave whole steps
            if step % self.period == 0:
                return [self._labelled(step // self.period)]
            return [self._pick(step - (step + self.period - 1) // self.period, self.n, self.seed)]
        out = []
        rest = self.per_step - self.n_priority
        first = self.rank * self.batch_size
        for j in range(first, first + self.batch_size):  # j: position in the step's global batch
            if j < self.n_priority:
                out.append(self._labelled(step * self.n_priority + j))
            else:
                out.append(self._pick(step * rest + j - self.n_priority, self.n, self.seed))
        return out

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


# the seed multipliers of the per-frame random streams (Trainer.frame_generator): distinct, so that a frame's rays,
# augmentation and depth-prior draw are independent
RAY_STREAM, AUGMENT_STREAM, PRIOR_STREAM = 1_000_003, 7_000_003, 5_000_011


class Trainer:
    """Trains an OccupancyNetwork on batches (dicts of tensors, see autolabel.network_input).

    Batch keys: images (B, N, 3, H, W), intrinsics (B, N, 3, 3), cam2ego (B, N, 4, 4), depth (B, N, H, W),
    semantics (B, N, H, W) uint8 (255 none), confidence (B, N, H, W) float in [0, 1] or uint8 levels
    (`occnet.fractions`); optional gt_semantics /
    gt_mask / has_gt (3D labels), gt_annotated (B, X, Y, Z: voxels an annotator labelled, region-level labels)
    and pseudo_semantics / pseudo_confidence / has_pseudo; fused_semantics (B, X, Y, Z) uint8 (255 unobserved)
    / fused_confidence (B, X, Y, Z) float or uint8 levels, for loss.fused_3d.
    """

    def __init__(
        self,
        model: OccupancyNetwork,
        render_cfg: RenderConfig,
        loss_cfg: LossConfig,
        train_cfg: TrainConfig,
        out_dir: str | os.PathLike,
        device: str | torch.device = "cpu",
        hooks: Iterable[StepHook] = (),
        class_weights: torch.Tensor | None = None,
        annotate: Callable[[dict, int], dict] | None = None,
    ):
        self.device = torch.device(device)
        self.rank, self.world = rank(), world_size()
        if self.world > 1 and self.device.type == "cuda":
            # SyncBN needs a GPU; on CPUs (gloo) each rank keeps its own BatchNorm statistics
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(device)  # the network itself: config, state dict, hooks
        self.forward_model: torch.nn.Module = self.model  # what the forward pass goes through (DDP when distributed)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.forward_model = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        self.render_cfg, self.loss_cfg, self.cfg = render_cfg, loss_cfg, train_cfg
        self.out_dir = Path(out_dir)
        self.hooks = list(hooks)
        self.annotate = annotate  # adds targets to a batch on the device (e.g. a teacher's pseudo-labels)
        self.class_weights = None if class_weights is None else class_weights.to(self.device)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0  # optimiser steps done
        self._bev_swap = check_bev_grid(model.cfg.grid) if train_cfg.bev_augment else False

    def _lr_factor(self, step: int) -> float:
        warm = self.cfg.warmup_steps
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, self.cfg.steps - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    # ---- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "hooks": [h.state_dict() if hasattr(h, "state_dict") else None for h in self.hooks],
            "config": {"render": asdict(self.render_cfg), "loss": asdict(self.loss_cfg), "train": asdict(self.cfg)},
        }

    def save(self, path: Path | None = None) -> Path:
        """Rank 0 writes (every rank holds the same weights)."""
        path = path or self.out_dir / CHECKPOINT
        if self.rank == 0:
            atomic_write(path, lambda fh: torch.save(self.state_dict(), fh))
        return path

    def load(self, path: Path | None = None) -> bool:
        path = path or self.out_dir / CHECKPOINT
        if not path.exists():
            return False
        self.load_state(torch.load(path, map_location=self.device, weights_only=True))
        return True

    def load_state(self, state: dict) -> None:
        """Resume from a checkpoint's contents (`load` reads them from out_dir)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        for hook, hs in zip(self.hooks, state.get("hooks", [])):
            if hs is not None and hasattr(hook, "load_state_dict"):
                hook.load_state_dict(hs)

    # ---- one step -----------------------------------------------------------------------------
    def frame_generator(self, stream: int, step: int, position: int, device="cpu") -> torch.Generator:
        """The generator of one frame's random draws in one stream (rays, augmentation, the depth prior), seeded by
        (seed, step, position in the step's global batch): the same on resume and on any rank layout."""
        return torch.Generator(device=device).manual_seed(self.cfg.seed * stream + step * 4099 + position)

    def prior_depth(self, b: dict, step: int, offset: int) -> torch.Tensor | None:
        """The depth maps (B, N, H, W) the forward pass sharpens its depth distribution with: the batch's LiDAR depth
        for the frames drawn for `train.depth_prior_share` (per frame from (seed, step, position), like the rays),
        zeros (no prior) for the rest; None when no frame of the batch is drawn."""
        share = self.cfg.depth_prior_share
        if share <= 0:
            return None
        depth = b["depth"]
        gens = [self.frame_generator(PRIOR_STREAM, step, offset + i) for i in range(depth.shape[0])]
        use = torch.tensor([float(torch.rand((), generator=g)) < share for g in gens]).to(depth.device)
        if not bool(use.any()):
            return None
        return torch.where(use[:, None, None, None], depth, torch.zeros_like(depth))

    def losses(self, batch: dict, step: int, offset: int = 0) -> dict[str, torch.Tensor]:
        """Loss terms of a batch; `offset` is the position of its first frame in the step's global batch
        (frames' rays are seeded by (step, position), so a frame gets the same rays on any rank layout)."""
        cfg, lc = self.render_cfg, self.loss_cfg
        dev = self.device
        b = {k: (v.to(dev, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        b = batch_fractions(b)  # confidences arrive as uint8 levels from the cache and the fused labels
        if self.annotate is not None and lc.pseudo_3d > 0:
            b.update(self.annotate(b, step))  # the teacher sees the frames as they are, before augmentation
        # augmentations drawn per frame from (seed, step, position), like the rays: same on resume and any rank layout
        aug = (
            [self.frame_generator(AUGMENT_STREAM, step, offset + i) for i in range(b["images"].shape[0])]
            if self.cfg.image_flip or self.cfg.bev_augment
            else []
        )
        if self.cfg.image_flip:
            b = flip_cameras(b, torch.stack([torch.rand(b["images"].shape[1], generator=g) < 0.5 for g in aug]))
        bev = [draw_bev(g, self._bev_swap) for g in aug] if self.cfg.bev_augment else []
        cam2ego = b["cam2ego"]
        if bev:
            m = torch.stack([t.matrix() for t in bev]).to(cam2ego)
            cam2ego = m[:, None] @ cam2ego
        prior = self.prior_depth(b, step, offset)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda" and self.cfg.bf16):
            out = self.forward_model(b["images"], b["intrinsics"], cam2ego, prior)
        if bev:  # the output grids back into each frame's own ego frame, where every target lives
            out = NetworkOutput(
                density=torch.stack([t.unmap(d, 0) for t, d in zip(bev, out.density)]),
                logits=torch.stack([t.unmap(x, 0) for t, x in zip(bev, out.logits)]),
                depth_prob=out.depth_prob,
            )
        terms: dict[str, torch.Tensor] = {}
        rendering = lc.depth > 0 or lc.semantics_2d > 0 or lc.opacity_entropy > 0 or lc.line_of_sight > 0
        parts = []
        if lc.depth_distribution > 0:
            net = self.model.cfg
            prior = self.model.view.depth_prior(b["depth"])
            terms["depthbins"] = lc.depth_distribution * depth_distribution_ce(
                out.depth_prob, prior, net.depth_min, net.depth_step
            )
        if rendering:
            grid = self.model.cfg.grid
            for i in range(b["images"].shape[0]):
                gen = self.frame_generator(RAY_STREAM, step, offset + i, dev)
                # a frame with no LiDAR point in the grid (and no label) has nothing to render: skip it
                try:
                    parts.append(
                        sample_rays(
                            b["intrinsics"][i],
                            b["cam2ego"][i],
                            b["depth"][i],
                            b["semantics"][i],
                            b["confidence"][i],
                            cfg.rays_per_frame,
                            cfg.class_balance,
                            gen,
                            batch=i,
                            grid=grid,
                            depth_target=cfg.depth_target,
                            semantic_rays=cfg.semantic_rays,
                            semantic_share=cfg.semantic_share,
                        )
                    )
                except ValueError:
                    pass
                if cfg.aux_rays_per_frame and "aux_depth" in b:
                    # rays from neighbouring keyframes, already in this frame's ego frame; moving classes dropped
                    for a in torch.nonzero(b["aux_valid"][i]).flatten().tolist():
                        try:
                            parts.append(
                                sample_rays(
                                    b["aux_intrinsics"][i, a],
                                    b["aux_cam2ego"][i, a],
                                    b["aux_depth"][i, a],
                                    b["aux_semantics"][i, a],
                                    b["aux_confidence"][i, a],
                                    cfg.aux_rays_per_frame,
                                    cfg.class_balance,
                                    gen,
                                    batch=i,
                                    weight=cfg.aux_weight,
                                    drop_classes=DYNAMIC_CLASS_IDS,
                                    grid=grid,
                                    depth_target=cfg.depth_target,
                                )
                            )
                        except ValueError:  # nothing of that neighbour falls in this frame's grid
                            pass
        if rendering and parts:
            rays = concat_rays(parts)
            rendered = render(out.density, out.logits, rays, self.model.cfg.grid, cfg)
            if lc.depth > 0:
                terms["depth"] = lc.depth * silog(rendered.depth, rays.depth, rays.weight, lc.silog_lambda)
            if lc.semantics_2d > 0:
                terms["sem2d"] = lc.semantics_2d * rendered_semantics_ce(rendered, rays, self.class_weights)
            if lc.opacity_entropy > 0:
                terms["opacity"] = lc.opacity_entropy * opacity_entropy(rendered)
            if lc.line_of_sight > 0:
                margin = float(min(self.model.cfg.grid.voxel_size))
                terms["sight"] = lc.line_of_sight * line_of_sight(out.density, rays, self.model.cfg.grid, cfg, margin)
        voxel = float(min(self.model.cfg.grid.voxel_size))
        # gt_annotated (B, X, Y, Z), where given: the voxels an annotator labelled (region-level labels; all of a
        # whole-frame label, none of an unlabelled frame). 3D labels count only there; pseudo-labels everywhere else.
        annotated = b["gt_annotated"].float() if "gt_annotated" in b else None
        if lc.labels_3d > 0 and "gt_semantics" in b:
            w = b["gt_mask"].float() * b["has_gt"].float()[:, None, None, None]
            if annotated is not None:
                w = w * annotated
            terms["labels3d"] = lc.labels_3d * voxel_ce(
                out.density, out.logits, b["gt_semantics"], w, voxel, lc.class_balance_3d
            )
        if lc.pseudo_3d > 0 and "pseudo_semantics" in b:
            if annotated is not None:
                w = b["pseudo_confidence"].float() * (1 - annotated)
            else:
                w = b["pseudo_confidence"].float() * b["has_pseudo"].float()[:, None, None, None]
            terms["pseudo3d"] = lc.pseudo_3d * voxel_ce(
                out.density, out.logits, b["pseudo_semantics"], w, voxel, lc.class_balance_3d, lc.smoothing_3d
            )
        if lc.fused_3d > 0 and "fused_semantics" in b:
            # labels fused from the scene's evidence (255 where it saw nothing): like pseudo-labels, on the
            # voxels no annotator labelled
            w = b["fused_confidence"].float()
            if lc.fused_confidence_power != 1:
                w = torch.where(w > 0, w.pow(lc.fused_confidence_power), w)
            if annotated is not None:
                w = w * (1 - annotated)
            elif "has_gt" in b:
                w = w * (~b["has_gt"].bool()).float()[:, None, None, None]
            terms["fused3d"] = lc.fused_3d * voxel_ce(
                out.density,
                out.logits,
                b["fused_semantics"],
                w,
                voxel,
                lc.class_balance_3d,
                lc.smoothing_3d,
                lc.fused_agreement_power,
                within_range(self.model.cfg.grid, lc.fused_name_range, w.device) if lc.fused_name_range else None,
            )
        if not terms:
            raise ValueError("Trainer: every loss is off or has no targets in the batch; turn one on in LossConfig")
        return terms

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimiser step on this rank's frames, in `accumulate` micro-batches of batch_size frames."""
        self.forward_model.train()
        acc = self.cfg.accumulate
        n = batch["images"].shape[0]
        if n % acc:
            raise ValueError(f"Trainer: a batch of {n} frames does not split into {acc} micro-batches")
        size = n // acc
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for m in range(acc):
            part = {
                k: (v[m * size : (m + 1) * size] if torch.is_tensor(v) or isinstance(v, list) else v)
                for k, v in batch.items()
            }
            sync = m == acc - 1 or self.world == 1
            ctx = contextlib.nullcontext() if sync else self.forward_model.no_sync()
            with ctx:
                terms = self.losses(part, self.step, offset=self.rank * n + m * size)
                total = sum(terms.values())
                (total / acc).backward()
            for k, v in {"loss": total, **terms}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / acc
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        for hook in self.hooks:
            hook(self.model, self.step)
        return sums

    def fit(
        self,
        dataset: Dataset,
        batch_size: int = 1,
        workers: int | None = None,
        on_log: Callable[[int, dict], None] | None = None,
        progress: bool = True,
        until: int | None = None,
        labelled: list[int] | None = None,
        resume: bool = True,
    ) -> list[dict]:
        """Train up to cfg.steps (or `until`, to stop early), resuming from the checkpoint in out_dir
        (resume=False: the caller has loaded it already). labelled: dataset positions of frames with 3D
        labels (sampled at cfg.labelled_share of each step)."""
        if resume:
            self.load()
        stop = self.cfg.steps if until is None else min(until, self.cfg.steps)
        sampler = StepBatches(
            len(dataset),
            batch_size * self.cfg.accumulate,
            self.step,
            stop,
            self.cfg.seed,
            self.rank,
            self.world,
            priority=labelled,
            share=self.cfg.labelled_share,
        )
        workers = default_workers() if workers is None else workers
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        history = []
        start = time.perf_counter()
        # a resumed run counts on from its checkpoint: 50/250, not 0/200
        bar = tqdm(loader, total=stop, initial=self.step, desc="train", disable=not progress or self.rank != 0)
        for batch in bar:
            interrupt.check()  # a Ctrl-C that a finalizer swallowed stops training here (occnet.interrupt)
            logs = self.train_step(batch)
            history.append(logs)
            bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()})
            if on_log is not None and self.rank == 0:
                on_log(self.step, {**logs, "seconds": round(time.perf_counter() - start, 3)})  # wall time since fit()
            if self.step % self.cfg.checkpoint_every == 0 or self.step in (stop, self.cfg.steps):
                self.save()
        barrier()  # the last checkpoint is on disk before any rank goes on to read it
        return history
