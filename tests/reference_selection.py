"""The selection code before issue 21 (N x M x D distance arrays, whole orders), kept as the reference the
chunked code must reproduce pick for pick on small pools."""

from __future__ import annotations

from typing import Sequence

import math

import numpy as np

from autolabel.active.config import SelectionConfig
from autolabel.active.select import Candidate, Pick, resolve_strategy


def k_center_greedy(
    features: np.ndarray, k: int, selected: Sequence[int] = (), candidates: Sequence[int] | None = None
) -> list[int]:
    """Pick k candidates, each the farthest (Euclidean) from everything selected so far (the core-set
    greedy of Sener & Savarese, a 2-approximation of the k-center optimum). With nothing selected yet,
    the first pick is the candidate farthest from the candidates' mean. Returns indices in pick order."""
    cand = np.arange(len(features)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    x = features[cand].astype(np.float64)
    if len(selected):
        s = features[np.asarray(selected)].astype(np.float64)
        d = np.linalg.norm(x[:, None, :] - s[None], axis=2).min(1)
    else:
        d = np.linalg.norm(x - x.mean(0), axis=1)
    picks: list[int] = []
    for _ in range(min(k, len(cand))):
        i = int(np.argmax(d))
        picks.append(i)
        d = np.minimum(d, np.linalg.norm(x - x[i], axis=1))
        d[picks] = -np.inf
    return [int(cand[i]) for i in picks]


def k_center_radius(features: np.ndarray, centers: Sequence[int], points: Sequence[int] | None = None) -> float:
    """max over points of the distance to the nearest center (what k-center minimises)."""
    pts = features if points is None else features[np.asarray(points)]
    c = features[np.asarray(centers)]
    return float(np.max(np.min(np.linalg.norm(pts[:, None] - c[None], axis=2), axis=1)))


def kmeans_pp(features: np.ndarray, k: int, seed: int, candidates: Sequence[int] | None = None) -> list[int]:
    """k indices chosen by k-means++ seeding (scikit-learn): spread out, sampled by squared distance."""
    from sklearn.cluster import kmeans_plusplus

    cand = np.arange(len(features)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    k = min(k, len(cand))
    if k <= 0:
        return []
    _, idx = kmeans_plusplus(features[cand].astype(np.float64), n_clusters=k, random_state=seed)
    return [int(cand[i]) for i in idx]


def _order(
    strategy: str, cands: list[Candidate], feats: np.ndarray, labelled: np.ndarray, n_frames: int, cfg: SelectionConfig
) -> tuple[list[int], list[str]]:
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
        return order, [
            f"core-set pick {r + 1} (farthest from the labelled and picked frames)" for r in range(len(order))
        ]
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
        return diverse + rest, (
            [
                f"hybrid: uncertainty rank {rank[i]} of the top {k1}, core-set pick {r + 1}"
                for r, i in enumerate(diverse)
            ]
            + ["hybrid: uncertainty fill"] * len(rest)
        )
    raise ValueError(f"unknown strategy {strategy!r}")


def select_frames(
    cands: list[Candidate],
    features: np.ndarray,
    labelled_features: np.ndarray,
    cfg: SelectionConfig,
    n_labelled: int = 0,
    pool_size: int | None = None,
) -> tuple[list[Pick], str]:
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
