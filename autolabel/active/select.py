"""Selection strategies under a budget (frames or annotation cost), with a per-scene cap.

Every strategy produces an order of the candidates and a reason per candidate; one budget pass then
walks that order, skipping a frame whose scene already has `per_scene_cap` picks or whose cost no longer
fits, until the budget is spent. So the budget and the cap hold exactly for every strategy. With
`selection.random_share` a ranked strategy's pass stops short of the budget and a second pass spends the rest in
random order, under the same caps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import numpy as np
import torch

from .config import SelectionConfig, check_region_budget
from .diversity import greedy_order, kmeans_pp
from .regions import RegionGrid

RANKED = ("entropy", "fusion")  # the strategies `random_share` mixes random picks into


def _ranked_then_random(strategy: str, cfg: SelectionConfig, order: Callable, spend: Callable) -> None:
    """One budget pass over the strategy's order; for a ranked strategy with `selection.random_share` s that pass
    keeps s of the budget back and a second one spends it in random order. order(name) yields (..., reason)
    tuples, spend(order, keep) takes them while the budget left stays at or above keep."""
    explore = cfg.random_share * cfg.budget if strategy in RANKED else 0.0
    spend(order(strategy), keep=explore)
    if explore:
        spend(((*head, f"random share: {why}") for *head, why in order("random")), keep=0.0)


@dataclass
class Candidate:
    """One frame of the pool with its scores: an unlabelled one, or (region unit) one with tiles left to label."""

    token: str
    scene: str
    scores: dict[str, float] = field(default_factory=dict)  # uncertainty, disagreement, residual
    cost: float = 1.0  # annotation cost (1 per frame without the cost model)
    # selection.unit region (issue 21): per BEV tile, its score and its visible voxels (0: nothing to label)
    tile_scores: np.ndarray | None = None
    tile_visible: np.ndarray | None = None
    # region unit: (T,) bool, the tiles annotators labelled in earlier rounds (None: the frame has no manual label)
    tiles_before: np.ndarray | None = None
    # selection.annotation points (issue 24): points and boxes to label (autolabel.annotation.costs.PointCost)
    point_cost: object | None = None


@dataclass
class Pick:
    candidate: Candidate
    reason: str
    tiles: list[int] = field(default_factory=list)  # region unit: the frame's tiles to label, in pick order
    voxels: int = 0  # region unit: their voxels (the cost)


def distance_device(device: torch.device) -> torch.device | None:
    """Where the diversity distances run: the recipe's (resolved) device when it is a GPU, else the CPU (None)."""
    return device if device.type == "cuda" else None


def fusion_default(cfg: SelectionConfig, fused: bool) -> SelectionConfig:
    """`auto` for BEV tiles of a run whose training frames are fused (`fused`: fusion.enabled) is `fusion`; any
    other selection is returned as it is."""
    if cfg.strategy == "auto" and cfg.region and fused:
        return replace(cfg, strategy="fusion")
    return cfg


def resolve_strategy(cfg: SelectionConfig, n_labelled: int, pool_size: int) -> str:
    """`auto`: scene-stratified random while the labelled share is small, then the hybrid. Measured on the
    synthetic benchmark (issue 21, BENCHMARKS.md): with 1-10% of the pool labelled no strategy beat random
    selection (uncertainty, hybrid and core-set on frames, uncertainty and hybrid on BEV tiles), and core-set
    lost to it; stratified random is random with the scenes taken in turn, which needs no scores."""
    if cfg.strategy != "auto":
        return cfg.strategy
    return "stratified" if n_labelled < cfg.auto_diversity_share * max(pool_size, 1) else "hybrid"


