"""Diversity on pooled BEV features: k-center greedy (core-set) and k-means++ seeding."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def k_center_greedy(features: np.ndarray, k: int, selected: Sequence[int] = (),
                    candidates: Sequence[int] | None = None) -> list[int]:
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
