"""Solid primitives of the synthetic world and their ray / point tests (vectorised NumPy).

Three kinds, all in world coordinates (x east, y north, z up, metres):
* boxes: centre (3,), half extents (3,) along their own axes, yaw about z;
* cylinders: vertical, centre xy, z range, radius;
* ellipsoids: axis-aligned, centre (3,), radii (3,).
Every primitive has an Occ3D class, an instance id (> 0) and a base colour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BOX, CYLINDER, ELLIPSOID = 0, 1, 2


@dataclass
class Primitives:
    """Struct of arrays; P primitives. `params` per kind:
    box: (cx, cy, cz, hx, hy, hz, yaw); cylinder: (cx, cy, z0, z1, r, 0, 0); ellipsoid: (cx, cy, cz, rx, ry, rz, 0).
    """

    kind: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))  # (P,)
    params: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))  # (P, 7) float64
    cls: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))  # (P,)
    instance: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # (P,)
    color: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))  # (P, 3) in [0, 1]

    def __len__(self) -> int:
        return len(self.kind)

    @staticmethod
    def concat(parts: list["Primitives"]) -> "Primitives":
        return Primitives(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("kind", "params", "cls", "instance", "color"))
        )

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        """World axis-aligned bounds (P, 3) lo and hi."""
        p = self.params
        lo = np.zeros((len(self), 3))
        hi = np.zeros((len(self), 3))
        b = self.kind == BOX
        c, s = np.abs(np.cos(p[b, 6])), np.abs(np.sin(p[b, 6]))
        ex = c * p[b, 3] + s * p[b, 4]
        ey = s * p[b, 3] + c * p[b, 4]
        lo[b] = p[b, :3] - np.stack([ex, ey, p[b, 5]], 1)
        hi[b] = p[b, :3] + np.stack([ex, ey, p[b, 5]], 1)
        y = self.kind == CYLINDER
        lo[y] = np.stack([p[y, 0] - p[y, 4], p[y, 1] - p[y, 4], p[y, 2]], 1)
        hi[y] = np.stack([p[y, 0] + p[y, 4], p[y, 1] + p[y, 4], p[y, 3]], 1)
        e = self.kind == ELLIPSOID
        lo[e] = p[e, :3] - p[e, 3:6]
        hi[e] = p[e, :3] + p[e, 3:6]
        return lo, hi


def intersect(kind: int, prm: np.ndarray, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First hit distance t (N,) (inf = none; hits with t <= 1e-6 are ignored) and unit normal (N, 3)."""
    n = len(o)
    if kind == BOX:
        c, s = np.cos(prm[6]), np.sin(prm[6])
        R = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # world -> local
        lo_ = (o - prm[:3]) @ R.T
        ld = d @ R.T
        half = prm[3:6]
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / ld
            t1, t2 = (-half - lo_) * inv, (half - lo_) * inv
        tmin = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf)
        tmax = np.nan_to_num(np.maximum(t1, t2), nan=np.inf)
        t_in, axis_in = tmin.max(1), tmin.argmax(1)
        t_out = tmax.min(1)
        hit = (t_in <= t_out) & (t_out > 1e-6)
        t = np.where(hit, np.where(t_in > 1e-6, t_in, t_out), np.inf)
        normal_local = np.zeros((n, 3))
        normal_local[np.arange(n), axis_in] = -np.sign(ld[np.arange(n), axis_in])
        return t, normal_local @ R
    if kind == CYLINDER:
        cx, cy, z0, z1, r = prm[:5]
        ox, oy = o[:, 0] - cx, o[:, 1] - cy
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = ox * d[:, 0] + oy * d[:, 1]
        cc = ox**2 + oy**2 - r * r
        disc = b * b - a * cc
        with np.errstate(divide="ignore", invalid="ignore"):
            sq = np.sqrt(np.maximum(disc, 0))
            ts = np.where(disc >= 0, (-b - sq) / a, np.inf)  # side, entering
        zs = o[:, 2] + ts * d[:, 2]
        side_ok = (disc >= 0) & (a > 1e-12) & (ts > 1e-6) & (zs >= z0) & (zs <= z1)
        t = np.where(side_ok, ts, np.inf)
        normal = np.zeros((n, 3))
        hx, hy = ox + ts * d[:, 0], oy + ts * d[:, 1]
        normal[:, 0], normal[:, 1] = hx / r, hy / r
        with np.errstate(divide="ignore", invalid="ignore"):
            for zc, sign in ((z1, 1.0), (z0, -1.0)):  # caps
                tc = (zc - o[:, 2]) / d[:, 2]
                px, py = ox + tc * d[:, 0], oy + tc * d[:, 1]
                cap = (tc > 1e-6) & (px**2 + py**2 <= r * r) & (tc < t)
                t = np.where(cap, tc, t)
                normal[cap] = (0.0, 0.0, sign)
        return t, normal
    # ellipsoid
    centre, radii = prm[:3], prm[3:6]
    lo_ = (o - centre) / radii
    ld = d / radii
    a = (ld**2).sum(1)
    b = (lo_ * ld).sum(1)
    cc = (lo_**2).sum(1) - 1
    disc = b * b - a * cc
    sq = np.sqrt(np.maximum(disc, 0))
    t0, t1 = (-b - sq) / a, (-b + sq) / a
    t = np.where(disc >= 0, np.where(t0 > 1e-6, t0, np.where(t1 > 1e-6, t1, np.inf)), np.inf)
    p = lo_ + np.where(np.isfinite(t), t, 0)[:, None] * ld
    normal = p / radii
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    return t, normal


def contains(kind: int, prm: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(N, 3) world points -> (N,) bool inside the primitive."""
    if kind == BOX:
        c, s = np.cos(prm[6]), np.sin(prm[6])
        rel = pts - prm[:3]
        lx = c * rel[:, 0] + s * rel[:, 1]
        ly = -s * rel[:, 0] + c * rel[:, 1]
        return (np.abs(lx) <= prm[3]) & (np.abs(ly) <= prm[4]) & (np.abs(rel[:, 2]) <= prm[5])
    if kind == CYLINDER:
        cx, cy, z0, z1, r = prm[:5]
        return ((pts[:, 0] - cx) ** 2 + (pts[:, 1] - cy) ** 2 <= r * r) & (pts[:, 2] >= z0) & (pts[:, 2] <= z1)
    return (((pts - prm[:3]) / prm[3:6]) ** 2).sum(1) <= 1.0
