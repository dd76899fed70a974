"""A labelling round made by evidence fusion alone (no network): every frame's fused labels into the store."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from kernels.grid import GridSpec
from occnet import interrupt
from occnet.distributed import barrier, is_main, rank, world_size
from occnet.trainer import default_workers
from occnet.visibility import visibility_masks

from ..data.nuscenes import NuScenesFrames
from ..provenance import sources_digest, supervision_source, timestamp
from ..store.frame_arrays import ShardWriter, pending_frames
from ..store.labels import LabelStore
from ..supervision.cache import SupervisionCache
from .config import FusionConfig
from .evidence import KeyframeData, WindowReader, frame_evidence, reading_order
from .fuse import Fused, finish_rules, fuse, name_points
from .map_prior import cell_sides


def _as_read(item):
    """The DataLoader's collate: a keyframe as `read_keyframe` returns it (no tensors made of its arrays)."""
    return item


def fuse_round(
    frames: NuScenesFrames,
    cache: SupervisionCache,
    store: LabelStore,
    k: int,
    grid: GridSpec,
    cfg: FusionConfig,
    device: torch.device,
    progress: bool = True,
    workers: int | None = None,
) -> dict:
    """Write round k's labels from fusion for every frame not yet done (resumable by the store's done flags;
    under torchrun each rank fuses whole shards of frames, written together as labelling does). Unobserved voxels
    are 255 with confidence 0:
    evaluation counts them as unlabelled. Masks as Occ3D's, against the fused occupancy.

    The work of a frame runs as a pipeline over `workers` processes (default `default_workers()`; 0: all in this
    one, in order): DataLoader workers read the keyframes ahead (files, movers, map sides, missing beams: each
    once for all the windows it is in), this process votes and runs the per-point rules on `device`, and with
    `fusion.voxels: rules` a pool of the other workers runs the volume rules (NumPy, on the CPU) while the next
    frames are voted; a frame's masks and write follow its volume rules. Every frame's labels are the ones the
    one-process order gives."""
    provenance = {
        "labeller": "fusion",
        "fusion": cfg.settings(),
        **supervision_source(cache.arrays.attrs),
        "code_digest": sources_digest(),
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
    workers = default_workers() if workers is None else workers
    volume = workers // 2 if cfg.voxels == "rules" else 0  # processes for the volume rules; the rest read
    order = reading_order(frames, [frames.tokens[i] for i in pending], cfg.window)  # pending: scene order
    loader = DataLoader(
        KeyframeData(frames, cache, order, cfg),
        batch_size=None,
        collate_fn=_as_read,
        num_workers=workers - volume,
        prefetch_factor=2 * cfg.window + 2 if workers > volume else None,
    )
    read = WindowReader(frames, cache, cfg, device, source=iter(loader) if order else None)
    pool = ProcessPoolExecutor(volume, mp_context=get_context("spawn")) if volume else None
    in_flight: deque[tuple[int, Future | Fused, tuple]] = deque()  # frames whose volume rules may still run

    def finish(writer: ShardWriter) -> None:
        i, job, (origin, points, K, cam2ego) = in_flight.popleft()
        fused = job.result() if isinstance(job, Future) else job
        semantics = torch.from_numpy(fused.semantics).to(device)
        cam_mask, lidar_mask = visibility_masks(semantics, K, cam2ego, tuple(cache.image_size), origin, points, grid)
        writer.add(
            i,
            semantics=fused.semantics,
            confidence=fused.confidence,
            mask_camera=cam_mask.cpu().numpy(),
            mask_lidar=lidar_mask.cpu().numpy(),
        )

    # a shard's frames are written together once all are fused, by a thread while the next frames are fused
    try:
        with ShardWriter(arrays, pending, background=True) as writer:
            for i in tqdm(pending, desc=f"fuse round {k}", disable=not progress or not is_main()):
                interrupt.check()
                ev = frame_evidence(frames, cache, frames.tokens[i], cfg, device, read)
                own = ev.sweeps[ev.target]
                cams = [v for v in ev.views if v.source == ev.target]
                K = torch.stack([v.K for v in cams]).float()
                cam2ego = torch.stack([torch.linalg.inv(v.target2cam) for v in cams]).float()
                cells = None
                if cfg.map_prior > 0 and cfg.map_ground > 0:  # the grid's cells against the scene's map
                    pose = read(frames.tokens[i])[0].frame.lidar.ego2global  # the grid's frame
                    cells = cell_sides(frames.semantic_prior(frames.tokens[i]), pose, grid)
                if pool is not None:
                    named = name_points(ev.sweeps, ev.views, grid, cfg, ev.target)
                    job = pool.submit(finish_rules, named, grid, cfg, cells)
                else:
                    job = fuse(ev.sweeps, ev.views, grid, cfg, ev.target, cells)
                in_flight.append((i, job, (own.origin, own.points[own.keyframe], K, cam2ego)))
                while len(in_flight) > volume:  # as many frames in the pool as it has processes
                    finish(writer)
            while in_flight:
                finish(writer)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    barrier()
    return {"frames": len(frames), "labelled": len(pending), "seconds": time.perf_counter() - t0}
