"""Diversity on pooled BEV features: k-center greedy (core-set) and k-means++ seeding.

Distances go through `distances.PointDistances` (chunked, exact float64 values, never an N x M x D
array), so a nuScenes-size pool (35,000 frames x 2,048 numbers, 1,500 labelled) fits in a few GB.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from .distances import PointDistances


def k_center_order(
    features: np.ndarray,
    selected: Sequence[int] = (),
    candidates: Sequence[int] | None = None,
    device: str | torch.device | None = None,
) -> Iterator[int]:
    """Candidates in k-center greedy order (the core-set greedy of Sener & Savarese, a 2-approximation of
    the k-center optimum), lazily: each is the farthest (Euclidean) from everything selected and picked
    so far. With nothing selected, the first pick is the candidate farthest from the candidates' mean.
    A consumer that stops after k picks pays for k steps only. Indices into `features`."""
    cand = np.arange(len(features)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    points = features if candidates is None else features[cand]
    centres = features[np.asarray(selected, dtype=np.int64)] if len(selected) else None
    yield from (int(cand[i]) for i in greedy_order(points, centres, device))


def greedy_order(
    points: np.ndarray, centres: np.ndarray | None = None, device: str | torch.device | None = None
) -> Iterator[int]:
    """`k_center_order` over `points` (N, D) with `centres` (M, D) already selected (None: none), as row
    indices of `points`; the arrays are used as they are (no copy of a float32 pool on the CPU)."""
    if len(points) == 0:
        return
    dist = PointDistances(points, device)
    d = dist.nearest(centres) if centres is not None and len(centres) else dist.to_mean()
    for _ in range(len(points)):
        i = int(np.argmax(d))
        yield i
        dist.shrink(d, i)
        d[i] = -np.inf


def k_center_greedy(
    features: np.ndarray,
    k: int,
    selected: Sequence[int] = (),
    candidates: Sequence[int] | None = None,
    device: str | torch.device | None = None,
) -> list[int]:
    """The first k candidates of `k_center_order` (indices into `features`, in pick order)."""
    order = k_center_order(features, selected, candidates, device)
    return [i for _, i in zip(range(max(k, 0)), order)]


def k_center_radius(features: np.ndarray, centers: Sequence[int], points: Sequence[int] | None = None) -> float:
    """max over points of the distance to the nearest center (what k-center minimises)."""
    pts = features if points is None else features[np.asarray(points)]
    return float(np.max(PointDistances(pts).nearest(features[np.asarray(centers)])))


def kmeans_pp(features: np.ndarray, k: int, seed: int, candidates: Sequence[int] | None = None) -> list[int]:
    """k indices chosen by k-means++ seeding (scikit-learn, chunked distances): spread out, sampled by
    squared distance."""
    from sklearn.cluster import kmeans_plusplus

    cand = np.arange(len(features)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    k = min(k, len(cand))
    if k <= 0:
        return []
    _, idx = kmeans_plusplus(features[cand].astype(np.float64), n_clusters=k, random_state=seed)
    return [int(cand[i]) for i in idx]
