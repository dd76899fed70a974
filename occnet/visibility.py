"""Visibility rays: camera rays for ``mask_camera``; the voxel walk itself is `kernels.walk.ray_voxels`
(re-exported here: C++ / CUDA backends, PyTorch reference)."""

from __future__ import annotations

import torch

from kernels.walk import ray_voxels  # noqa: F401  (re-exported)


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
