"""Exact Occ3D ground truth of a synthetic frame.

* `voxelize`: voxels of the GridSpec (ego frame) are sampled at s x s x s sub-voxel points (s = 3 near
  primitives thinner than two voxels, so that 0.24 m poles are never missed; s = 2 inside larger ones); a
  voxel is occupied when any sample lies inside a solid (primitives, or the ground slab z in
  [-GROUND_DEPTH, 0)), and takes the class that fills the largest fraction of it (ties: the lower id).
* `visible_voxels`: voxels that rays traverse before the first occupied voxel, plus that voxel (Occ3D's
  rule for mask_lidar and mask_camera), by an exact voxel walk of all rays at once.
"""

from __future__ import annotations

import numpy as np
import torch

from kernels.grid import GridSpec
from occnet.classes import FREE_ID, NUM_CLASSES
from occnet.visibility import ray_voxels

from .primitives import Primitives, contains
from .world import World

GROUND_DEPTH = 0.2  # the ground is a solid slab this thick under z = 0


def _sample_offsets(s: int) -> np.ndarray:
    return (np.arange(s) + 0.5) / s


def voxelize(world: World, prims: Primitives, ego2world: np.ndarray, grid: GridSpec, samples: int = 3) -> np.ndarray:
    """(X, Y, Z) uint8 Occ3D semantics (free = 17) of the world around the ego pose."""
    X, Y, Z = grid.shape
    s = samples
    lo_g = np.array(grid.range_min)
    vs = np.array(grid.voxel_size)
    fill = np.zeros((NUM_CLASSES, X, Y, Z), np.float32)  # occupied fraction of each voxel per class
    world2ego = np.linalg.inv(ego2world)
    off = _sample_offsets(s)
    # ---- ground slab: the ground raster sampled under every voxel column of the layers it reaches
    z_samples = lo_g[2] + (np.arange(Z)[:, None] + off[None]) * vs[2]  # (Z, s)
    in_slab = ((z_samples >= -GROUND_DEPTH) & (z_samples < 0)).sum(1)  # samples per layer inside the slab
    layers = np.flatnonzero(in_slab)
    if len(layers):
        gx = lo_g[0] + (np.arange(X)[:, None] + off[None]).ravel() * vs[0]
        gy = lo_g[1] + (np.arange(Y)[:, None] + off[None]).ravel() * vs[1]
        ex, ey = np.meshgrid(gx, gy, indexing="ij")  # (X s, Y s) ego xy
        wx = ego2world[0, 0] * ex + ego2world[0, 1] * ey + ego2world[0, 3]
        wy = ego2world[1, 0] * ex + ego2world[1, 1] * ey + ego2world[1, 3]
        g_cls, _ = world.ground_at(wx.ravel(), wy.ravel())
        vox = (np.arange(X * s)[:, None] // s * Y + np.arange(Y * s)[None] // s).ravel()
        per_col = np.bincount(vox * NUM_CLASSES + g_cls, minlength=X * Y * NUM_CLASSES).reshape(X, Y, NUM_CLASSES)
        for z in layers:
            fill[:, :, :, z] += (per_col * (in_slab[z] / s**3)).transpose(2, 0, 1)
    # ---- primitives: test only the sub-samples inside each one's box, in ego voxel indices
    lo_w, hi_w = prims.aabb()
    corners = np.stack([np.where(np.array([(i >> a) & 1 for a in range(3)], bool), hi_w, lo_w) for i in range(8)], 1)
    ego_c = corners @ world2ego[:3, :3].T + world2ego[:3, 3]
    i0 = np.floor((ego_c.min(1) - lo_g) / vs).astype(int)
    i1 = np.floor((ego_c.max(1) - lo_g) / vs).astype(int) + 1
    i0 = np.maximum(i0, 0)
    i1 = np.minimum(i1, [X, Y, Z])
    thin = (hi_w - lo_w).min(1) < 2 * vs.min()
    for p in np.flatnonzero((i1 > i0).all(1)):
        a, b = i0[p], i1[p]
        s = samples if thin[p] else 2
        off = _sample_offsets(s)
        axes = [lo_g[k] + (np.arange(a[k], b[k])[:, None] + off[None]).ravel() * vs[k] for k in range(3)]
        pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        inside = contains(int(prims.kind[p]), prims.params[p], pts @ ego2world[:3, :3].T + ego2world[:3, 3])
        if not inside.any():
            continue
        n = b - a
        per_voxel = inside.reshape(n[0], s, n[1], s, n[2], s).sum((1, 3, 5))
        fill[prims.cls[p], a[0] : b[0], a[1] : b[1], a[2] : b[2]] += per_voxel / s**3
    total = fill.sum(0)
    return np.where(total > 0, fill.argmax(0), FREE_ID).astype(np.uint8)


def visible_voxels(occupied: np.ndarray, origins: np.ndarray, dirs: np.ndarray, grid: GridSpec) -> np.ndarray:
    """(X, Y, Z) bool: voxels that rays (ego frame, unit dirs) cross up to and including the first
    occupied one (exact traversal, `occnet.visibility.ray_voxels`)."""
    o = torch.from_numpy(np.ascontiguousarray(origins, dtype=np.float64))
    d = torch.from_numpy(np.ascontiguousarray(dirs, dtype=np.float64))
    return ray_voxels(o, d, grid, torch.from_numpy(np.ascontiguousarray(occupied))).numpy()
