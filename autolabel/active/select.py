"""Selection strategies under a budget (frames or annotation cost), with a per-scene cap.

Every strategy produces an order of the candidates and a reason per candidate; one budget pass then
walks that order, skipping a frame whose scene already has `per_scene_cap` picks or whose cost no longer
fits, until the budget is spent. So the budget and the cap hold exactly for every strategy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .config import SelectionConfig
from .diversity import k_center_greedy, kmeans_pp


@dataclass
class Candidate:
    """One unlabeled frame of the pool with its scores."""

    token: str
    scene: str
    scores: dict[str, float] = field(default_factory=dict)  # uncertainty, disagreement, residual
    cost: float = 1.0  # annotation cost (1 per frame without the cost model)


@dataclass
class Pick:
    candidate: Candidate
    reason: str


def resolve_strategy(cfg: SelectionConfig, n_labelled: int, pool_size: int) -> str:
    """`auto`: diversity first (core-set) while the labelled share is small -- uncertainty sampling is
    known to lose to random and diversity at low budgets -- then the hybrid."""
    if cfg.strategy != "auto":
        return cfg.strategy
    return "coreset" if n_labelled < cfg.auto_diversity_share * max(pool_size, 1) else "hybrid"


def _order(strategy: str, cands: list[Candidate], feats: np.ndarray, labelled: np.ndarray, n_frames: int,
           cfg: SelectionConfig) -> tuple[list[int], list[str]]:
    rng = np.random.default_rng(cfg.seed)
    n = len(cands)
    unc = np.array([c.scores.get("uncertainty", 0.0) for c in cands])
    if strategy == "random":
        order = rng.permutation(n).tolist()
        return order, ["random" for _ in order]
    if strategy == "stratified":
        by_scene: dict[str, list[int]] = {}
        for i in rng.permutation(n).tolist():
            by_scene.setdefault(cands[i].scene, []).append(i)
        scenes = list(by_scene)
        rng.shuffle(scenes)
        order = []
        while any(by_scene.values()):
            for s in scenes:
                if by_scene[s]:
                    order.append(by_scene[s].pop())
        return order, [f"scene-stratified random ({cands[i].scene})" for i in order]
    if strategy == "entropy":
        order = np.argsort(-unc, kind="stable").tolist()
        return order, [f"uncertainty rank {r + 1}: {unc[i]:.4f}" for r, i in enumerate(order)]
    all_feats = np.concatenate([feats, labelled]) if len(labelled) else feats
    labelled_idx = list(range(n, n + len(labelled)))
    if strategy == "coreset":
        order = k_center_greedy(all_feats, n, selected=labelled_idx, candidates=list(range(n)))
        return order, [f"core-set pick {r + 1} (farthest from the labelled and picked frames)" for r in range(len(order))]
    if strategy == "kmeans":
        first = kmeans_pp(feats, n_frames, cfg.seed)
        rest = [i for i in rng.permutation(n).tolist() if i not in set(first)]
        return first + rest, [f"k-means++ seed {r + 1}" for r in range(len(first))] + ["random fill"] * len(rest)
    if strategy == "hybrid":
        k1 = min(n, max(n_frames, math.ceil(cfg.hybrid_factor * n_frames)))
        top = np.argsort(-unc, kind="stable")[:k1].tolist()
        diverse = k_center_greedy(all_feats, k1, selected=labelled_idx, candidates=top)
        rank = {i: r + 1 for r, i in enumerate(top)}
        rest = [i for i in np.argsort(-unc, kind="stable").tolist() if i not in set(diverse)]
        return diverse + rest, ([f"hybrid: uncertainty rank {rank[i]} of the top {k1}, core-set pick {r + 1}"
                                 for r, i in enumerate(diverse)] + ["hybrid: uncertainty fill"] * len(rest))
    raise ValueError(f"unknown strategy {strategy!r}")


def select_frames(cands: list[Candidate], features: np.ndarray, labelled_features: np.ndarray, cfg: SelectionConfig,
                  n_labelled: int = 0, pool_size: int | None = None) -> tuple[list[Pick], str]:
    """Choose frames from `cands` (features (N, D), labelled_features (M, D) of frames already annotated).
    Returns the picks in order and the strategy used."""
    strategy = resolve_strategy(cfg, n_labelled, pool_size if pool_size is not None else len(cands) + n_labelled)
    if not cands:
        return [], strategy
    costs = np.array([c.cost if cfg.cost_model else 1.0 for c in cands])
    n_frames = max(1, int(cfg.budget // max(costs.mean(), 1e-12)))
    order, reasons = _order(strategy, cands, features, labelled_features, n_frames, cfg)
    left = float(cfg.budget)
    per_scene: dict[str, int] = {}
    picks: list[Pick] = []
    for i, why in zip(order, reasons):
        c = cands[i]
        if per_scene.get(c.scene, 0) >= cfg.per_scene_cap or costs[i] > left + 1e-9:
            continue
        picks.append(Pick(c, why))
        per_scene[c.scene] = per_scene.get(c.scene, 0) + 1
        left -= costs[i]
        if left < costs.min() - 1e-9:
            break
    return picks, strategy
