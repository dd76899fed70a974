"""`autolabel label`: teacher inference over the unlabeled pool into a round of the pseudo-label store.

Per batch of frames (GPU when there is one): the teacher's depth-aware forward pass, LiDAR filtering
(from the cached depth maps), then Occ3D visibility masks by exact ray walks against the labelled
occupancy: ``mask_camera`` from every camera (a ray per 8 mrad), ``mask_lidar`` from the lidar sensor
towards each of the keyframe's own points. A frame is marked done only after all four arrays are written.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from occnet import interrupt
from occnet.distributed import barrier, is_main, rank, world_size
from occnet.fractions import batch_fractions
from occnet.trainer import default_workers
from occnet.visibility import visibility_masks

from ..checkpoint import load_network, readout
from ..config_io import to_dict
from ..data.nuscenes import NuScenesFrames
from ..provenance import (
    file_sha256,
    package_version,
    recipe_record,
    sources_digest,
    supervision_source,
    timestamp,
)
from ..store.frame_arrays import FrameArrays, ShardWriter, pending_frames
from ..store.labels import LabelStore
from ..supervision.cache import SupervisionCache
from ..network_input import FrameDataset
from .config import DTSConfig
from .teacher import frame_fused, frame_lidar, pseudo_labels, teacher_probabilities


def labelling_store(path: Path, grid) -> LabelStore:
    """The store every rank labels into: rank 0 creates it (root attributes) before the others open it, so
    no rank reads half-written attributes under torchrun. Call on every rank; alone it is a plain create."""
    store = LabelStore(path, grid, create=True) if is_main() else None
    barrier()
    return store if store is not None else LabelStore(path, grid, create=True)


# what the teacher and the LiDAR filter read, stacked into one batch; the 2D labels tell which LiDAR returns
# lie on ground (their free space stops at the ground layer)
BATCH_KEYS = ("images", "intrinsics", "cam2ego", "depth", "semantics", "fused_semantics", "fused_confidence")


def _collate(items: list[dict]) -> tuple[dict, list[dict]]:
    """FrameDataset items -> (the batch's stacked tensors, each frame's token and LiDAR points). Stacked in
    the loader's worker, so that the pin-memory thread pins the batch and its copy to the GPU overlaps."""
    keys = [key for key in BATCH_KEYS if key in items[0]]
    frames = [{key: it[key] for key in ("token", "lidar_origin", "lidar_points")} for it in items]
    return {key: torch.stack([it[key] for it in items]) for key in keys}, frames


def label_round(
    frames: NuScenesFrames,
    cache: SupervisionCache,
    store: LabelStore,
    k: int,
    network_cfg,
    dts: DTSConfig,
    checkpoint: Path,
    device: torch.device,
    recipe: dict | None = None,
    workers: int | None = None,
    progress: bool = True,
    weights: str = "teacher",
    fused: FrameArrays | None = None,
) -> dict:
    """Write round k's pseudo-labels for every frame of `frames` not yet done. Returns a summary.
    `recipe`: the run's recipe as provenance records it (`autolabel.provenance.recipe_record`); weights="student"
    labels with the student's weights (for measuring what the teacher adds); `fused` the fused labels
    (autolabel.fusion) that dts.evidence: fusion filters by."""
    if dts.evidence == "fusion" and fused is None:
        raise ValueError("label_round: dts.evidence is fusion, pass the fused labels (fused=)")
    net = load_network(network_cfg, checkpoint, device, weights)
    model, step = net.model, net.step
    dts = readout(dts, checkpoint)  # the calibrated occupancy threshold, when training saved one
    provenance = {
        **(recipe or recipe_record(None)),
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": file_sha256(checkpoint),
        "teacher_step": step,
        "weights": net.weights,
        "dts": to_dict(dts),
        **supervision_source(cache.arrays.attrs),
        "package_version": package_version(),
        "code_digest": sources_digest(),
        "created": timestamp(),
        # the fusion settings behind the teacher's evidence (a resumed round must have used the same)
        "fusion": fused.attrs.get("fusion") if dts.evidence == "fusion" else None,
    }
    scenes = [frames.scene_of(t) for t in frames.tokens]
    # under torchrun: rank 0 creates the round, then every rank labels its own frames (i % world == rank);
    # whole shards per rank, so ranks never rewrite the same shard file
    if is_main():
        arrays = store.create_round(k, frames.tokens, scenes, provenance)
    barrier()
    if not is_main():
        arrays = store.create_round(k, frames.tokens, scenes, provenance)
    pending = pending_frames(arrays, rank(), world_size())
    grid = network_cfg.grid
    fused = fused if dts.evidence == "fusion" else None
    dataset = FrameDataset(
        frames, network_cfg.image_size, labels="cache", cache=cache, indices=pending, grid=grid, lidar=True, fused=fused
    )
    loader = DataLoader(
        dataset,
        batch_size=dts.batch_size,
        num_workers=default_workers() if workers is None else workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
    )
    t0 = time.perf_counter()
    bar = tqdm(total=len(pending), desc=f"label round {k}", disable=not progress or not is_main())
    # a shard's frames are written together once all are labelled, by a thread while the GPU goes on
    with ShardWriter(arrays, pending, background=True) as writer:
        for stacked, items in loader:
            interrupt.check()
            batch = batch_fractions({key: v.to(device, non_blocking=True) for key, v in stacked.items()})
            occ, cls, pcls = teacher_probabilities(model, batch, dts.depth_aware)
            out = []
            for i, item in enumerate(items):
                lidar = frame_lidar(batch, i, grid) if dts.lidar_filter else None
                sem, levels = pseudo_labels(
                    occ[i],
                    cls[i],
                    pcls[i],
                    lidar,
                    dts.occupied_threshold,
                    frame_fused(batch, i) if fused is not None else None,
                    fusion_doubt=dts.label_fusion_doubt,
                    doubt_ground_only=dts.doubt_classes == "ground",
                    fusion_free=dts.label_fusion_free,
                    fill=dts.label_fill,
                )
                cam_mask, lidar_mask = visibility_masks(
                    sem,
                    batch["intrinsics"][i],
                    batch["cam2ego"][i],
                    tuple(network_cfg.image_size),
                    item["lidar_origin"].to(device),
                    item["lidar_points"].to(device),
                    grid,
                )
                out.append(torch.stack([sem, levels, cam_mask, lidar_mask]))  # all uint8 (X, Y, Z)
            # one copy back per batch, not four per frame (each copy waits for the GPU)
            for item, (sem, levels, cam_mask, lidar_mask) in zip(items, torch.stack(out).cpu().numpy()):
                writer.add(
                    frames.index(item["token"]),
                    semantics=sem,
                    confidence=levels,
                    mask_camera=cam_mask,
                    mask_lidar=lidar_mask,
                )
                bar.update(1)
    bar.close()
    barrier()  # the round is complete when every rank is done
    return {
        "frames": len(frames),
        "labelled": len(pending),
        "skipped": len(frames) - len(pending),
        "seconds": time.perf_counter() - t0,
        "teacher_step": step,
        "weights": provenance["weights"],
    }
