"""The render op in plain PyTorch: the definition every backend is tested against.

Every ray is cut into segments [t0, t0 + delta) along its direction, inside both [near, far] and the
grid's box. Each segment carries one density sigma and one feature vector f:

* ``"voxel"``: one segment per voxel crossed (the boundaries are the ray's crossings of the grid planes),
  values of that voxel;
* ``"trilinear"``: segments of length ``step_size`` from the entry point (the last one cut at the exit),
  values trilinearly interpolated at the segment's midpoint between voxel centres (clamped at the border).

With s_i = sigma_i * delta_i, T_i = exp(-sum_{j<i} s_j), alpha_i = 1 - exp(-s_i), w_i = T_i * alpha_i:

    opacity  = sum_i w_i
    features = sum_i w_i f_i
    depth    = sum_i T_i * (alpha_i * t0_i + delta_i * g(s_i)),    g(x) = (1 - e^-x (1 + x)) / x

The depth term is the exact expected distance of the first hit within a segment of constant density
(so an opaque voxel gives the distance to its face, a thin one its midpoint). A segment is used only
while T_i >= t_threshold (early ray termination); ``transmittance`` is exp(-sum of the used s_i).
The reference builds padded (n_rays, n_segments) tensors and lets autograd differentiate them.
"""

from __future__ import annotations

import torch

from .grid import GridSpec

SERIES_CUTOFF = 0.1  # below it g(x) uses its Taylor series: the closed form cancels catastrophically


def depth_moment(x: torch.Tensor) -> torch.Tensor:
    """g(x) = (1 - exp(-x) (1 + x)) / x, g(0) = 0: a segment's depth moment over its length."""
    small = x < SERIES_CUTOFF
    xs = torch.where(small, torch.ones_like(x), x)  # keeps the unused branch finite for autograd
    closed = (-torch.expm1(-xs) - xs * torch.exp(-xs)) / xs
    # 1 - e^-x (1 + x) = sum_{n>=2} (-1)^n (n - 1) / n! x^n
    series = x * (1 / 2 - x * (1 / 3 - x * (1 / 8 - x * (1 / 30 - x * (1 / 144 - x * (1 / 840 - x / 5760))))))
    return torch.where(small, series, closed)


