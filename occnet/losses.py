"""Losses: SILog on rendered depth, weighted cross-entropy on rendered semantics, opacity entropy,
and 3D cross-entropies on voxels (labels over mask_camera; confidence-weighted pseudo-labels)."""

from __future__ import annotations

import torch

from .rays import IGNORE, RayBatch, Rendered, transmittance_to

EPS = 1e-6


def silog(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, lam: float = 0.85) -> torch.Tensor:
    """Scale-invariant log error over rays with a target depth: sqrt(E[g^2] - lam E[g]^2), g = log p - log t."""
    m = target > 0
    if not m.any():
        return pred.sum() * 0
    g = torch.log(pred[m].clamp_min(1e-3)) - torch.log(target[m])
    w = weight[m] / weight[m].sum()
    mean = (w * g).sum()
    return torch.sqrt(((w * g * g).sum() - lam * mean * mean).clamp_min(1e-8))


def rendered_semantics_ce(
    rendered: Rendered, rays: RayBatch, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of the rendered class distribution (normalised by opacity) where a 2D label exists,
    weighted by the label's confidence, the ray's weight and the class weight. A labelled ray without a
    depth target (no LiDAR return: occnet.rays, semantic_rays "all") may end beyond the grid, a far
    building say, where the grid holds nothing to name; it also weighs by its rendered opacity, detached,
    so a ray the network lets through the grid asks nothing of it and one stopped inside (a roof LiDAR
    missed) counts fully. The geometry stays with the depth and line-of-sight losses."""
    m = rays.semantics != IGNORE
    if not m.any():
        return rendered.probs.sum() * 0
    p = rendered.probs[m] / (rendered.opacity[m, None] + EPS)
    target = rays.semantics[m]
    nll = -torch.log(p.gather(1, target[:, None])[:, 0].clamp_min(EPS))
    stopped = torch.where(rays.depth[m] > 0, torch.ones_like(nll), rendered.opacity[m].detach().clamp(0, 1))
    w = rays.confidence[m] * rays.weight[m] * stopped
    if class_weights is not None:
        w = w * class_weights[target]
    return (w * nll).sum() / w.sum().clamp_min(EPS)


def opacity_entropy(rendered: Rendered) -> torch.Tensor:
    o = rendered.opacity.clamp(EPS, 1 - EPS)
    return -(o * torch.log(o) + (1 - o) * torch.log(1 - o)).mean()


def voxel_log_probs(density: torch.Tensor, logits: torch.Tensor, voxel_size: float) -> torch.Tensor:
    """(B, X, Y, Z, K+1) log-probabilities over the K classes and free (last): occupancy
    o = 1 - exp(-sigma * voxel_size), P(free) = 1 - o, P(c) = o * softmax(logits)_c."""
    s = density.float() * voxel_size
    log_occ = torch.log((-torch.expm1(-s)).clamp_min(1e-12))  # log(1 - e^-s)
    log_free = -s
    return torch.cat([log_occ[..., None] + logits.float().log_softmax(-1), log_free[..., None]], -1)


def voxel_ce(
    density: torch.Tensor,
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    voxel_size: float,
    class_balance: float = 0.0,
    smoothing: float = 0.0,
    agreement_power: float = 0.0,
    name_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted cross-entropy over voxels; target (B, X, Y, Z) ids in 0..K (K = free), 255 ignored;
    weight (B, X, Y, Z) (mask_camera for labels, confidence for pseudo-labels).

    name_weight (X, Y, Z) or (B, X, Y, Z), where given, scales an occupied voxel's name term
    (-log softmax_c) and leaves its occupancy term (-log o) whole: where labels are placed better than
    they are named (far from the ego, fusion's names come from distant views only).

    smoothing e > 0 softens an occupied voxel's class, not its occupancy: the target puts 1 - e on the
    named class and e spread evenly over the K classes, so -log P(occupied) stays whole and only the name
    is hedged. Labels made without annotation are named less reliably than they are placed (the fused
    labels' geometry matches the 3D-supervised network's, their names do not).

    agreement_power q > 0 weighs an occupied voxel's name term (-log softmax_c; its occupancy term
    -log o stays whole) by p_c ** q, p_c the network's own probability (detached) of the named class given
    occupancy, rescaled within each class so that the class keeps its total weight. Labels misnamed
    consistently by every view (a far patch of other flat called driveable surface) cannot be told by
    their confidence; a network that has learnt the class from the rest of the pool disagrees with them,
    and they then pull less (the small-loss idea of learning from noisy labels: GCE, co-teaching).

    class_balance a > 0 multiplies an occupied voxel's weight by (share of its class among the batch's
    weighted occupied voxels) ** -a, rescaled so the occupied voxels' total weight is unchanged; free
    voxels keep theirs. The ground fills most occupied voxels of an Occ3D grid, so unweighted a car's few
    hundred voxels barely move the loss; moving weight from free to occupied instead would buy rare
    classes with over-filled geometry (measured: geometric IoU 57 -> 42 on the development world). Per
    batch (no state): the same for ground truth and pseudo-labels, for every resume and rank layout."""
    logp = voxel_log_probs(density, logits, voxel_size)
    valid = (target != IGNORE) & (weight > 0)
    if not valid.any():
        return logp.sum() * 0
    tgt = target[valid].long()
    lp = logp[valid]
    nll = -lp.gather(1, tgt[:, None])[:, 0]
    if smoothing > 0:
        k = lp.shape[-1] - 1
        spread = -lp[:, :k].mean(1)  # -log o - mean_c log softmax_c: occupancy whole, names even
        nll = torch.where(tgt < k, (1 - smoothing) * nll + smoothing * spread, nll)
    w = weight[valid].float()
    if agreement_power > 0 or name_weight is not None:
        v = torch.ones_like(w) if name_weight is None else name_weight.expand_as(target)[valid].float()
        if agreement_power > 0:
            v = v * _agreement(lp, tgt, w, agreement_power)
        nll = _names_scaled(lp, tgt, nll, v)
    if class_balance > 0:
        mass = torch.bincount(tgt, weights=w, minlength=logp.shape[-1])
        mass[-1] = 0  # free keeps its weight
        if mass.sum() > 0:
            share = mass / mass.sum()
            cw = torch.where(mass > 0, share.clamp_min(1e-12) ** -class_balance, torch.zeros_like(share))
            cw = cw * mass.sum() / (cw * mass).sum()
            cw[-1] = 1.0
            w = w * cw[tgt]
    return (w * nll).sum() / w.sum()


def _agreement(lp: torch.Tensor, tgt: torch.Tensor, w: torch.Tensor, q: float) -> torch.Tensor:
    """voxel_ce's agreement weights (M,): an occupied voxel's p_c ** q / (the same, w-weighted mean over its class),
    1 for free voxels; lp (M, K+1) log-probabilities, tgt (M,), w (M,)."""
    k = lp.shape[-1] - 1
    a = torch.ones_like(w)
    occ = tgt < k
    if not occ.any():
        return a
    lo, c = lp[occ], tgt[occ]
    p_name = (lo.gather(1, c[:, None])[:, 0] - torch.logsumexp(lo[:, :k], 1)).exp().detach()
    ao = p_name.clamp_min(1e-12) ** q
    wo = w[occ]
    mass = torch.bincount(c, weights=wo, minlength=k)
    agreed = torch.bincount(c, weights=wo * ao, minlength=k)
    a[occ] = ao * (mass / agreed.clamp_min(1e-30))[c]
    return a


def _names_scaled(lp: torch.Tensor, tgt: torch.Tensor, nll: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """nll (M,) with each occupied voxel's name part (nll + log o) scaled by v (M,); lp (M, K+1)."""
    k = lp.shape[-1] - 1
    occ = tgt < k
    log_o = torch.logsumexp(lp[occ][:, :k], 1)
    out = nll.clone()
    out[occ] = -log_o + v[occ] * (nll[occ] + log_o)
    return out


def depth_distribution_ce(
    depth_prob: torch.Tensor, prior: torch.Tensor, depth_min: float, depth_step: float
) -> torch.Tensor:
    """Cross-entropy of the view transform's depth distribution (B, N, D, h, w) against the bin of the
    nearest LiDAR depth per feature cell (B, N, h, w; 0 = none), for depths inside the bin range."""
    d = depth_prob.shape[2]
    k = torch.round((prior - depth_min) / depth_step).long()
    valid = (prior > 0) & (k >= 0) & (k < d)
    if not valid.any():
        return depth_prob.sum() * 0
    p = depth_prob.permute(0, 1, 3, 4, 2)[valid]  # (M, D)
    return -torch.log(p.gather(1, k[valid][:, None])[:, 0].clamp_min(EPS)).mean()


def line_of_sight(density: torch.Tensor, rays, grid, cfg, margin: float, eps: float = 1e-4) -> torch.Tensor:
    """LiDAR line of sight through the renderer, over rays with a target depth d (the LiDAR return, or the
    top of the ground layer: occnet.surfaces): the ray must stay free until `margin` metres before d,
    -log T(d - margin), and must have stopped `margin` after it, -log(1 - T(d + margin)). Depth and semantic
    losses only ask the *expected* depth to match, which a thin fog spread over many voxels satisfies; this
    asks the light to stop at the surface."""
    m = rays.depth > 0
    if not m.any():
        return density.sum() * 0
    sub = RayBatch(*(getattr(rays, f)[m] for f in RayBatch.__dataclass_fields__))
    dist = sub.depth / sub.z_per_metre  # z-depth -> metres along the ray
    before = transmittance_to(density, sub, (dist - margin).clamp_min(0), grid, cfg)
    after = transmittance_to(density, sub, dist + margin, grid, cfg)
    w = sub.weight / sub.weight.sum()
    return -(w * (torch.log(before + eps) + torch.log1p(-after + eps))).sum()