def _order(
    strategy: str,
    cands: list[Candidate],
    feats: np.ndarray,
    labelled: np.ndarray,
    n_frames: int,
    cfg: SelectionConfig,
    device: str | torch.device | None = None,
) -> Iterator[tuple[int, str]]:
    """The strategy's order of the candidates with a reason each, lazily (the budget pass stops early, so a
    core-set order over 35,000 frames costs only as many greedy steps as it is read)."""
    rng = np.random.default_rng(cfg.seed)
    n = len(cands)
    unc = np.array([c.scores.get("uncertainty", 0.0) for c in cands])
    if strategy == "random":
        yield from ((i, "random") for i in rng.permutation(n).tolist())
        return
    if strategy == "stratified":
        by_scene: dict[str, list[int]] = {}
        for i in rng.permutation(n).tolist():
            by_scene.setdefault(cands[i].scene, []).append(i)
        scenes = list(by_scene)
        rng.shuffle(scenes)
        while any(by_scene.values()):
            for s in scenes:
                if by_scene[s]:
                    i = by_scene[s].pop()
                    yield i, f"scene-stratified random ({cands[i].scene})"
        return
    if strategy in ("entropy", "fusion"):  # the same ranking; fusion's uncertainty comes from the fused labels
        order = np.argsort(-unc, kind="stable").tolist()
        what = "uncertainty" if strategy == "entropy" else "fused-label uncertainty"
        yield from ((i, f"{what} rank {r + 1}: {unc[i]:.4f}") for r, i in enumerate(order))
        return
    if strategy not in ("coreset", "kmeans", "hybrid"):
        raise ValueError(f"unknown strategy {strategy!r}")
    if strategy == "coreset":
        order = greedy_order(feats, labelled, device)
        yield from (
            (i, f"core-set pick {r + 1} (farthest from the labelled and picked frames)") for r, i in enumerate(order)
        )
        return
    if strategy == "kmeans":
        first = kmeans_pp(feats, n_frames, cfg.seed)
        yield from ((i, f"k-means++ seed {r + 1}") for r, i in enumerate(first))
        taken = set(first)
        yield from ((i, "random fill") for i in rng.permutation(n).tolist() if i not in taken)
        return
    k1 = min(n, max(n_frames, math.ceil(cfg.hybrid_factor * n_frames)))
    by_unc = np.argsort(-unc, kind="stable").tolist()
    top = by_unc[:k1]
    rank = {i: r + 1 for r, i in enumerate(top)}
    taken = set()
    for r, j in enumerate(greedy_order(feats[top], labelled, device)):
        i = top[j]
        taken.add(i)
        yield i, f"hybrid: uncertainty rank {rank[i]} of the top {k1}, core-set pick {r + 1}"
    yield from ((i, "hybrid: uncertainty fill") for i in by_unc if i not in taken)


