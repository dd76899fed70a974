"""Random scenes and rays for the render-op tests (fresh inputs every call)."""

from __future__ import annotations

import torch

from kernels import GridSpec

SMALL_GRID = GridSpec(range_min=(-4.0, -4.0, -1.2), range_max=(4.0, 4.0, 2.0), voxel_size=0.4)


def random_scene(grid: GridSpec, batch: int, channels: int, dtype, device, seed: int, occupancy: float = 0.15):
    """Sparse non-negative density (B, X, Y, Z) and features (B, X, Y, Z, C), leaf tensors with grad."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, *grid.shape)
    density = torch.rand(shape, generator=gen) * 4.0 * (torch.rand(shape, generator=gen) < occupancy)
    features = torch.randn(shape + (channels,), generator=gen)
    return (
        density.to(device=device, dtype=dtype).requires_grad_(),
        features.to(device=device, dtype=dtype).requires_grad_(),
    )


def random_rays(grid: GridSpec, n: int, batch: int, dtype, device, seed: int):
    """Rays from inside and around the grid, random unit directions, random [near, far]."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor(grid.range_min), torch.tensor(grid.range_max)
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    origins = centre + (torch.rand(n, 3, generator=gen) * 2 - 1) * half * 1.3
    directions = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen, dtype=torch.float64), dim=1)
    near = torch.rand(n, generator=gen) * 0.5
    far = near + torch.rand(n, generator=gen) * 12.0
    batch_index = torch.randint(0, batch, (n,), generator=gen)
    cast = dict(device=device, dtype=dtype)
    return (origins.to(**cast), directions.to(**cast), batch_index.to(device), near.to(**cast), far.to(**cast))


def weighted_loss(out, seed: int):
    """A scalar with random upstream gradients on every output."""
    gen = torch.Generator().manual_seed(seed)
    dev, dt = out.depth.device, out.depth.dtype
    parts = [
        (out.depth * torch.randn(out.depth.shape, generator=gen).to(dev, dt)).sum(),
        (out.opacity * torch.randn(out.opacity.shape, generator=gen).to(dev, dt)).sum(),
        (out.features.to(dt) * torch.randn(out.features.shape, generator=gen).to(dev, dt)).sum(),
        (out.transmittance * torch.randn(out.transmittance.shape, generator=gen).to(dev, dt)).sum(),
    ]
    return sum(parts)
