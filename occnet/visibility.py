"""Exact voxel traversal of many rays at once (Amanatides-Woo), in torch on any device.

Used for Occ3D visibility masks (rays walk until the first occupied voxel: ``mask_camera`` from
camera pixels, ``mask_lidar`` from the lidar towards its points) and for LiDAR free space (rays walk
until their return distance). All rays advance one voxel per iteration; a ray leaves the active set
when it stops, so the loop runs as many iterations as the longest ray crosses voxels.
"""
from __future__ import annotations

import torch

from kernels.grid import GridSpec


def ray_voxels(origins: torch.Tensor, dirs: torch.Tensor, grid: GridSpec, occupied: torch.Tensor | None = None,
               t_max: torch.Tensor | None = None) -> torch.Tensor:
    """Voxels crossed by rays.

    Args:
        origins: (3,) or (R, 3) ray origins in the grid's metric frame.
        dirs: (R, 3) unit directions.
        occupied: optional (X, Y, Z) bool; a ray stops after the first occupied voxel it enters
            (that voxel is included: it is the surface the ray sees).
        t_max: optional (R,) distances; a ray stops at t_max (voxels it enters before t_max are included).
    Returns:
        (X, Y, Z) bool, True for every voxel some ray entered.
    """
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


def camera_rays(K: torch.Tensor, cam2ego: torch.Tensor, hw: tuple[int, int],
                spacing: float = 0.008) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays for ``mask_camera``: one per s x s pixel block, s chosen so that rays are about `spacing`
    radians apart (8 mrad: 0.32 m at the 40 m edge of the Occ3D grid, under its 0.4 m voxels).

    K (3, 3) intrinsics of an (H, W) image, cam2ego (4, 4). Returns origin (3,) and unit dirs (R, 3).
    """
    f = torch.float64
    K, T = K.to(f), cam2ego.to(f)
    s = max(1, int(float(K[0, 0]) * spacing))
    h, w = hw
    v, u = torch.meshgrid(torch.arange(s / 2, h, s, dtype=f, device=K.device),
                          torch.arange(s / 2, w, s, dtype=f, device=K.device), indexing="ij")
    pix = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(u.numel(), dtype=f, device=K.device)], 1)
    d = pix @ torch.linalg.inv(K).T
    d = d / d.norm(dim=1, keepdim=True)
    return T[:3, 3], d @ T[:3, :3].T
