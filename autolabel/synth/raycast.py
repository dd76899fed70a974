"""Ray casting against the synthetic world: the ground plane (z = 0) and the primitives.

Rays are culled per primitive by the region of the sensor's ray image its bounding box can cover
(pixel rectangle for a pinhole camera, ring x azimuth window for the spinning lidar), so a frame
costs about the projected area of the scene, not rays x primitives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .primitives import Primitives, intersect
from .world import World

SKY = 255


@dataclass
class Hits:
    """Per ray: distance t (inf = sky), class (255 = sky), instance (0 = ground / sky), unit normal,
    base colour, and whether the ground hit is lane paint."""

    t: np.ndarray
    cls: np.ndarray
    instance: np.ndarray
    normal: np.ndarray
    color: np.ndarray
    paint: np.ndarray


def _corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(P, 8, 3) corners of boxes given by lo / hi (P, 3)."""
    sel = np.array([[(i >> a) & 1 for a in range(3)] for i in range(8)], dtype=bool)
    return np.where(sel[None], hi[:, None], lo[:, None])


_EDGES = np.array([(a, a | (1 << k)) for a in range(8) for k in range(3) if not a & (1 << k)])  # (12, 2)


def pinhole_candidates(
    prims: Primitives,
    world2cam: np.ndarray,
    K: np.ndarray,
    hw: tuple[int, int],
    max_range: float,
    order_by_distance: bool = True,
):
    """(primitive index, flat pixel indices) for primitives that may cover pixels, nearest first.

    The pixel rectangle bounds the projection of the part of the primitive's box in front of the
    near plane: its front corners plus the crossings of its edges with that plane.
    """
    h, w = hw
    lo, hi = prims.aabb()
    pts = _corners(lo, hi) @ world2cam[:3, :3].T + world2cam[:3, 3]  # (P, 8, 3) camera frame
    near = 0.05
    z = pts[..., 2]
    a, b = pts[:, _EDGES[:, 0]], pts[:, _EDGES[:, 1]]  # (P, 12, 3)
    za, zb = a[..., 2] - near, b[..., 2] - near
    crosses = za * zb < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(crosses, za / (za - zb), 0.0)
    cut = a + s[..., None] * (b - a)
    cand = np.concatenate([pts, cut], 1)  # (P, 20, 3)
    valid = np.concatenate([z > near, crosses], 1)
    zc = np.where(valid, np.maximum(cand[..., 2], near), 1.0)
    u = np.where(valid, K[0, 0] * cand[..., 0] / zc + K[0, 2], np.nan)
    v = np.where(valid, K[1, 1] * cand[..., 1] / zc + K[1, 2], np.nan)
    any_valid = valid.any(1)
    with np.errstate(invalid="ignore"):
        u0 = np.floor(np.nan_to_num(np.nanmin(np.where(valid, u, np.inf), 1), posinf=w)).clip(0, w)
        u1 = (np.ceil(np.nan_to_num(np.nanmax(np.where(valid, u, -np.inf), 1), neginf=0)) + 1).clip(0, w)
        v0 = np.floor(np.nan_to_num(np.nanmin(np.where(valid, v, np.inf), 1), posinf=h)).clip(0, h)
        v1 = (np.ceil(np.nan_to_num(np.nanmax(np.where(valid, v, -np.inf), 1), neginf=0)) + 1).clip(0, h)
    cam_world = -world2cam[:3, :3].T @ world2cam[:3, 3]
    dist = np.linalg.norm(np.clip(cam_world, lo, hi) - cam_world, axis=1)  # distance to the box
    keep = np.flatnonzero(any_valid & (dist < max_range) & (u1 > u0) & (v1 > v0))
    if order_by_distance:
        keep = keep[np.argsort(dist[keep], kind="stable")]
    for i in keep:
        rows = np.arange(int(v0[i]), int(v1[i]))
        cols = np.arange(int(u0[i]), int(u1[i]))
        yield i, (rows[:, None] * w + cols[None]).ravel(), dist[i]


