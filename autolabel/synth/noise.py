"""A noise model of foundation-model 2D labels (SAM masks named by a vision-language model).

Errors come at the level of whole segments, as SAM + a VLM make them (docs/SYNTHETIC.md):
* a segment (an object instance, or a stuff region: one class within a 6 m square of the ground plane,
  which looks in the image like the patches SAM cuts stuff into) is named
  with a wrong class drawn from its look-alike group with probability 0.35 * level (objects) and
  0.2 * level (stuff): car/truck/bus/trailer/construction_vehicle, bicycle/motorcycle,
  driveable_surface/sidewalk/other_flat, terrain/vegetation, traffic_cone/barrier;
* small (< 0.1% of the image) or distant (> 35 m) things (object classes 0..10) are missed (left 255)
  with probability 0.6 * level;
* object boundaries are dilated (probability 0.5) or eroded by round(3 * level) pixels;
* sky and anything unnamed stay 255.
Confidence (0..255) is high for segments that kept their class (U[0.7, 1]) and lower for renamed
ones (U[0.35, 0.8]) — correlated with correctness, as real margins are, but not a give-away — and
scaled by 0.6 on the pixels that boundary noise touched.
"""
from __future__ import annotations

import numpy as np

from occnet.classes import IGNORE_ID, NUM_CLASSES, class_id

GROUPS = [
    ["car", "truck", "bus", "trailer", "construction_vehicle"], ["bicycle", "motorcycle"],
    ["driveable_surface", "sidewalk", "other_flat"], ["terrain", "vegetation"], ["traffic_cone", "barrier"],
]
STUFF_CELL = 6.0  # metres: the size of a stuff region on the ground
FIRST_STUFF = class_id("driveable_surface")  # ids below it are things (objects with boxes)


def _alternatives() -> list[np.ndarray]:
    alt = [np.array([], np.uint8) for _ in range(256)]
    for group in GROUPS:
        ids = [class_id(n) for n in group]
        for c in ids:
            alt[c] = np.array([o for o in ids if o != c], np.uint8)
    return alt


_ALT = _alternatives()


def _shift(a: np.ndarray, dy: int, dx: int, fill) -> np.ndarray:
    out = np.full_like(a, fill)
    h, w = a.shape
    out[max(dy, 0): h + min(dy, 0), max(dx, 0): w + min(dx, 0)] = a[max(-dy, 0): h + min(-dy, 0), max(-dx, 0): w + min(-dx, 0)]
    return out


def noisy_labels(semantics: np.ndarray, instance: np.ndarray, depth: np.ndarray, world_xy: np.ndarray, level: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Exact (H, W) maps and the (H, W, 2) world xy of every pixel's surface -> noisy semantics
    (uint8, 255 unknown) and confidence (uint8, 0..255)."""
    if not 0 <= level <= 1:
        raise ValueError(f"label noise level must lie in [0, 1], got {level}")
    h, w = semantics.shape
    valid = semantics != IGNORE_ID
    # ground hits near the horizon lie kilometres away: clamp them into the border cells of a 600 m
    # square, which bounds the number of regions (and the arrays indexed by region)
    centre = np.nanmedian(world_xy.reshape(-1, 2), axis=0) if np.isfinite(world_xy).any() else np.zeros(2)
    xy = np.clip(np.nan_to_num(world_xy, nan=0.0), centre - 300.0, centre + 300.0)
    cell = np.floor(xy / STUFF_CELL).astype(np.int64)
    cell -= cell.reshape(-1, 2).min(0)
    region_of_ground = cell[..., 0] * (int(cell[..., 1].max()) + 1) + cell[..., 1]
    key = np.where(instance > 0, instance.astype(np.int64),
                   -(1 + region_of_ground * NUM_CLASSES + semantics))  # stuff regions: negative keys
    key = np.where(valid, key, 0)
    # keys span a small range (instances, ground cells x classes): index by offset instead of sorting
    lo = int(key.min())
    region = (key - lo).astype(np.int64)
    n = int(region.max()) + 1
    uniq = np.arange(n, dtype=np.int64) + lo
    first = np.zeros(n, np.int64)
    first[region.ravel()[::-1]] = np.arange(h * w)[::-1]  # one pixel of each region
    r_cls = semantics.ravel()[first]
    is_obj = uniq > 0
    area = np.bincount(region.ravel(), minlength=n)
    r_depth = np.bincount(region.ravel(), weights=depth.ravel(), minlength=n) / np.maximum(area, 1)
    # renaming within look-alike groups
    p_flip = np.where(is_obj, 0.35, 0.2) * level
    new_cls = r_cls.copy()
    flipped = np.zeros(n, bool)
    for i in np.flatnonzero((rng.random(n) < p_flip) & (uniq != 0)):
        alt = _ALT[r_cls[i]]
        if len(alt):
            new_cls[i] = alt[rng.integers(len(alt))]
            flipped[i] = True
    # misses of small or distant things (not of buildings, poles or trees, which are instances too)
    small = (area < 1e-3 * h * w) | (r_depth > 35.0)
    missed = is_obj & (r_cls < FIRST_STUFF) & small & (rng.random(n) < 0.6 * level)
    new_cls[missed] = IGNORE_ID
    new_cls[uniq == 0] = IGNORE_ID
    conf = np.where(flipped, rng.uniform(0.35, 0.8, n), rng.uniform(0.7, 1.0, n))
    conf[new_cls == IGNORE_ID] = 0
    labels = new_cls[region].astype(np.uint8)
    confidence = conf[region]
    # boundary noise: erode or dilate every object by k pixels
    k = int(round(3 * level))
    if k:
        obj_region = np.where(is_obj[region] & (labels != IGNORE_ID), region, -1)
        grow = rng.random(n) < 0.5
        touched = np.zeros((h, w), bool)
        shifts = ((0, 1), (0, -1), (1, 0), (-1, 0))
        eroding = obj_region >= 0
        eroding &= ~grow[np.maximum(obj_region, 0)]
        inner = eroding.copy()
        for _ in range(k):  # pixels within k of the region's edge leave it
            same = np.ones((h, w), bool)
            for dy, dx in shifts:
                same &= _shift(obj_region, dy, dx, -2) == obj_region
            inner &= same
            obj_region = np.where(eroding & ~inner, -1, obj_region)
            eroding = inner.copy()
        lost = (np.where(is_obj[region], region, -1) >= 0) & ~grow[region] & (obj_region < 0) & (labels != IGNORE_ID)
        labels[lost] = IGNORE_ID
        touched |= lost
        grower = np.where((obj_region >= 0) & grow[np.maximum(obj_region, 0)], obj_region, -1)
        for _ in range(k):  # objects spread k pixels into what surrounds them
            for dy, dx in shifts:
                nb = _shift(grower, dy, dx, -1)
                take = (grower < 0) & (nb >= 0) & valid
                grower = np.where(take, nb, grower)
                spread = take & (region != nb)
                labels[spread] = new_cls[nb[spread]]
                touched |= spread
        confidence = np.where(touched, confidence * 0.6, confidence)
    confidence = np.where(labels == IGNORE_ID, 0, confidence)
    return labels, np.round(confidence * 255).astype(np.uint8)