def select_frames(
    cands: list[Candidate],
    features: np.ndarray,
    labelled_features: np.ndarray,
    cfg: SelectionConfig,
    n_labelled: int = 0,
    pool_size: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[list[Pick], str]:
    """Choose frames from `cands` (features (N, D), labelled_features (M, D) of frames already annotated).
    Returns the picks in order and the strategy used. `device`: where the diversity strategies' distance
    products run (a CUDA device when given; the CPU otherwise). With `random_share` s and a ranked strategy
    (entropy, fusion) the ranking spends (1 - s) of the budget and random frames the rest."""
    strategy = resolve_strategy(cfg, n_labelled, pool_size if pool_size is not None else len(cands) + n_labelled)
    if not cands:
        return [], strategy
    costs = np.array([c.cost if cfg.cost_model else 1.0 for c in cands])
    n_frames = max(1, int(cfg.budget // max(costs.mean(), 1e-12)))
    scene_ids = {s: j for j, s in enumerate(dict.fromkeys(c.scene for c in cands))}
    scene_of = np.array([scene_ids[c.scene] for c in cands])
    per_scene = np.zeros(len(scene_ids), np.int64)
    taken = np.zeros(len(cands), bool)
    left = float(cfg.budget)
    picks: list[Pick] = []

    def spend(order: Iterator[tuple[int, str]], keep: float) -> None:
        """Take the order's frames while the budget left stays at or above `keep`."""
        nonlocal left
        seen = taken.copy()
        for i, why in order:
            seen[i] = True
            if taken[i] or per_scene[scene_of[i]] >= cfg.per_scene_cap or costs[i] > left - keep + 1e-9:
                continue
            picks.append(Pick(cands[i], why))
            taken[i] = True
            per_scene[scene_of[i]] += 1
            left -= costs[i]
            if left - keep < costs.min() - 1e-9:
                break
            # caps only fill and the budget only shrinks: once no unseen candidate could still be taken, reading
            # more of the order changes nothing (and would cost a core-set step per frame of the pool)
            if not np.any(~seen & (per_scene[scene_of] < cfg.per_scene_cap) & (costs <= left - keep + 1e-9)):
                break

    def order(name: str) -> Iterator[tuple[int, str]]:
        return _order(name, cands, features, labelled_features, n_frames, cfg, device)

    _ranked_then_random(strategy, cfg, order, spend)
    return picks, strategy


def _region_order(
    strategy: str,
    cands: list[Candidate],
    tiles_of: list[list[int]],
    feats: np.ndarray,
    labelled: np.ndarray,
    n_frames: int,
    cfg: SelectionConfig,
    device: str | torch.device | None,
) -> Iterator[tuple[int, int, str]]:
    """(frame, tile, reason) in the strategy's order. entropy, fusion: every (frame, tile) pair by tile score; random
    and stratified: pairs at random (stratified: scenes in turn); the diversity strategies (core-set, k-means,
    hybrid) order the frames as for frame selection and each frame brings its tiles, most uncertain first."""
    rng = np.random.default_rng(cfg.seed)
    pairs = [(i, t) for i, ts in enumerate(tiles_of) for t in ts]
    if strategy in ("entropy", "fusion"):
        score = np.array([cands[i].tile_scores[t] for i, t in pairs])
        what = "tile uncertainty" if strategy == "entropy" else "tile fused-label uncertainty"
        for r, j in enumerate(np.argsort(-score, kind="stable").tolist()):
            yield (*pairs[j], f"{what} rank {r + 1}: {score[j]:.4f}")
        return
    if strategy in ("random", "stratified"):
        perm = rng.permutation(len(pairs)).tolist()
        if strategy == "random":
            yield from ((*pairs[j], "random tile") for j in perm)
            return
        by_scene: dict[str, list[int]] = {}
        for j in perm:
            by_scene.setdefault(cands[pairs[j][0]].scene, []).append(j)
        scenes = list(by_scene)
        rng.shuffle(scenes)
        while any(by_scene.values()):
            for sc in scenes:
                if by_scene[sc]:
                    j = by_scene[sc].pop()
                    yield (*pairs[j], f"scene-stratified random tile ({sc})")
        return
    for i, why in _order(strategy, cands, feats, labelled, n_frames, cfg, device):
        for r, t in enumerate(tiles_of[i]):
            yield i, t, f"{why}; its tile uncertainty rank {r + 1}"


def select_regions(
    cands: list[Candidate],
    features: np.ndarray,
    labelled_features: np.ndarray,
    cfg: SelectionConfig,
    regions: RegionGrid,
    n_labelled: int = 0,
    pool_size: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[list[Pick], str]:
    """Choose (frame, tile) pairs under a budget of labelled voxels (selection.unit region). Only tiles with
    visible voxels are candidates. The per-scene cap counts frames (a frame with any tile counts once), a
    frame gives at most `max_tiles_per_frame` tiles, and a tile is taken only while its voxels fit the budget
    left. With `random_share` s and a ranked strategy (entropy, fusion) the ranking spends (1 - s) of the budget
    and random tiles the rest. Returns one Pick per frame (its tiles in pick order, their voxels) in the order
    frames were first picked, and the strategy used. Deterministic (seeded, stable sorts)."""
    check_region_budget(cfg, regions.shape)
    strategy = resolve_strategy(cfg, n_labelled, pool_size if pool_size is not None else len(cands) + n_labelled)
    tv = regions.voxels()
    tiles_of = []
    for c in cands:
        if c.tile_scores is None or c.tile_visible is None or len(c.tile_scores) != regions.count:
            raise ValueError(
                f"select_regions: candidate {c.token} has no scores for the {regions.count} tiles "
                f"(score the pool with selection.unit region)"
            )
        order = np.argsort(-np.asarray(c.tile_scores), kind="stable")
        tiles_of.append([int(t) for t in order if c.tile_visible[t] > 0])
    usable = [t for ts in tiles_of for t in ts]
    if not usable:
        return [], strategy
    quota = cfg.max_tiles_per_frame
    n_frames = max(1, math.ceil(cfg.budget / (min(quota, regions.count) * float(tv.mean()))))
    scene_ids = {s: j for j, s in enumerate(dict.fromkeys(c.scene for c in cands))}
    per_scene = np.zeros(len(scene_ids), np.int64)
    smallest = int(tv[np.unique(usable)].min())
    left = float(cfg.budget)
    chosen: dict[int, Pick] = {}

    def spend(order: Iterator[tuple[int, int, str]], keep: float) -> None:
        """Take the order's tiles while the budget left stays at or above `keep` voxels."""
        nonlocal left
        full = sum(len(p.tiles) == quota for p in chosen.values())  # frames at their quota
        for i, t, why in order:
            c = cands[i]
            pick = chosen.get(i)
            if pick is None and per_scene[scene_ids[c.scene]] >= cfg.per_scene_cap:
                continue
            if pick is not None and (len(pick.tiles) >= quota or t in pick.tiles):
                continue
            if tv[t] > left - keep + 1e-9:
                continue
            if pick is None:
                pick = chosen[i] = Pick(c, why)
                per_scene[scene_ids[c.scene]] += 1
            pick.tiles.append(t)
            pick.voxels += int(tv[t])
            full += len(pick.tiles) == quota
            left -= tv[t]
            if left - keep < smallest - 1e-9:
                break
            # every scene at its cap and every picked frame at its quota: nothing further can be taken
            if full == len(chosen) and np.all(per_scene >= cfg.per_scene_cap):
                break

    def order(name: str) -> Iterator[tuple[int, int, str]]:
        return _region_order(name, cands, tiles_of, features, labelled_features, n_frames, cfg, device)

    _ranked_then_random(strategy, cfg, order, spend)
    return list(chosen.values()), strategy