def spin_candidates(prims: Primitives, world2sensor: np.ndarray, elevations: np.ndarray, n_az: int, max_range: float):
    """(primitive index, ray indices ring * n_az + azimuth bin, distance lower bound), nearest first."""
    lo, hi = prims.aabb()
    pts = _corners(lo, hi) @ world2sensor[:3, :3].T + world2sensor[:3, 3]
    # the sensor frame may be rotated about z only in this world (flat ground), so the footprint stays a
    # quadrilateral: horizontal distance bounds from its corners, and 0 when the sensor lies within it
    rho = np.hypot(pts[..., 0], pts[..., 1])
    d_max = rho.max(1)
    az = np.arctan2(pts[..., 1], pts[..., 0])
    az_c = np.arctan2(pts[..., 1].mean(1), pts[..., 0].mean(1))
    rel = np.angle(np.exp(1j * (az - az_c[:, None])))
    half = np.abs(rel).max(1)
    # a footprint around the sensor (or touching it) is seen at every azimuth
    inside = (
        (pts[..., 0].min(1) <= 0) & (pts[..., 0].max(1) >= 0) & (pts[..., 1].min(1) <= 0) & (pts[..., 1].max(1) >= 0)
    )
    d_min = np.where(inside, 0.0, rho.min(1) * np.cos(np.minimum(half, np.pi / 2)))  # lower bound of the distance
    zlo, zhi = pts[..., 2].min(1), pts[..., 2].max(1)
    with np.errstate(divide="ignore"):
        el_hi = np.arctan2(zhi, np.where(zhi > 0, d_min, d_max))
        el_lo = np.arctan2(zlo, np.where(zlo < 0, d_min, d_max))
    step = 2 * np.pi / n_az
    keep = np.flatnonzero(d_min < max_range)
    keep = keep[np.argsort(d_min[keep], kind="stable")]
    for i in keep:
        rings = np.flatnonzero((elevations >= el_lo[i] - 1e-6) & (elevations <= el_hi[i] + 1e-6))
        if not len(rings):
            continue
        if inside[i] or half[i] >= np.pi / 2:
            bins = np.arange(n_az)
        else:
            a0 = int(np.floor((az_c[i] - half[i]) / step)) - 1
            a1 = int(np.ceil((az_c[i] + half[i]) / step)) + 1
            bins = np.mod(np.arange(a0, a1 + 1), n_az)
        yield i, (rings[:, None] * n_az + bins[None]).ravel(), d_min[i]


def cast(world: World, prims: Primitives, origin: np.ndarray, dirs: np.ndarray, candidates) -> Hits:
    """Cast rays from one origin (3,) along dirs (N, 3) (world frame, unit)."""
    n = len(dirs)
    t = np.full(n, np.inf)
    cls = np.full(n, SKY, np.uint8)
    inst = np.zeros(n, np.int32)
    normal = np.zeros((n, 3))
    color = np.zeros((n, 3), np.float32)
    # ground plane z = 0
    down = dirs[:, 2] < -1e-9
    tg = np.where(down, -origin[2] / np.where(down, dirs[:, 2], -1.0), np.inf)
    hit_g = np.isfinite(tg)
    t[hit_g] = tg[hit_g]
    normal[hit_g] = (0.0, 0.0, 1.0)
    for i, idx, dist in candidates:
        if dist > t[idx].max():  # every ray there already hit something nearer: occluded
            continue
        ti, ni = intersect(int(prims.kind[i]), prims.params[i], np.broadcast_to(origin, (len(idx), 3)), dirs[idx])
        closer = ti < t[idx]
        if not closer.any():
            continue
        j = idx[closer]
        t[j] = ti[closer]
        normal[j] = ni[closer]
        cls[j] = prims.cls[i]
        inst[j] = prims.instance[i]
        color[j] = prims.color[i]
    ground = hit_g & (inst == 0) & np.isfinite(t)
    paint = np.zeros(n, bool)
    if ground.any():
        p = origin + t[ground, None] * dirs[ground]
        g_cls, g_paint = world.ground_at(p[:, 0], p[:, 1])
        cls[ground] = g_cls
        paint[ground] = g_paint
    return Hits(t=t, cls=cls, instance=inst, normal=normal, color=color, paint=paint)
