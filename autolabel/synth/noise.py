"""Noise models of foundation-model 2D labels (SAM masks named by a vision-language model).

Two profiles (docs/SYNTHETIC.md, "Noise model of the 2D labels"); `make_noisy_labels` picks one.

**v2 (the default of ``autolabel synth``)**, `noisy_labels_v2`, every rate a field of `NoiseRates`:

* *Segments.* An object instance is one segment; a stuff region (one class within a ``stuff_cell``
  square of the ground) is one; an instance covering more than ``split_area`` of the image (a
  building, a hedge) is cut by ``split_cell`` squares of the ground — over-segmentation: each part is
  named on its own.
* *Under-segmentation.* A segment is merged, with probability ``merge``, into the touching segment
  with which it shares the most border, when that one is larger (a pedestrian into the wall behind,
  a car into the road cell under it, two touching cars); an object's mask spills, with probability
  ``spill``, over what touches it by ``spill_size`` x its linear size (at most ``spill_max`` x W px).
* *Naming: a simulated classifier.* Each mask gets 17 class logits z = s * (A @ B) + sigma * (prior +
  N(0, 1)): prior = ``class_bias`` (rare classes lower), A is the mask's true-class content (pixel
  shares, mixed for merged masks), B = I + look-alike similarities (``lookalike``, cross-group pairs
  included: terrain / sidewalk / driveable surface, vegetation / manmade / terrain, poles and signs
  (manmade) / others / barrier, truck / bus / construction vehicle / trailer / car, pedestrian /
  bicycle with its rider / motorcycle, barrier / traffic cone / others), s = ``signal`` / (1 + depth /
  ``signal_distance``) * sqrt(a / (a +
  ``signal_area``)) for a mask of mean depth `depth` (m) and image share a. The name is argmax z, so
  the confusion matrix is the classifier's: renaming rises with distance, falls with size, and goes
  mostly to look-alikes (P(t -> c) grows with B[t, c]).
* *Misses* (left 255): with probability ``miss_small`` * exp(-a / ``small_area``) for small objects,
  + ``miss_thin`` for thin ones (pixel width under ``thin_width`` x W: poles, cones), + ``miss_far`` *
  clip((depth - ``far_start``) / ``far_span``, 0, 1) for any mask, at most ``miss_max``.
* *Boundaries.* A mask's edge moves outwards (into its neighbours) with probability ``boundary`` by
  (``boundary_width`` + ``boundary_growth`` * depth / 10 m) x W pixels (at most ``boundary_max`` x W):
  several pixels, more for distant masks. Sky stays 255.
* *Confidence from the classifier's score, never from correctness.* The classifier's belief in its
  answer is the posterior of the named class given its 17 logits under its own noise model (a pure mask
  of class t has logits s * B[t] + sigma * (prior + N(0, 1)); flat prior over t) — what a calibrated
  classifier reports, computed from its logits and the mask's observable size and distance, never from
  the truth. The score of a pixel is logit(belief), less ``band_penalty`` within ``band_width`` x W px
  of an edge of the noisy map (a segmenter is least sure at its mask edges), standardised by fixed
  constants to q, plus an independent Gaussian eta of scale tau per (mask, edge band) unit:
  conf = sigmoid(1 + 1.5 * (q + tau * eta) / sqrt(1 + tau^2)). ``confidence_auroc`` is the one knob of
  how well confidence separates right from wrong pixels: tau is solved per image (bisection) so that
  the pixel AUROC of confidence vs correctness equals it; the truth sets how noisy the score is, never
  which pixel gets which score. The noise-free score (tau = 0) reaches about 0.88 on the synthetic
  world at the default level (merged masks, spills and boundary errors are errors the classifier
  cannot see); a larger value gives that.
* *Runner-up names* (`RUNNER_UPS` per pixel): the classifier's next most probable classes under the same
  posterior, the named class left out, and their share of what the named class's confidence leaves:
  runner_up_conf_j = p_j (1 - conf) / (1 - p_named). What a calibrated classifier's class distribution
  carries beyond its argmax and its score (its top-k), for fusion to sum over views; the exact maps have none.

*Level* (``--label-noise``, default 0.3 = `DEFAULT_LEVEL`, the recipes' value). v2 quotes its rates at
0.3; a level L multiplies every probability and pixel width by L / 0.3 (probabilities clipped to 1) and
the logit noise sigma by L / 0.3 (level 0 gives the exact labels). The hard level stored beside the
default one (`hard_level`) is 1.6 x the level: 0.48.

**v1** (`noisy_labels_v1`, the model of the first release, kept for comparison, byte for byte):
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
ones (U[0.35, 0.8]) — it is drawn from correctness, which flatters a method that uses it — and
scaled by 0.6 on the pixels that boundary noise touched.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np

from occnet.classes import FREE_ID, IGNORE_ID, NUM_CLASSES, class_id

GROUPS = [
    ["car", "truck", "bus", "trailer", "construction_vehicle"],
    ["bicycle", "motorcycle"],
    ["driveable_surface", "sidewalk", "other_flat"],
    ["terrain", "vegetation"],
    ["traffic_cone", "barrier"],
]
RUNNER_UPS = 2  # runner-up classes kept per pixel by noise model v2 (a top-3 with the name)
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
    """a moved by (dy, dx) pixels: out[y, x] = a[y - dy, x - dx], `fill` where that lies outside."""
    out = np.full_like(a, fill)
    h, w = a.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = a[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def noisy_labels_v1(
    semantics: np.ndarray,
    instance: np.ndarray,
    depth: np.ndarray,
    world_xy: np.ndarray,
    level: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Noise model v1. Exact (H, W) maps and the (H, W, 2) world xy of every pixel's surface -> noisy
    semantics (uint8, 255 unknown) and confidence (uint8, 0..255)."""
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
    key = np.where(
        instance > 0, instance.astype(np.int64), -(1 + region_of_ground * NUM_CLASSES + semantics)
    )  # stuff regions: negative keys
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


