"""What naming a thing from several views is worth, by the decoder: a simulation of noise model v2's classifier.

One pure thing of class t, seen by N views at a depth and image share, each view's 17 logits drawn as noise model
v2 draws them at the default level (autolabel.synth.noise: z = s * B[t] + bias + N(0, 1), s falling with depth and
rising with size). Three decoders of the N views, one table:
  vote  each view's argmax name weighed by its confidence (the posterior of that name under the classifier's own
        noise model): a name and a confidence per pixel, what fusion voted before the maps carried runner-ups
  top3  the name and each view's two runner-up names (the next classes of the same posterior, each with its
        share of what the name's confidence leaves) voted by fusion's rule (`fusion.vote_rule`, its default:
        evidence, log(p / u); `runner_up_weight` 0.5): what fusion votes now (here without the maps' score noise,
        which the world's confidences carry)
  lik   the sum of the views' log-likelihoods over all 17 classes: a product of experts over the whole class
        distribution (the exact likelihood of the generating model, so it flatters what a real classifier's
        distribution would give)
Rows: the share of 4,000 trials named right (car and driveable surface, the frequent classes the classifier leans
towards, first: a decoder that favours rare names loses there).

    python benchmarks/naming_views.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autolabel.fusion.config import FusionConfig  # noqa: E402
from autolabel.fusion.fuse import pixel_votes  # noqa: E402
from autolabel.synth.noise import RUNNER_UPS, NoiseRates  # noqa: E402
from occnet.classes import OCC3D_CLASS_NAMES  # noqa: E402

CLASSES = ("car", "driveable_surface", "pedestrian", "construction_vehicle", "bicycle", "truck", "other_flat")
SIGHTS = ((15.0, 2e-3), (30.0, 5e-4), (40.0, 2e-4))  # (depth m, image share)
VIEWS = (1, 4, 12)


def named_right(t: int, depth: float, share: float, n: int, rng: np.random.Generator, trials: int = 4000):
    """(vote, top3, lik): the share of trials in which each decoder names class t from n views."""
    r = NoiseRates()
    bump, bias = r.bump_matrix(), r.bias()
    k = bump.shape[0]
    s = r.signal / (1 + depth / r.signal_distance) * np.sqrt(share / (share + r.signal_area))
    z = s * bump[t] + bias + rng.standard_normal((trials, n, k))  # (trials, views, classes)
    loglik = -((z[:, :, None, :] - (s * bump + bias)) ** 2).sum(-1) / 2  # (trials, views, true class)
    name = z.argmax(-1)
    post = np.exp(loglik - loglik.max(-1, keepdims=True))
    conf = np.take_along_axis(post / post.sum(-1, keepdims=True), name[..., None], -1)[..., 0]
    votes = np.zeros((trials, k))
    trial = np.repeat(np.arange(trials)[:, None], n, 1)
    np.add.at(votes, (trial, name), conf)
    post = post / post.sum(-1, keepdims=True)
    others = post.copy()
    np.put_along_axis(others, name[..., None], -1.0, -1)
    alt = np.argsort(-others, -1)[..., :RUNNER_UPS]  # (trials, views, R)
    share = np.take_along_axis(post, alt, -1)  # p_j (1 - conf) / (1 - p_name) = p_j: here conf is p_name
    cfg = FusionConfig()
    weight = torch.from_numpy(conf.reshape(-1))
    every = torch.ones(trials * n, dtype=torch.bool)
    alts = [
        (torch.from_numpy(alt[..., j].reshape(-1)), torch.from_numpy(share[..., j].reshape(-1)), every)
        for j in range(RUNNER_UPS)
    ]
    weight, alts = pixel_votes(weight, alts, cfg)
    top3 = np.zeros((trials, k))
    np.add.at(top3, (trial, name), weight.numpy().reshape(trials, n))
    for a, w, ok in alts:
        w = torch.where(ok, w, 0.0)
        np.add.at(top3, (trial, a.numpy().reshape(trials, n)), w.numpy().reshape(trials, n))
    right = [votes.argmax(-1) == t, top3.argmax(-1) == t, loglik.sum(1).argmax(-1) == t]
    return tuple(float(r.mean()) for r in right)


def main() -> int:
    rng = np.random.default_rng(0)
    print(f"{'class':<22}{'depth':>7}{'share':>8}" + "".join(f"{f'vote/top3/lik, {n} views':>27}" for n in VIEWS))
    for cls in CLASSES:
        t = list(OCC3D_CLASS_NAMES).index(cls)
        for depth, share in SIGHTS:
            cells = [named_right(t, depth, share, n, rng) for n in VIEWS]
            print(
                f"{cls:<22}{depth:>6.0f}m{share:>8.0e}"
                + "".join(f"{f'{a:.2f} / {b:.2f} / {c:.2f}':>27}" for a, b, c in cells)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
