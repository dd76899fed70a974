"""Camera appearance: per-class / per-instance colours, procedural texture, Lambertian shading from a
sun, a sky gradient, distance haze and sensor noise — cues enough to learn depth and classes from."""

from __future__ import annotations

import numpy as np

from .raycast import Hits
from .world import BASE_COLORS, C

SUN = np.array([0.45, 0.3, 0.84]) / np.linalg.norm([0.45, 0.3, 0.84])
SKY_TOP, HORIZON = np.array([0.42, 0.58, 0.85]), np.array([0.82, 0.86, 0.9])
PAINT = np.array([0.92, 0.92, 0.88])


def _hash(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray) -> np.ndarray:
    """Deterministic value noise in [0, 1) from integer cell coordinates."""
    h = (ix * 73856093) ^ (iy * 19349663) ^ (iz * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF).astype(np.float32) / 65536.0


def shade(hits: Hits, origin: np.ndarray, dirs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 3) uint8 RGB of the rays."""
    n = len(dirs)
    out = np.empty((n, 3), np.float32)
    sky = ~np.isfinite(hits.t)
    up = np.clip(dirs[sky, 2], 0, 1)[:, None]
    out[sky] = HORIZON + (SKY_TOP - HORIZON) * np.sqrt(up)
    hit = ~sky
    p = origin + hits.t[hit, None] * dirs[hit]
    base = hits.color[hit].copy()
    ground = hits.instance[hit] == 0
    lut = np.zeros((256, 3), np.float32)
    for k, v in BASE_COLORS.items():
        lut[k] = v
    base[ground] = lut[hits.cls[hit][ground]]
    base[hits.paint[hit]] = PAINT
    # texture: fine grain (5 cm cells) and coarse patches (1 m cells)
    fine = _hash(*(np.floor(p * 20).astype(np.int64).T))
    coarse = _hash(*(np.floor(p).astype(np.int64).T) + 7)
    tex = 0.82 + 0.18 * fine + 0.12 * (coarse - 0.5)
    cls = hits.cls[hit]
    normal = hits.normal[hit]
    # windows on building facades
    facade = (cls == C["manmade"]) & (np.abs(normal[:, 2]) < 0.5) & (p[:, 2] > 1.0)
    along = np.where(np.abs(normal[:, 0]) > np.abs(normal[:, 1]), p[:, 1], p[:, 0])
    window = (
        facade
        & (np.mod(p[:, 2], 3.2) > 1.0)
        & (np.mod(p[:, 2], 3.2) < 2.3)
        & (np.mod(along, 2.6) > 0.7)
        & (np.mod(along, 2.6) < 1.9)
    )
    base[window] = (0.18, 0.24, 0.32)
    # grass is streaky, vegetation blotchy
    tex = np.where(cls == C["terrain"], tex * (0.85 + 0.3 * _hash(*(np.floor(p * [8, 8, 1]).astype(np.int64).T))), tex)
    lambert = np.clip(normal @ SUN, 0, 1)
    light = 0.42 + 0.58 * lambert
    color = base * (tex * light)[:, None]
    haze = 1 - np.exp(-hits.t[hit] / 350.0)
    out[hit] = color * (1 - haze[:, None]) + HORIZON * haze[:, None]
    out += rng.normal(0, 0.015, out.shape).astype(np.float32)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
