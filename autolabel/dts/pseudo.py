"""Pseudo-labels from teacher predictions: LiDAR filtering (and evidence fusion), and the LiDAR criterion
that calibrates the occupancy read-out. Confidence levels and per-class thresholds are in
`autolabel.store.confidence`.

LiDAR filtering uses the LiDAR depth maps (the returns the cameras see, at the network's resolution):
each pixel with a depth is a ray from the camera centre to its return. Voxels the ray crosses before the
return are free (confidence 1: LiDAR saw through them); the return's voxel is occupied and takes the
teacher's best class (with that class's probability as confidence), even where the teacher said free.
"""

from __future__ import annotations

import torch

from kernels.grid import GridSpec
from occnet.classes import FREE_ID, IGNORE_ID
from occnet.surfaces import is_flat, layer_entry
from occnet.visibility import ray_voxels

# occupancy thresholds tried when calibrating the read-out against LiDAR
THRESHOLD_CANDIDATES = (0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def depth_rays(
    depth: torch.Tensor, K: torch.Tensor, cam2ego: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rays of the pixels with a LiDAR depth. depth (N, H, W) z-depth, K (N, 3, 3), cam2ego (N, 4, 4).

    Returns origins (R, 3), unit directions (R, 3) and distances to the return (R,) in the ego frame.
    """
    cam, v, u = torch.nonzero(depth > 0, as_tuple=True)
    z = depth[cam, v, u].double()
    pix = torch.stack([u.double() + 0.5, v.double() + 0.5, torch.ones_like(z)], 1)
    xyz = torch.linalg.solve(K.double()[cam], pix[..., None])[..., 0] * z[:, None]  # camera frame point
    T = cam2ego.double()[cam]
    point = (T[:, :3, :3] @ xyz[..., None])[..., 0] + T[:, :3, 3]
    origin = T[:, :3, 3]
    vec = point - origin
    dist = vec.norm(dim=1)
    return origin, vec / dist[:, None], dist


def lidar_free_and_hits(
    depth: torch.Tensor, K: torch.Tensor, cam2ego: torch.Tensor, grid: GridSpec, semantics: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, Y, Z) bool grids: voxels LiDAR rays cross before their return (free) and return voxels (hit).

    depth (N, H, W) z-depth (0 none), K (N, 3, 3), cam2ego (N, 4, 4). With the 2D labels `semantics`
    (N, H, W; 255 unknown), a ray whose return lies on a ground class is free only until it enters the
    voxel layer holding the return: the voxels it crosses inside that layer hold ground (occnet.surfaces).
    """
    origin, dirs, dist = depth_rays(depth, K, cam2ego)
    hit = torch.zeros(grid.num_voxels, dtype=torch.bool, device=depth.device)
    if len(dist) == 0:
        return hit.view(grid.shape), hit.view(grid.shape).clone()
    point = origin + dirs * dist[:, None]
    lo = torch.tensor(grid.range_min, device=depth.device, dtype=torch.float64)
    vs = torch.tensor(grid.voxel_size, device=depth.device, dtype=torch.float64)
    idx = torch.floor((point - lo) / vs).long()
    shape = torch.tensor(grid.shape, device=depth.device)
    inside = ((idx >= 0) & (idx < shape)).all(1)
    idx = idx[inside]
    hit[(idx[:, 0] * grid.shape[1] + idx[:, 1]) * grid.shape[2] + idx[:, 2]] = True
    hit = hit.view(grid.shape)
    t_free = dist
    if semantics is not None:
        flat = is_flat(semantics[depth > 0])  # the same row-major pixel order as depth_rays
        entry = layer_entry(origin, dirs, dist, flat, grid)
        # stop a hair before the layer's top plane, so that the walk does not enter the layer's voxel there
        t_free = torch.where(entry < dist, entry - 1e-4, dist)
    free = ray_voxels(origin, dirs, grid, t_max=t_free) & ~hit
    return free, hit


def lidar_iou_counts(occ: torch.Tensor, free: torch.Tensor, hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per threshold candidate, intersection and union (float64, (C,), on occ's device) of the voxels occupied
    at that threshold and the LiDAR-hit voxels, among the voxels LiDAR observed (free | hit). All (X, Y, Z)."""
    seen = free | hit
    o, h = occ[seen].float(), hit[seen]
    th = torch.tensor(THRESHOLD_CANDIDATES, device=o.device)[:, None]
    pred = o[None] >= th  # (C, M)
    inter = (pred & h[None]).sum(1)
    union = (pred | h[None]).sum(1)
    return inter.double(), union.double()


def best_threshold(inter: torch.Tensor, union: torch.Tensor) -> tuple[float, list[float]]:
    """The candidate with the best IoU, and every candidate's IoU."""
    iou = (inter / union.clamp_min(1)).tolist()
    return THRESHOLD_CANDIDATES[max(range(len(iou)), key=lambda j: iou[j])], iou


def apply_lidar(
    semantics: torch.Tensor,
    confidence: torch.Tensor,
    cls: torch.Tensor,
    pcls: torch.Tensor,
    free: torch.Tensor,
    hit: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All (X, Y, Z): LiDAR-free voxels -> free with confidence 1; return voxels -> teacher class, pcls."""
    semantics = torch.where(free, torch.full_like(semantics, FREE_ID), semantics)
    confidence = torch.where(free, torch.ones_like(confidence), confidence)
    semantics = torch.where(hit, cls.to(semantics.dtype), semantics)
    confidence = torch.where(hit, pcls.to(confidence.dtype), confidence)
    return semantics, confidence


def apply_fusion(
    semantics: torch.Tensor,
    confidence: torch.Tensor,
    cls: torch.Tensor,
    pcls: torch.Tensor,
    free: torch.Tensor,
    hit: torch.Tensor,
    fused: torch.Tensor,
    fused_conf: torch.Tensor,
    fusion_doubt: float = 0.0,
    fusion_free: bool = False,
    fill: bool = True,
    doubt_ground_only: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LiDAR filtering with the fused labels of the frame's scene window as well (dts.evidence: fusion).

    All (X, Y, Z): the teacher's read-out semantics / confidence, its best class cls and that class's
    probability pcls, the frame's own LiDAR free / hit voxels (`lidar_free_and_hits`), the fused labels
    (uint8: free = 17, unobserved = 255) and their confidence in [0, 1]. Free: what the frame's LiDAR or
    fusion saw through, unless a return of the frame lies there (confidence 1 for the frame's own rays,
    fusion's otherwise; with `fusion_free` (dts.label_fusion_free) fusion's free space also where a return of
    the frame lies: fusion holds that return and freed the voxel on the evidence of more rays). Occupied: the
    frame's returns (with `fusion_free` those fusion did not free) and fusion's occupied voxels, named by fusion
    wherever it named the voxel, except where fusion's confidence lies below `fusion_doubt` and below the
    teacher's probability of its best class: that class names the voxel (dts.label_fusion_doubt; 0: fusion
    names every voxel it named, 1: the more confident source names it; with `doubt_ground_only`
    (dts.doubt_classes: ground) only a flat-ground name of fusion's is in doubt, and only the teacher's
    flat-ground class renames it); a voxel that fusion did not name, a return no camera saw, keeps the teacher's
    class. Elsewhere, where neither source observed anything, the teacher's read-out stands, or without `fill`
    (dts.label_fill) nothing: unlabelled (255, confidence 0) as fusion leaves it."""
    fused = fused.long()
    f_free, f_occ = fused == FREE_ID, fused < FREE_ID
    occupied = (hit & ~f_free if fusion_free else hit) | f_occ
    free_conf = torch.where(free, torch.ones_like(confidence), fused_conf.to(confidence.dtype))
    free = (free | f_free) & ~occupied
    semantics = torch.where(free, torch.full_like(semantics, FREE_ID), semantics)
    confidence = torch.where(free, free_conf, confidence)
    f_conf = fused_conf.to(pcls.dtype)
    in_doubt = (f_conf < fusion_doubt) & (f_conf < pcls)
    if doubt_ground_only:
        in_doubt &= is_flat(fused) & is_flat(cls)
    use_fused = f_occ & ~in_doubt
    name = torch.where(use_fused, fused, cls.long()).to(semantics.dtype)
    name_conf = torch.where(use_fused, f_conf, pcls).to(confidence.dtype)
    semantics, confidence = torch.where(occupied, name, semantics), torch.where(occupied, name_conf, confidence)
    if not fill:
        seen = free | occupied
        semantics = torch.where(seen, semantics, torch.full_like(semantics, IGNORE_ID))
        confidence = torch.where(seen, confidence, torch.zeros_like(confidence))
    return semantics, confidence