# ---- noise model v2 --------------------------------------------------------------------------------
PROFILES = ("v2", "v1")
DEFAULT_LEVEL = 0.3  # the level of `autolabel synth` and the recipes; v2 quotes its rates at it
HARD_FACTOR = 1.6  # the hard level is this many times the level (clipped to 1)
N_LABELS = FREE_ID  # 17 classes a 2D label can name

# Look-alike similarities of the simulated classifier: class pairs and how much of the true class's
# logit bump the other class also gets (0 = unrelated, 1 = indistinguishable). Cross-group pairs are
# what a VLM confuses on driving scenes beyond same-family vehicles.
LOOKALIKE: tuple[tuple[str, str, float], ...] = (
    # flat ground
    ("driveable_surface", "sidewalk", 0.55),
    ("driveable_surface", "other_flat", 0.6),
    ("sidewalk", "other_flat", 0.6),
    ("terrain", "sidewalk", 0.4),
    ("terrain", "driveable_surface", 0.3),
    ("terrain", "other_flat", 0.45),
    # vegetation / manmade / terrain
    ("vegetation", "terrain", 0.5),
    ("vegetation", "manmade", 0.45),
    ("manmade", "terrain", 0.2),
    # poles, signs and walls (manmade) against small objects
    ("manmade", "others", 0.4),
    ("manmade", "barrier", 0.4),
    ("manmade", "traffic_cone", 0.2),
    # vehicles
    ("truck", "bus", 0.6),
    ("truck", "construction_vehicle", 0.6),
    ("truck", "trailer", 0.65),
    ("bus", "trailer", 0.45),
    ("construction_vehicle", "trailer", 0.4),
    ("car", "truck", 0.55),
    ("car", "bus", 0.3),
    ("car", "construction_vehicle", 0.3),
    ("car", "trailer", 0.3),
    # two-wheelers and people (a bicycle carries its rider)
    ("bicycle", "motorcycle", 0.7),
    ("pedestrian", "bicycle", 0.5),
    ("pedestrian", "motorcycle", 0.35),
    # barriers, cones, others
    ("barrier", "traffic_cone", 0.5),
    ("barrier", "others", 0.5),
    ("traffic_cone", "others", 0.45),
)
# A classifier's prior: a mask it can barely see is named after a frequent class more often than a rare
# one. Logit offsets (units of the logit noise at the default level) of the rare classes.
CLASS_BIAS: tuple[tuple[str, float], ...] = (
    ("others", -1.0),
    ("barrier", -1.5),
    ("bicycle", -1.5),
    ("construction_vehicle", -2.0),
    ("motorcycle", -1.5),
    ("traffic_cone", -1.5),
    ("trailer", -1.0),
    ("bus", -0.5),
    ("pedestrian", -0.5),
    ("truck", -0.5),
    ("other_flat", -0.5),
)
# Confidence = sigmoid(CONF_OFFSET + CONF_SLOPE * (score - SCORE_REF) / SCORE_SCALE), the score being
# the logit of the classifier's belief: at the default level the medians are about 0.8 (right pixels)
# and 0.45 (wrong ones). Fixed constants, not per image, so easy and hard images stay comparable.
SCORE_REF, SCORE_SCALE = 2.5, 3.0
CONF_OFFSET, CONF_SLOPE = 1.0, 1.5


