"""A labelling round made by evidence fusion alone (no network): every frame's fused labels into the store."""

from __future__ import annotations

import time

import torch
from tqdm import tqdm

from kernels.grid import GridSpec
from occnet import interrupt
from occnet.distributed import barrier, is_main, rank, world_size
from occnet.visibility import visibility_masks

from ..data.nuscenes import NuScenesFrames
from ..provenance import supervision_source, timestamp
from ..store.frame_arrays import ShardWriter, pending_frames
from ..store.labels import LabelStore
from ..supervision.cache import SupervisionCache
from .config import FusionConfig
from .evidence import WindowReader, frame_evidence
from .fuse import fuse


def fuse_round(
    frames: NuScenesFrames,
    cache: SupervisionCache,
    store: LabelStore,
    k: int,
    grid: GridSpec,
    cfg: FusionConfig,
    device: torch.device,
    progress: bool = True,
) -> dict:
    """Write round k's labels from fusion for every frame not yet done (resumable by the store's done flags;
    under torchrun each rank fuses whole shards of frames, written together as labelling does). Unobserved voxels
    are 255 with confidence 0:
    evaluation counts them as unlabelled. Masks as Occ3D's, against the fused occupancy."""
    provenance = {
        "labeller": "fusion",
        "fusion": cfg.settings(),
        **supervision_source(cache.arrays.attrs),
        "created": timestamp(),
    }
    scenes = [frames.scene_of(t) for t in frames.tokens]
    if is_main():  # rank 0 creates the round before the others open it
        arrays = store.create_round(k, frames.tokens, scenes, provenance)
    barrier()
    if not is_main():
        arrays = store.create_round(k, frames.tokens, scenes, provenance)
    pending = pending_frames(arrays, rank(), world_size())
    t0 = time.perf_counter()
    read = WindowReader(frames, cache, 2 * cfg.window + 1)  # pending frames come in scene order
    # a shard's frames are written together once all are fused, by a thread while the next frames are fused
    with ShardWriter(arrays, pending, background=True) as writer:
        for i in tqdm(pending, desc=f"fuse round {k}", disable=not progress or not is_main()):
            interrupt.check()
            token = frames.tokens[i]
            ev = frame_evidence(frames, cache, token, cfg, device, read)
            fused = fuse(ev.sweeps, ev.views, grid, cfg, ev.target)
            own = ev.sweeps[ev.target]
            cams = [v for v in ev.views if v.source == ev.target]
            K = torch.stack([v.K for v in cams]).float()
            cam2ego = torch.stack([torch.linalg.inv(v.target2cam) for v in cams]).float()
            semantics = torch.from_numpy(fused.semantics).to(device)
            cam_mask, lidar_mask = visibility_masks(
                semantics, K, cam2ego, tuple(cache.image_size), own.origin, own.points[own.keyframe], grid
            )
            writer.add(
                i,
                semantics=fused.semantics,
                confidence=fused.confidence,
                mask_camera=cam_mask.cpu().numpy(),
                mask_lidar=lidar_mask.cpu().numpy(),
            )
    barrier()
    return {"frames": len(frames), "labelled": len(pending), "seconds": time.perf_counter() - t0}
