"""Occ3D visibility: camera rays for ``mask_camera`` and both masks of a labelled frame; the voxel walk itself
is `kernels.walk.ray_voxels` (re-exported here: C++ / CUDA backends, PyTorch reference)."""

from __future__ import annotations

import torch

from kernels.walk import ray_voxels

from .classes import FREE_ID


def camera_rays(
    K: torch.Tensor, cam2ego: torch.Tensor, hw: tuple[int, int], spacing: float = 0.008
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays for ``mask_camera``: one per s x s pixel block, s chosen so that rays are about `spacing`
    radians apart (8 mrad: 0.32 m at the 40 m edge of the Occ3D grid, under its 0.4 m voxels).

    K (3, 3) intrinsics of an (H, W) image, cam2ego (4, 4). Returns origin (3,) and unit dirs (R, 3).
    """
    f = torch.float64
    K, T = K.to(f), cam2ego.to(f)
    s = max(1, int(float(K[0, 0]) * spacing))
    h, w = hw
    v, u = torch.meshgrid(
        torch.arange(s / 2, h, s, dtype=f, device=K.device),
        torch.arange(s / 2, w, s, dtype=f, device=K.device),
        indexing="ij",
    )
    pix = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(u.numel(), dtype=f, device=K.device)], 1)
    d = pix @ torch.linalg.inv(K).T
    d = d / d.norm(dim=1, keepdim=True)
    return T[:3, 3], d @ T[:3, :3].T


def visibility_masks(
    semantics: torch.Tensor,
    K: torch.Tensor,
    cam2ego: torch.Tensor,
    hw: tuple[int, int],
    lidar_origin: torch.Tensor,
    lidar_points: torch.Tensor,
    grid,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Occ3D masks of one frame: (X, Y, Z) uint8 mask_camera, mask_lidar."""
    occupied = semantics < FREE_ID
    rays = [camera_rays(K[k], cam2ego[k], hw) for k in range(K.shape[0])]
    # all cameras' rays in one walk (the walk's cost is its number of steps, not of rays)
    origins = torch.cat([o.expand_as(d) for o, d in rays])
    cam = ray_voxels(origins, torch.cat([d for _, d in rays]), grid, occupied)
    vec = lidar_points.double() - lidar_origin.double()
    norm = vec.norm(dim=1, keepdim=True)
    dirs = vec[norm[:, 0] > 1e-6] / norm[norm[:, 0] > 1e-6]
    lid = ray_voxels(lidar_origin, dirs, grid, occupied)
    return cam.to(torch.uint8), lid.to(torch.uint8)
