"""Exact voxel traversal of many rays at once (Amanatides-Woo): which voxels rays enter.

Used for Occ3D visibility masks (rays walk until the first occupied voxel: ``mask_camera`` from camera
pixels, ``mask_lidar`` from the lidar towards its points) and for LiDAR free space (rays walk until
their return distance), at training time (the DTS teacher's LiDAR filtering, every step) and labelling.

Backends: "reference" (PyTorch on any device: all rays advance one voxel per iteration and leave the
active set when they stop; it defines the op), "cpu" (C++, rays in parallel) and "cuda" (one thread per
ray), which repeat the reference's float64 arithmetic operation by operation and mark the same voxels.
The fastest available for the inputs' device is used; ``AUTOLABEL_KERNELS=reference|cpu|cuda`` or the
``backend`` argument forces one. Several frames go through one call with `frame` (ray -> frame) and a
(B, X, Y, Z) `occupied`. The walk is the torch.library op ``autolabel_kernels::ray_voxels`` (with a fake
function, without autograd: its output is a bool mask), so torch.compile sees it as one op.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ._build import NAMESPACE, load_backend, pick_backend
from .grid import GridSpec

_warned: set[str] = set()


def ray_voxels_reference(
    origins: torch.Tensor,
    dirs: torch.Tensor,
    grid: GridSpec,
    occupied: torch.Tensor | None = None,
    t_max: torch.Tensor | None = None,
) -> torch.Tensor:
    """One frame's walk in PyTorch (the definition). Arguments as `ray_voxels` without `frame`; (X, Y, Z) bool."""
    dev = dirs.device
    f = torch.float64
    shape = torch.tensor(grid.shape, device=dev)
    lo = torch.tensor(grid.range_min, device=dev, dtype=f)
    hi = torch.tensor(grid.range_max, device=dev, dtype=f)
    vs = torch.tensor(grid.voxel_size, device=dev, dtype=f)
    visited = torch.zeros(grid.num_voxels, dtype=torch.bool, device=dev)
    d = dirs.to(f)
    o = origins.to(f).expand_as(d)
    inside_slab = (o >= lo) & (o <= hi)
    inv = torch.where(d != 0, 1.0 / d, torch.full_like(d, float("inf")))
    t0 = torch.where(d != 0, (lo - o) * inv, torch.where(inside_slab, -torch.inf, torch.inf))
    t1 = torch.where(d != 0, (hi - o) * inv, torch.where(inside_slab, torch.inf, -torch.inf))
    t_in = torch.minimum(t0, t1).amax(1).clamp(min=0.0)
    t_out = torch.maximum(t0, t1).amin(1)
    if t_max is not None:
        t_out = torch.minimum(t_out, t_max.to(f))
    alive = t_in < t_out
    o, d, t_in, t_out = o[alive], d[alive], t_in[alive], t_out[alive]
    p = o + (t_in + 1e-9)[:, None] * d
    idx = torch.minimum(torch.floor((p - lo) / vs).long().clamp(min=0), shape - 1)
    step = torch.sign(d).long()
    next_plane = lo + (idx + (step > 0).long()) * vs
    t_next = torch.where(step != 0, (next_plane - o) / d, torch.full_like(d, float("inf")))
    t_delta = torch.where(step != 0, vs / d.abs(), torch.full_like(d, float("inf")))
    strides = torch.tensor([grid.shape[1] * grid.shape[2], grid.shape[2], 1], device=dev)
    lin = (idx * strides).sum(1)
    dlin = step * strides
    big = torch.iinfo(torch.int64).max
    left = torch.where(step > 0, shape - 1 - idx, torch.where(step < 0, idx, torch.full_like(idx, big)))
    occ = occupied.reshape(-1) if occupied is not None else None
    while lin.numel():
        visited[lin] = True
        rows = torch.arange(len(lin), device=dev)
        axis = t_next.argmin(1)
        t_enter = t_next[rows, axis]  # where the ray enters its next voxel
        left[rows, axis] -= 1
        go = (left[rows, axis] >= 0) & (t_enter < t_out)
        if occ is not None:
            go &= ~occ[lin]
        lin = lin + dlin[rows, axis]
        t_next[rows, axis] += t_delta[rows, axis]
        keep = go.nonzero()[:, 0]
        lin, t_next, t_delta, dlin, left, t_out = (x[keep] for x in (lin, t_next, t_delta, dlin, left, t_out))
    return visited.view(grid.shape)