def ray_box_interval(
    origins: torch.Tensor, directions: torch.Tensor, grid: GridSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances (n_rays,) of rays against the grid box (exit < entry: miss)."""
    lo = torch.tensor(grid.range_min, dtype=origins.dtype, device=origins.device)
    hi = torch.tensor(grid.range_max, dtype=origins.dtype, device=origins.device)
    parallel = directions == 0
    inv = 1.0 / torch.where(parallel, torch.ones_like(directions), directions)
    t_lo, t_hi = (lo - origins) * inv, (hi - origins) * inv
    t_min, t_max = torch.minimum(t_lo, t_hi), torch.maximum(t_lo, t_hi)
    inside = (origins >= lo) & (origins <= hi)
    inf = torch.full_like(t_min, float("inf"))
    # an axis the ray runs parallel to either never lets it in or never stops it
    t_min = torch.where(parallel, torch.where(inside, -inf, inf), t_min)
    t_max = torch.where(parallel, torch.where(inside, inf, -inf), t_max)
    return t_min.amax(-1), t_max.amin(-1)


def _voxel_segments(origins, directions, t_start, t_end, grid):
    """Segment starts and lengths (n_rays, S) between consecutive grid-plane crossings."""
    dtype, device = origins.dtype, origins.device
    crossings = [t_start[:, None], t_end[:, None]]
    for axis, (lo, n, v) in enumerate(zip(grid.range_min, grid.shape, grid.voxel_size)):
        planes = lo + v * torch.arange(n + 1, dtype=dtype, device=device)
        d = directions[:, axis : axis + 1]
        t = (planes[None] - origins[:, axis : axis + 1]) / torch.where(d == 0, torch.ones_like(d), d)
        crossings.append(torch.where(d == 0, t_start[:, None].expand_as(t), t))
    ts = torch.cat(crossings, 1)
    ts = torch.minimum(torch.maximum(ts, t_start[:, None]), t_end[:, None]).sort(1).values
    return ts[:, :-1], ts[:, 1:] - ts[:, :-1]


def _trilinear_segments(t_start, t_end, step_size):
    length = (t_end - t_start).clamp_min(0)
    n_max = int(torch.ceil(length / step_size).max().item()) if length.numel() else 0
    k = torch.arange(n_max, dtype=t_start.dtype, device=t_start.device)
    t0 = t_start[:, None] + k[None] * step_size
    delta = (t_end[:, None] - t0).clamp(0, step_size)
    return t0, delta


def _gather_voxel(density, features, batch_index, pos, grid):
    """Nearest-voxel values at (n_rays, S, 3) metric points: (n_rays, S), (n_rays, S, C)."""
    idx = grid.world_to_index(pos)
    for axis, n in enumerate(grid.shape):
        idx[..., axis].clamp_(0, n - 1)  # a midpoint may round onto the far face
    b = batch_index[:, None].expand(idx.shape[:2])
    return density[b, idx[..., 0], idx[..., 1], idx[..., 2]], features[b, idx[..., 0], idx[..., 1], idx[..., 2]]


def _gather_trilinear(density, features, batch_index, pos, grid):
    """Trilinear values between voxel centres, clamped at the border: (n_rays, S), (n_rays, S, C)."""
    g = grid.world_to_grid(pos) - 0.5  # voxel centres at integers
    b = batch_index[:, None].expand(g.shape[:2])
    lo, frac = [], []
    for axis, n in enumerate(grid.shape):
        c = g[..., axis].clamp(0, n - 1)
        i0 = torch.floor(c).clamp(max=max(n - 2, 0))
        lo.append(i0.long())
        frac.append(c - i0)
    sigma = torch.zeros_like(g[..., 0])
    feats = torch.zeros(g.shape[:2] + features.shape[-1:], dtype=features.dtype, device=features.device)
    for corner in range(8):
        w = torch.ones_like(sigma)
        ids = []
        for axis, n in enumerate(grid.shape):
            up = (corner >> axis) & 1
            w = w * (frac[axis] if up else 1 - frac[axis])
            ids.append((lo[axis] + up).clamp(max=n - 1))
        sigma = sigma + w * density[b, ids[0], ids[1], ids[2]]
        feats = feats + w[..., None].to(features.dtype) * features[b, ids[0], ids[1], ids[2]]
    return sigma, feats


def _composite_terms(
    density, features, origins, directions, batch_index, near, far, grid, mode, step_size, t_threshold
):
    """Padded per-segment terms: t0, delta, sigma, f, T (before), alpha, active (all (n_rays, S) but f)."""
    t_in, t_out = ray_box_interval(origins, directions, grid)
    hit = t_in <= t_out
    t_start = torch.where(hit, torch.maximum(near, t_in), near)  # a miss: an empty interval at near
    t_end = torch.where(hit, torch.maximum(torch.minimum(far, t_out), t_start), t_start)
    if mode == "voxel":
        t0, delta = _voxel_segments(origins, directions, t_start, t_end, grid)
        gather = _gather_voxel
    else:
        t0, delta = _trilinear_segments(t_start, t_end, step_size)
        gather = _gather_trilinear
    pos = origins[:, None] + (t0 + 0.5 * delta)[..., None] * directions[:, None]
    sigma, f = gather(density, features, batch_index, pos, grid)
    s = sigma * delta
    tau = torch.cumsum(s, 1)
    T = torch.exp(-torch.cat([torch.zeros_like(tau[:, :1]), tau[:, :-1]], 1))
    active = (T >= t_threshold).to(s.dtype)
    alpha = -torch.expm1(-s)
    return t0, delta, s, f, T, alpha, active


def render_rays_reference(
    density: torch.Tensor,
    features: torch.Tensor,
    origins: torch.Tensor,
    directions: torch.Tensor,
    batch_index: torch.Tensor,
    near: torch.Tensor,
    far: torch.Tensor,
    grid: GridSpec,
    mode: str = "voxel",
    step_size: float = 0.2,
    t_threshold: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference render op; arguments as `kernels.render_rays`.

    Returns depth (n_rays,), opacity (n_rays,), features (n_rays, C), transmittance (n_rays,).
    """
    t0, delta, s, f, T, alpha, active = _composite_terms(
        density, features, origins, directions, batch_index, near, far, grid, mode, step_size, t_threshold
    )
    w = active * T * alpha
    depth = (active * T * (alpha * t0 + delta * depth_moment(s))).sum(1)
    opacity = w.sum(1)
    feats = (w[..., None].to(f.dtype) * f).sum(1)
    transmittance = torch.exp(-(active * s).sum(1))
    return depth, opacity, feats, transmittance


@torch.no_grad()
def count_samples(
    density, origins, directions, batch_index, near, far, grid, mode="voxel", step_size=0.2, t_threshold=1e-4
) -> tuple[int, int]:
    """(segments used, segments with non-zero weight) over all rays: the work a backend does."""
    no_features = density.new_zeros(density.shape + (1,))
    _, delta, _, _, _, alpha, active = _composite_terms(
        density, no_features, origins, directions, batch_index, near, far, grid, mode, step_size, t_threshold
    )
    used = (active > 0) & (delta > 0)
    return int(used.sum()), int((used & (alpha > 0)).sum())