@dataclass(frozen=True)
class NoiseRates:
    """Every rate of noise model v2, quoted at the default level 0.3 (module docstring). Widths are
    shares of the image width W, areas shares of the image, distances metres."""

    # the simulated classifier
    signal: float = 6.8  # true-class logit bump of a near, large mask, in units of the logit noise
    signal_distance: float = 25.0  # depth at which the bump has halved
    signal_area: float = 5e-4  # image share at which the size factor is sqrt(1/2)
    lookalike: tuple[tuple[str, str, float], ...] = LOOKALIKE
    class_bias: tuple[tuple[str, float], ...] = CLASS_BIAS  # the classifier's prior (logit offsets)
    confidence_auroc: float = 0.75  # pixel AUROC of confidence vs correctness (0.5: uninformative)
    band_penalty: float = 1.0  # taken off the score (logit of the belief) within the edge band
    band_width: float = 0.004  # of W: the edge band's half width
    # segmentation
    stuff_cell: float = 6.0  # ground squares that cut stuff into segments
    split_area: float = 0.01  # instances larger than this share of the image are cut ...
    split_cell: float = 6.0  # ... by squares of this size
    merge: float = 0.06  # probability that a segment merges into its larger main neighbour
    spill: float = 0.12  # probability that an object's mask spills over what touches it
    spill_size: float = 0.3  # spill width / sqrt(mask area in pixels)
    spill_max: float = 0.025  # of W
    boundary: float = 0.5  # probability that a mask's edge moves outwards
    boundary_width: float = 0.002  # of W, at depth 0
    boundary_growth: float = 0.002  # of W per 10 m of depth
    boundary_max: float = 0.01  # of W
    # misses
    miss_small: float = 0.4
    small_area: float = 5e-4
    miss_thin: float = 0.3
    thin_width: float = 0.012  # of W
    miss_far: float = 0.4
    far_start: float = 30.0
    far_span: float = 30.0
    miss_max: float = 0.9

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name not in ("lookalike", "class_bias") and not (np.isfinite(v) and v >= 0):
                raise ValueError(f"NoiseRates.{f.name} must be a finite number >= 0, got {v!r}")
        for name in ("merge", "spill", "boundary", "miss_small", "miss_thin", "miss_far", "miss_max"):
            if getattr(self, name) > 1:
                raise ValueError(
                    f"NoiseRates.{name} is a probability and must lie in [0, 1], got {getattr(self, name)}"
                )
        if not 0.5 <= self.confidence_auroc <= 1:
            raise ValueError(f"NoiseRates.confidence_auroc must lie in [0.5, 1], got {self.confidence_auroc}")
        for name in ("signal_distance", "stuff_cell", "split_cell", "far_span", "signal_area", "small_area"):
            if getattr(self, name) <= 0:
                raise ValueError(f"NoiseRates.{name} must be > 0, got {getattr(self, name)}")
        for name, v in self.class_bias:
            class_id(name)  # raises naming the unknown class
            if not np.isfinite(v):
                raise ValueError(f"NoiseRates.class_bias of {name} must be finite, got {v}")
        for a, b, sim in self.lookalike:
            class_id(a), class_id(b)
            if not 0 <= sim < 1:
                raise ValueError(f"NoiseRates.lookalike ({a}, {b}) similarity must lie in [0, 1), got {sim}")

    def bias(self) -> np.ndarray:
        """(17,) logit offset per class (the prior), in units of the logit noise at the default level."""
        b = np.zeros(N_LABELS)
        for name, v in self.class_bias:
            b[class_id(name)] = v
        return b

    def bump_matrix(self) -> np.ndarray:
        """(17, 17) B: row t is the logit bump per class of a mask of true class t, in units of the signal."""
        b = np.eye(N_LABELS)
        for a, c, sim in self.lookalike:
            b[class_id(a), class_id(c)] = b[class_id(c), class_id(a)] = sim
        return b