@torch.library.custom_op(f"{NAMESPACE}::ray_voxels", mutates_args=())
def ray_voxels_op(
    origins: torch.Tensor,
    dirs: torch.Tensor,
    occupied: Optional[torch.Tensor],
    t_max: Optional[torch.Tensor],
    frame: Optional[torch.Tensor],
    frames: int,
    grid_min: Sequence[float],
    grid_max: Sequence[float],
    voxel_size: Sequence[float],
    backend: str,
) -> torch.Tensor:
    """The registered op behind `ray_voxels` (no autograd: its output is a bool mask): origins (R, 3), dirs
    (R, 3), occupied (B, X, Y, Z) or None, t_max (R,) or None, frame (R,) or None (then B = frames = 1);
    returns (B, X, Y, Z) bool. One implementation for every device type picks the backend when it runs."""
    grid = GridSpec(range_min=grid_min, range_max=grid_max, voxel_size=voxel_size)
    R, dev = dirs.shape[0], dirs.device
    if frame is not None and R and (int(frame.min()) < 0 or int(frame.max()) >= frames):
        raise ValueError(
            f"ray_voxels: frame indices must lie in [0, {frames}), got {int(frame.min())}..{int(frame.max())}"
        )
    chosen = pick_backend("ray_voxels", backend or None, dev, _warned, load_backend, prefix="walk_")
    if chosen == "reference":
        if frame is None:
            return ray_voxels_reference(origins, dirs, grid, None if occupied is None else occupied[0], t_max)[None]
        out = []
        for b in range(frames):
            sel = frame == b
            out.append(
                ray_voxels_reference(
                    origins[sel],
                    dirs[sel],
                    grid,
                    None if occupied is None else occupied[b],
                    None if t_max is None else t_max[sel],
                )
            )
        return torch.stack(out)
    f64 = torch.float64
    t = torch.full((R,), float("inf"), dtype=f64, device=dev) if t_max is None else t_max.to(f64).contiguous()
    fr = frame.long().contiguous() if frame is not None else torch.zeros(R, dtype=torch.long, device=dev)
    occ = (
        occupied.reshape(frames, -1).to(torch.uint8).contiguous()
        if occupied is not None
        else torch.empty(0, dtype=torch.uint8, device=dev)
    )
    visited = torch.zeros(frames, grid.num_voxels, dtype=torch.uint8, device=dev)
    load_backend(f"walk_{chosen}").walk(
        origins.to(f64).contiguous(),
        dirs.to(f64).contiguous(),
        t,
        fr,
        occ,
        visited,
        list(grid.range_min),
        list(grid.range_max),
        list(grid.voxel_size),
        list(grid.shape),
    )
    return visited.bool().view(frames, *grid.shape)


@ray_voxels_op.register_fake
def _ray_voxels_fake(origins, dirs, occupied, t_max, frame, frames, grid_min, grid_max, voxel_size, backend):
    shape = GridSpec(range_min=grid_min, range_max=grid_max, voxel_size=voxel_size).shape
    return dirs.new_empty((frames, *shape), dtype=torch.bool)


def ray_voxels(
    origins: torch.Tensor,
    dirs: torch.Tensor,
    grid: GridSpec,
    occupied: torch.Tensor | None = None,
    t_max: torch.Tensor | None = None,
    frame: torch.Tensor | None = None,
    frames: int | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Voxels entered by rays.

    Args:
        origins: (3,) or (R, 3) ray origins in the grid's metric frame.
        dirs: (R, 3) unit directions.
        occupied: optional (X, Y, Z) bool, or (B, X, Y, Z) with `frame`; a ray stops after the first
            occupied voxel it enters (that voxel is included: it is the surface the ray sees).
        t_max: optional (R,) distances; a ray stops at t_max (voxels it enters before t_max are included).
        frame: optional (R,) int64 frame of each ray, for several frames in one call; `frames` = B.
    Returns:
        (X, Y, Z) bool, or (B, X, Y, Z) with `frame`: True for every voxel some ray (of that frame) entered.
    """
    if dirs.dim() != 2 or dirs.shape[1] != 3:
        raise ValueError(f"ray_voxels: dirs must be (R, 3), got {tuple(dirs.shape)}")
    R = dirs.shape[0]
    batched = frame is not None
    if batched and (frames is None or frame.shape != (R,)):
        raise ValueError("ray_voxels: pass frame (R,) together with frames = B")
    B = frames if batched else 1
    if occupied is not None and tuple(occupied.shape) != ((B, *grid.shape) if batched else grid.shape):
        raise ValueError(
            f"ray_voxels: occupied must be {'(B, ' if batched else '('}{', '.join(map(str, grid.shape))}), "
            f"got {tuple(occupied.shape)}"
        )
    visited = ray_voxels_op(
        origins.expand(R, 3),
        dirs,
        occupied if batched or occupied is None else occupied[None],
        t_max,
        frame,
        B,
        grid.range_min,
        grid.range_max,
        grid.voxel_size,
        backend or "",
    )
    return visited if batched else visited[0]
