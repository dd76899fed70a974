"""Training rays from camera pixels: class-balanced sampling, ego-frame rays, rendering, z-depth.

Per frame, `sample_rays` draws a fixed number of pixels among the supervised ones (a LiDAR depth or a
2D label), with weights that grow with the rarity of the pixel's class in that frame (RenderOcc's
scheme): w = (1 / frequency) ** class_balance, and the mean labelled weight for depth-only pixels.
With semantic_rays "all" a share of the rays goes to labelled pixels that have no LiDAR return (the
tops of objects, thin and far things that LiDAR misses), drawn the same way among those pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels import GridSpec, render_rays

from .config import RenderConfig
from .surfaces import is_flat, layer_entry

IGNORE = 255


@dataclass
class RayBatch:
    """Rays of a batch (R rays). Ray geometry is in the ego frame of the frame each ray renders."""

    origins: torch.Tensor  # (R, 3)
    directions: torch.Tensor  # (R, 3) unit
    batch_index: torch.Tensor  # (R,) int64
    z_per_metre: torch.Tensor  # (R,) camera z-depth per metre along the ray
    depth: torch.Tensor  # (R,) target z-depth, 0 = none
    semantics: torch.Tensor  # (R,) int64 target class, 255 = none
    confidence: torch.Tensor  # (R,) weight of the semantic target
    weight: torch.Tensor  # (R,) loss weight of the ray (auxiliary-frame rays weigh less)


def _points_inside(
    intrinsics: torch.Tensor, cam2ego: torch.Tensor, depth: torch.Tensor, grid: GridSpec
) -> torch.Tensor:
    """(N, H, W) bool: the pixel has a depth and its back-projected point lies inside the grid box."""
    n, h, w = depth.shape
    v, u = torch.meshgrid(
        torch.arange(h, device=depth.device) + 0.5, torch.arange(w, device=depth.device) + 0.5, indexing="ij"
    )
    pix = torch.stack([u, v, torch.ones_like(u)], -1)  # (H, W, 3)
    cam = torch.einsum("nij,hwj->nhwi", torch.linalg.inv(intrinsics.float()), pix) * depth[..., None]
    ego = torch.einsum("nij,nhwj->nhwi", cam2ego[:, :3, :3].float(), cam) + cam2ego[:, None, None, :3, 3].float()
    lo = torch.tensor(grid.range_min, device=depth.device)
    hi = torch.tensor(grid.range_max, device=depth.device)
    return (depth > 0) & ((ego >= lo) & (ego < hi)).all(-1)


def sample_rays(
    intrinsics: torch.Tensor,
    cam2ego: torch.Tensor,
    depth: torch.Tensor,
    semantics: torch.Tensor,
    confidence: torch.Tensor,
    n_rays: int,
    class_balance: float,
    generator: torch.Generator,
    batch: int = 0,
    weight: float = 1.0,
    drop_classes: tuple[int, ...] = (),
    grid: GridSpec | None = None,
    depth_target: str = "occupancy",
    semantic_rays: str = "lidar",
    semantic_share: float = 0.5,
) -> RayBatch:
    """Draw n_rays pixels of one frame (on the maps' device, with `generator` of that device).

    intrinsics (N, 3, 3) and cam2ego (N, 4, 4) per camera; depth (N, H, W) metres (0 none), semantics
    (N, H, W) class ids (255 none), confidence (N, H, W) in [0, 1]. drop_classes: labels to treat as
    missing (dynamic classes for auxiliary frames, whose objects moved). With a grid, only pixels with a
    LiDAR depth whose point lies inside the grid are supervised (both depth and semantics): a surface
    outside the grid cannot be rendered from it, and a label without depth could lie anywhere on its ray.
    depth_target "occupancy" (needs the grid): a ray labelled with a ground class aims at the top of the
    voxel layer holding its return, where the Occ3D grid stops it (occnet.surfaces); "lidar": the return.
    semantic_rays "all": round(semantic_share * n_rays) of the rays are drawn among labelled pixels with no
    LiDAR return at all (their depth target is 0: no depth loss; the semantic loss weighs them by their
    rendered opacity, occnet.losses.rendered_semantics_ce, since their surface may lie beyond the grid);
    the rest as with "lidar". A label whose return lies outside the grid stays unused in both modes.
    """
    if semantic_rays not in ("lidar", "all"):
        raise ValueError(f"sample_rays: semantic_rays must be 'lidar' or 'all', got {semantic_rays!r}")
    if depth_target not in ("occupancy", "lidar"):
        raise ValueError(f"sample_rays: depth_target must be 'occupancy' or 'lidar', got {depth_target!r}")
    if depth_target == "occupancy" and grid is None:
        raise ValueError("sample_rays: depth_target 'occupancy' needs the grid")
    n_cam, h, w = depth.shape
    sem = semantics.long()
    for c in drop_classes:
        sem = torch.where(sem == c, torch.full_like(sem, IGNORE), sem)
    labelled = sem != IGNORE
    if drop_classes:  # a moving object's depth is wrong in another frame too
        moving = torch.zeros_like(labelled)
        for c in drop_classes:
            moving |= semantics.long() == c
        depth = torch.where(moving, torch.zeros_like(depth), depth)
    no_return = labelled & (depth <= 0)  # labelled pixels LiDAR did not reach (before the grid test)
    if grid is not None:  # supervise only pixels whose LiDAR point lies in the grid: the grid can't hold the rest
        inside = _points_inside(intrinsics, cam2ego, depth, grid)
        labelled &= inside
        depth = torch.where(inside, depth, torch.zeros_like(depth))
    supervised = labelled | (depth > 0)
    n_sem = round(semantic_share * n_rays) if semantic_rays == "all" else 0
    if n_sem and not bool(no_return.any()):  # a host sync only in "all" mode
        n_sem = 0
    if not bool(supervised.any()):  # the one host sync of the sampling in "lidar" mode
        if not n_sem:
            raise ValueError("sample_rays: the frame has no supervised pixel (no depth and no 2D label in the grid)")
        n_sem = n_rays
    pick = _draw(sem, labelled, supervised, n_rays - n_sem, class_balance, generator)
    if n_sem:
        pick = torch.cat([pick, _draw(sem, no_return, no_return, n_sem, class_balance, generator)])
    cam, rest = pick // (h * w), pick % (h * w)
    v, u = rest // w, rest % w
    origins, dirs, z_per_metre = _pixel_rays(intrinsics, cam2ego, cam, v, u)
    target, ray_sem = depth[cam, v, u].float(), sem[cam, v, u]
    if depth_target == "occupancy":
        target = layer_entry(origins, dirs, target / z_per_metre, is_flat(ray_sem), grid) * z_per_metre
    return RayBatch(
        origins=origins,
        directions=dirs,
        batch_index=torch.full((n_rays,), batch, dtype=torch.long, device=depth.device),
        z_per_metre=z_per_metre,
        depth=target,
        semantics=ray_sem,
        confidence=confidence[cam, v, u].float(),
        weight=torch.full((n_rays,), weight, device=depth.device),
    )


def _draw(
    sem: torch.Tensor,
    labelled: torch.Tensor,
    supervised: torch.Tensor,
    n: int,
    class_balance: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """(n,) flat pixel indices drawn with replacement among `supervised` (N, H, W) pixels: a labelled one
    weighs (1 / its class's frequency among the labelled) ** class_balance, a depth-only one the mean
    labelled weight."""
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=sem.device)
    flat_sem = torch.where(labelled, sem, torch.zeros_like(sem)).reshape(-1)
    lab = labelled.reshape(-1)
    counts = torch.bincount(flat_sem, weights=lab.float(), minlength=IGNORE + 1)
    w_class = torch.where(counts > 0, counts.clamp_min(1).reciprocal() ** class_balance, torch.zeros_like(counts))
    w_pix = torch.where(lab, w_class[flat_sem], torch.zeros_like(lab, dtype=w_class.dtype))
    n_lab = lab.sum()
    mean_lab = torch.where(n_lab > 0, w_pix.sum() / n_lab.clamp_min(1), torch.ones_like(w_pix[0]))
    w_pix = torch.where(supervised.reshape(-1) & ~lab, mean_lab, w_pix)  # depth-only pixels: the mean weight
    return torch.multinomial(w_pix, n, replacement=True, generator=generator)


def _pixel_rays(
    intrinsics: torch.Tensor, cam2ego: torch.Tensor, cam: torch.Tensor, v: torch.Tensor, u: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rays through pixel centres (cam, v, u): origins (R, 3), unit directions (R, 3), z-depth per metre (R,)."""
    pix = torch.stack([u.float() + 0.5, v.float() + 0.5, torch.ones_like(u, dtype=torch.float32)], 1)
    d_cam = torch.einsum("rij,rj->ri", torch.linalg.inv(intrinsics.float())[cam], pix)
    d_cam = d_cam / d_cam.norm(dim=1, keepdim=True)
    pose = cam2ego.float()[cam]
    dirs = torch.einsum("rij,rj->ri", pose[:, :3, :3], d_cam)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    return pose[:, :3, 3].contiguous(), dirs, d_cam[:, 2].contiguous()


def image_rays(intrinsics: torch.Tensor, cam2ego: torch.Tensor, hw: tuple[int, int], batch: int = 0) -> RayBatch:
    """One ray per pixel of every camera (N cameras x H x W, row-major), for rendering whole images."""
    n, (h, w) = intrinsics.shape[0], hw
    dev = intrinsics.device
    cam, v, u = torch.meshgrid(
        torch.arange(n, device=dev), torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij"
    )
    cam, v, u = cam.reshape(-1), v.reshape(-1), u.reshape(-1)
    origins, dirs, zpm = _pixel_rays(intrinsics, cam2ego, cam, v, u)
    r = len(cam)
    zeros = torch.zeros(r, device=dev)
    return RayBatch(
        origins=origins,
        directions=dirs,
        batch_index=torch.full((r,), batch, dtype=torch.long, device=dev),
        z_per_metre=zpm,
        depth=zeros,
        semantics=torch.full((r,), IGNORE, dtype=torch.long, device=dev),
        confidence=zeros,
        weight=torch.ones(r, device=dev),
    )


def concat_rays(batches: list[RayBatch]) -> RayBatch:
    return RayBatch(*(torch.cat([getattr(b, f) for b in batches]) for f in RayBatch.__dataclass_fields__))


@dataclass
class Rendered:
    depth: torch.Tensor  # (R,) camera z-depth
    opacity: torch.Tensor  # (R,)
    probs: torch.Tensor  # (R, K) composited class probabilities (sum to the opacity)


def render(
    density: torch.Tensor,
    logits: torch.Tensor,
    rays: RayBatch,
    grid: GridSpec,
    cfg: RenderConfig,
    far: float = 100.0,
    check_values: bool = True,
) -> Rendered:
    """Composite softmax class probabilities and distance along the rays; distance -> z-depth."""
    probs = logits.float().softmax(-1)
    n = len(rays.origins)
    near = torch.zeros(n, device=density.device)
    far_t = torch.full((n,), far, device=density.device)
    out = render_rays(
        density.float(),
        probs,
        rays.origins,
        rays.directions,
        rays.batch_index,
        near,
        far_t,
        grid,
        mode=cfg.mode,
        step_size=cfg.step_size,
        check_values=check_values,
    )
    return Rendered(depth=out.depth * rays.z_per_metre, opacity=out.opacity, probs=out.features)


def transmittance_to(
    density: torch.Tensor,
    rays: RayBatch,
    far: torch.Tensor,
    grid: GridSpec,
    cfg: RenderConfig,
    check_values: bool = True,
) -> torch.Tensor:
    """(R,) light left after travelling from each ray's origin to distance `far` (R,) metres along it."""
    n = len(rays.origins)
    ones = torch.ones((*density.shape, 1), device=density.device)  # the op needs features; one cheap channel
    out = render_rays(
        density.float(),
        ones,
        rays.origins,
        rays.directions,
        rays.batch_index,
        torch.zeros(n, device=density.device),
        far.float(),
        grid,
        mode=cfg.mode,
        step_size=cfg.step_size,
        check_values=check_values,
    )
    return out.transmittance