def hard_level(level: float) -> float:
    """The hard noise level stored beside the default one (`hard_semantics`)."""
    return min(1.0, HARD_FACTOR * level)


def weighted_auroc(score: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> float:
    """AUROC of `score` over units that hold `pos` positives and `neg` negatives each (pixel counts);
    ties (within a unit, or equal scores) count one half. NaN without positives or negatives."""
    order = np.argsort(score, kind="stable")
    s, p, n = score[order], pos[order].astype(np.float64), neg[order].astype(np.float64)
    # group equal scores so that ties across units count one half as well
    first = np.r_[True, s[1:] != s[:-1]]
    gid = np.cumsum(first) - 1
    p = np.bincount(gid, p)
    n = np.bincount(gid, n)
    P, N = p.sum(), n.sum()
    if P == 0 or N == 0:
        return float("nan")
    below = np.cumsum(n) - n  # negatives scored strictly lower
    return float((p * (below + 0.5 * n)).sum() / (P * N))


def _ground_cells(xy: np.ndarray, size: float) -> tuple[np.ndarray, int]:
    """Index of each point's ground square of `size` metres, for xy (..., 2) from `_clamped_xy`, and the
    number of squares."""
    n = int(np.ceil(600.0 / size)) + 1
    cell = (xy * (1.0 / size)).astype(np.int64)  # xy >= 0: truncation is floor
    return cell[..., 0] * n + cell[..., 1], n * n


def _clamped_xy(world_xy: np.ndarray) -> np.ndarray:
    """(H, W, 2) world xy relative to the corner of a 600 m square around the view: far ground (the
    horizon) is clamped into its border, which bounds the number of segments; sky goes to the centre."""
    sub = world_xy[::4, ::4].reshape(-1, 2)  # the centre needs no precision: every 16th pixel
    sub = sub[np.isfinite(sub).all(1)]
    centre = np.median(sub, axis=0) if len(sub) else np.zeros(2)
    return np.clip(np.nan_to_num(world_xy - (centre - 300.0), nan=300.0), 0.0, 600.0)


def _segments(semantics, instance, world_xy, valid, rates: NoiseRates) -> np.ndarray:
    """(H, W) int64 segment index 0..n-1 (-1 where there is no truth). Segment keys span a bounded range
    (ground squares x classes, instances, squares of large instances), so they are numbered by counting
    over that range instead of sorting the pixels."""
    h, w = semantics.shape
    inst = instance.astype(np.int64)
    n_inst = int(inst.max()) + 1
    is_big = np.bincount(inst.ravel(), minlength=n_inst) > rates.split_area * h * w
    is_big[0] = False
    big_rank = np.cumsum(is_big) - 1
    xy = _clamped_xy(world_xy)
    stuff, n_stuff = _ground_cells(xy, rates.stuff_cell)
    key = stuff * N_LABELS + semantics  # stuff: one class in one ground square
    on_inst = inst > 0
    key[on_inst] = n_stuff * N_LABELS + inst[on_inst]
    big = is_big[inst]
    if big.any():
        split, n_split = _ground_cells(xy[big], rates.split_cell)
        key[big] = n_stuff * N_LABELS + n_inst + big_rank[inst[big]] * n_split + split
    key = key[valid]
    count = np.bincount(key)
    number = np.cumsum(count > 0) - 1
    seg = np.full((h, w), -1, np.int64)
    seg[valid] = number[key]
    return seg


def _merge(seg: np.ndarray, n: int, area: np.ndarray, p_merge: float, rng: np.random.Generator) -> np.ndarray:
    """Under-segmentation: (n,) root segment of every segment after merging each one, with probability
    p_merge, into the touching segment it shares most border with, if that one is larger (ties: index)."""
    a = np.concatenate([seg[:, :-1].ravel(), seg[:-1, :].ravel()])
    b = np.concatenate([seg[:, 1:].ravel(), seg[1:, :].ravel()])
    keep = (a != b) & (a >= 0) & (b >= 0)
    a, b = a[keep], b[keep]
    code = np.concatenate([a * n + b, b * n + a])
    pairs, border = np.unique(code, return_counts=True)
    src, dst = pairs // n, pairs % n
    order = np.lexsort((border, src))  # per source, the neighbour with the longest border comes last
    last = np.r_[src[order][1:] != src[order][:-1], True]
    best = np.full(n, -1, np.int64)
    best[src[order][last]] = dst[order][last]
    draw = rng.random(n) < p_merge
    larger = (best >= 0) & (
        (area[np.maximum(best, 0)] > area) | ((area[np.maximum(best, 0)] == area) & (best > np.arange(n)))
    )
    parent = np.where(draw & larger, best, np.arange(n))
    while True:  # pointer jumping; parents are strictly larger (area, index), so there are no cycles
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            return parent
        parent = nxt


def _name_edges(labels: np.ndarray) -> np.ndarray:
    """(H, W) names -> (H, W) bool: the pixels with a 4-neighbour of another name."""
    edge = np.zeros(labels.shape, bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:-1] |= labels[1:] != labels[:-1]
    return edge


GROW_DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (dy, dx) in `_shift`'s sense, in this order


def _grow(mask: np.ndarray, valid: np.ndarray, name_x: np.ndarray, k_x: np.ndarray) -> np.ndarray:
    """Masks' edges move outwards: (H, W) mask index (m = len(k_x) - 1 = no mask, where not `valid`) ->
    the mask index after k_x[j] steps of mask j. A step moves every growing mask one pixel in each of
    the 4 directions in turn: in direction (dy, dx) a valid pixel takes the mask of its neighbour at
    (y - dy, x - dx) (no mask outside the image) when that mask still grows (k_x >= step) and has another
    name, all pixels at once; the next direction sees the result.

    Why it is written this way: only a valid pixel with a 4-neighbour of another name, in a mask that
    still grows, can change, and those lie on the masks' borders. Whole-image steps (the first form, kept
    in tests/test_synth.py as the reference this one must match byte for byte) cost H x W per direction
    and step, most of noisy_labels_v2 at 450x800; here the flat indices of those border pixels (`cand`)
    are kept and a step costs their number. After a direction, only the changed pixels and their 4
    neighbours can have become able to change: they join `cand`, which loses, at each step, the pixels
    that can no longer change (`listed` marks its pixels, so none enters twice)."""
    h, w = mask.shape
    m = len(k_x) - 1
    # one pixel of "no mask" around the image: a pixel's neighbours are at flat offsets +-1, +-(w + 2)
    pm = np.full((h + 2, w + 2), m, np.int32)
    pm[1:-1, 1:-1] = mask
    pv = np.zeros((h + 2, w + 2), bool)
    pv[1:-1, 1:-1] = valid
    listed = _name_edges(name_x[pm]) & pv  # whether a pixel is in `cand`; at first every valid one on an edge
    pm, pv, listed, row = pm.ravel(), pv.ravel(), listed.ravel(), w + 2
    cand = np.flatnonzero(listed)
    offsets = [dy * row + dx for dy, dx in GROW_DIRECTIONS]  # neighbour of p in direction d: p - offset
    for i in range(1, int(k_x.max()) + 1):
        grow = k_x >= i
        own = name_x[pm[cand]]
        can = np.zeros(len(cand), bool)
        for off in offsets:
            nb = pm[cand - off]
            can |= grow[nb] & (name_x[nb] != own)
        listed[cand[~can]] = False
        cand = cand[can]
        if len(cand) == 0:
            break
        for off in offsets:
            nb = pm[cand - off]  # gathered before the update: the direction's update is simultaneous
            take = grow[nb] & (name_x[nb] != name_x[pm[cand]])
            changed = cand[take]
            pm[changed] = nb[take]
            near = np.concatenate([changed - 1, changed + 1, changed - row, changed + row])
            near = np.unique(near[pv[near] & ~listed[near]])
            listed[near] = True
            cand = np.concatenate([cand, near])
    return pm.reshape(h + 2, w + 2)[1:-1, 1:-1].copy()


class NoisyMaps(NamedTuple):
    """One camera's noisy 2D labels: semantics (H, W) uint8 (255 unknown), confidence (H, W) uint8 (0..255, 0
    where unknown) and, from a model that has them (v2), the runner-up names (RUNNER_UPS, H, W) uint8 (255 none)
    and their confidences (RUNNER_UPS, H, W) uint8; None from v1."""

    semantics: np.ndarray
    confidence: np.ndarray
    runner_ups: np.ndarray | None = None
    runner_up_confidence: np.ndarray | None = None


def noisy_labels_v2(
    semantics: np.ndarray,
    instance: np.ndarray,
    depth: np.ndarray,
    world_xy: np.ndarray,
    level: float,
    rng: np.random.Generator,
    rates: NoiseRates = NoiseRates(),
) -> NoisyMaps:
    """Noise model v2 (module docstring). Exact semantics (H, W) uint8 (255 sky), instance (H, W) int32
    (0 = ground / sky), depth (H, W) float32 metres and the (H, W, 2) world xy of every pixel's surface
    (NaN for sky) -> the noisy maps with their runner-up names (`NoisyMaps`). The same rng state gives
    the same bytes."""
    if not 0 <= level <= 1:
        raise ValueError(f"label noise level must lie in [0, 1], got {level}")
    h, w = semantics.shape
    f = level / DEFAULT_LEVEL
    valid = semantics != IGNORE_ID
    seg = _segments(semantics, instance, world_xy, valid, rates)
    n = int(seg.max()) + 1
    if n == 0:
        none = np.full((RUNNER_UPS, h, w), IGNORE_ID, np.uint8)
        return NoisyMaps(np.full((h, w), IGNORE_ID, np.uint8), np.zeros((h, w), np.uint8), none, np.zeros_like(none))
    flat = seg[valid]
    area = np.bincount(flat, minlength=n)
    # under-segmentation: masks are unions of segments
    root = _merge(seg, n, area, min(1.0, rates.merge * f), rng)
    roots, mask_of_seg = np.unique(root, return_inverse=True)
    m = len(roots)
    mask = np.where(valid, mask_of_seg[np.maximum(seg, 0)], m)  # m = no mask (sky)
    mv = mask[valid]
    ys, xs = np.nonzero(valid)
    m_area = np.bincount(mv, minlength=m).astype(np.float64)
    share = m_area / (h * w)
    m_depth = np.bincount(mv, depth[valid], m) / m_area
    content = (
        np.bincount(mv * N_LABELS + semantics[valid], minlength=m * N_LABELS).reshape(m, N_LABELS) / m_area[:, None]
    )
    objish = np.bincount(mv, instance[valid] > 0, m) / m_area  # share of instance pixels
    things = content[:, :FIRST_STUFF].sum(1)
    var_x = np.bincount(mv, xs.astype(np.float64) ** 2, m) / m_area - (np.bincount(mv, xs, m) / m_area) ** 2
    var_y = np.bincount(mv, ys.astype(np.float64) ** 2, m) / m_area - (np.bincount(mv, ys, m) / m_area) ** 2
    width_px = np.sqrt(12 * np.maximum(np.minimum(var_x, var_y), 0) + 1)  # n pixels in a row: variance (n^2 - 1) / 12
    # naming by the simulated classifier
    s = rates.signal / (1 + m_depth / rates.signal_distance) * np.sqrt(share / (share + rates.signal_area))
    bump, bias = rates.bump_matrix(), f * rates.bias()
    logits = s[:, None] * (content @ bump) + bias + f * rng.standard_normal((m, N_LABELS))
    name = np.argmax(logits, 1)
    # the classifier's own belief in its answer: the posterior of the named class given its logits, under
    # its noise model (a pure mask of class t has logits s * B[t] + bias + noise) and a flat prior
    resid = logits[:, None, :] - (s[:, None, None] * bump[None] + bias)  # (m, true class t, class c)
    loglik = -(resid**2).sum(-1) / (2 * max(f, 1e-6) ** 2)
    loglik -= loglik.max(1, keepdims=True)
    post = np.exp(loglik)
    post /= post.sum(1, keepdims=True)
    p_named = post[np.arange(m), name]
    belief = np.log(np.clip(p_named, 1e-6, 1 - 1e-6) / np.clip(1 - p_named, 1e-6, 1))  # logit of p_named
    name = name.astype(np.uint8)
    # misses of small, thin and distant masks
    small = np.maximum(things, objish > 0.5)
    thin = (width_px < rates.thin_width * w) & (objish > 0.5)
    far = np.clip((m_depth - rates.far_start) / rates.far_span, 0, 1)
    p_miss = np.minimum(
        f
        * (
            rates.miss_small * small * np.exp(-share / rates.small_area) + rates.miss_thin * thin + rates.miss_far * far
        ),
        rates.miss_max,
    )
    missed = rng.random(m) < p_miss
    # boundaries (every mask's edge may move outwards) and spills (objects' masks over their neighbours)
    k_edge = np.minimum(
        f * w * (rates.boundary_width + rates.boundary_growth * m_depth / 10), f * w * rates.boundary_max
    )
    k_edge = np.where(rng.random(m) < min(1.0, rates.boundary * f), np.round(k_edge), 0)
    spills = (rng.random(m) < min(1.0, rates.spill * f)) & (objish > 0.5)
    k_spill = np.round(np.minimum(rates.spill_size * np.sqrt(m_area), f * w * rates.spill_max))
    k = np.where(spills, np.maximum(k_edge, k_spill), k_edge).astype(np.int64)
    k[missed] = 0
    name_x = np.r_[np.where(missed, IGNORE_ID, name), IGNORE_ID].astype(np.uint8)
    k_x = np.r_[k, 0]
    mask = _grow(mask.astype(np.int32), valid, name_x, k_x)
    labels = name_x[mask]
    # confidence: the classifier's belief, less near the noisy map's edges, plus score noise of scale tau
    edge = _name_edges(labels)
    for _ in range(max(int(round(rates.band_width * w)) - 1, 0)):
        edge = (
            edge
            | _shift(edge, 0, 1, False)
            | _shift(edge, 0, -1, False)
            | _shift(edge, 1, 0, False)
            | _shift(edge, -1, 0, False)
        )
    unit = mask * 2 + edge
    q = (np.repeat(np.r_[belief, 0.0], 2) - rates.band_penalty * np.tile([0.0, 1.0], m + 1) - SCORE_REF) / SCORE_SCALE
    eta = rng.standard_normal(2 * (m + 1))
    named = labels != IGNORE_ID
    judged = named & valid
    right = np.bincount(unit[judged], labels[judged] == semantics[judged], 2 * (m + 1))
    wrong = np.bincount(unit[judged], labels[judged] != semantics[judged], 2 * (m + 1))
    tau = _solve_tau(q, eta, right, wrong, rates.confidence_auroc)
    score = (q + tau * eta) / np.sqrt(1 + tau**2)
    conf_u = 1 / (1 + np.exp(-(CONF_OFFSET + CONF_SLOPE * score)))
    confidence = np.where(named, np.round(conf_u[unit] * 255), 0).astype(np.uint8)
    # runner-ups: the next classes of the posterior, sharing what the named class's confidence leaves
    others = post.copy()
    others[np.arange(m), name] = -1.0
    alt = np.argsort(-others, 1, kind="stable")[:, :RUNNER_UPS]  # (m, R)
    share = np.take_along_axis(post, alt, 1) / np.maximum(1 - p_named, 1e-6)[:, None]
    alt_conf = np.clip(share[np.minimum(mask, m - 1)].transpose(2, 0, 1) * (1 - conf_u[unit])[None], 0, 1)
    alt_conf = np.where(named[None], np.round(alt_conf * 255), 0).astype(np.uint8)
    runner_ups = np.where(alt_conf > 0, alt[np.minimum(mask, m - 1)].transpose(2, 0, 1), IGNORE_ID).astype(np.uint8)
    return NoisyMaps(labels, confidence, runner_ups, alt_conf)


def _solve_tau(q: np.ndarray, eta: np.ndarray, right: np.ndarray, wrong: np.ndarray, target: float) -> float:
    """The score-noise scale tau >= 0 whose pixel AUROC of (q + tau eta) against correctness is `target`
    (0 when the noise-free score already separates no better; bisection in atan(tau))."""
    used = (right + wrong) > 0
    q, eta, right, wrong = q[used], eta[used], right[used], wrong[used]

    def auroc(t: float) -> float:
        return weighted_auroc((q + t * eta) / np.sqrt(1 + t * t), right, wrong)

    a0 = auroc(0.0)
    if not np.isfinite(a0) or a0 <= target:
        return 0.0
    lo, hi = 0.0, np.pi / 2 - 1e-6  # tau = tan(angle)
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if auroc(float(np.tan(mid))) > target:
            lo = mid
        else:
            hi = mid
    return float(np.tan(0.5 * (lo + hi)))


def make_noisy_labels(
    profile: str,
    semantics: np.ndarray,
    instance: np.ndarray,
    depth: np.ndarray,
    world_xy: np.ndarray,
    level: float,
    rng: np.random.Generator,
    rates: NoiseRates = NoiseRates(),
) -> NoisyMaps:
    """The noisy maps of `profile` ("v2" or "v1") at `level` (v1: no runner-ups; `rates` are v2's)."""
    if profile == "v2":
        return noisy_labels_v2(semantics, instance, depth, world_xy, level, rng, rates)
    if profile == "v1":
        return NoisyMaps(*noisy_labels_v1(semantics, instance, depth, world_xy, level, rng))
    raise ValueError(f"noise profile must be one of {PROFILES}, got {profile!r}")
