"""The voxel walk's compiled backends mark exactly the voxels of the PyTorch reference."""

from __future__ import annotations

import pytest
import torch

from kernels._build import BackendUnavailable, load_backend
from kernels.grid import GridSpec
from kernels.walk import ray_voxels, ray_voxels_op, ray_voxels_reference

GRID = GridSpec(range_min=(-6.4, -6.4, -1.0), range_max=(6.4, 6.4, 2.2), voxel_size=(0.4, 0.4, 0.4))
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _rays(n: int, seed: int, device="cpu"):
    """Rays from inside and outside the grid, with axis-aligned directions, rays along voxel planes and
    origins on the boundary among them (where a different rounding would pick another voxel)."""
    g = torch.Generator().manual_seed(seed)
    o = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([16.0, 16.0, 5.0])
    o[: n // 4] = torch.tensor([0.1, -0.3, 0.6], dtype=torch.float64)  # a sensor inside
    o[n // 4 : n // 4 + 8, 0] = 6.4  # on the boundary plane
    o[n // 4 + 8 : n // 4 + 16, 1] = 0.8  # on an inner voxel plane
    d = torch.randn(n, 3, generator=g, dtype=torch.float64)
    d[: n // 8, 2] = 0  # horizontal
    d[n // 8 : n // 8 + 16, :2] = 0  # vertical
    d[n // 4 + 8 : n // 4 + 16, 1] = 0  # along the inner plane
    d = d / d.norm(dim=1, keepdim=True)
    t = torch.rand(n, generator=g, dtype=torch.float64) * 12
    occ = torch.rand(GRID.shape, generator=g) < 0.03
    return o.to(device), d.to(device), t.to(device), occ.to(device)


@pytest.mark.parametrize("backend,device", [("cpu", "cpu"), pytest.param("cuda", "cuda", marks=CUDA)])
@pytest.mark.parametrize("case", ["free", "occupied", "t_max", "both"])
def test_compiled_walk_equals_the_reference(backend, device, case):
    try:
        load_backend(f"walk_{backend}")
    except BackendUnavailable as exc:
        pytest.fail(f"the {backend} walk backend does not build here: {exc}")
    o, d, t, occ = _rays(4000, seed=3, device=device)
    kw = {"occupied": occ if case in ("occupied", "both") else None, "t_max": t if case in ("t_max", "both") else None}
    want = ray_voxels_reference(o, d, GRID, **kw)
    got = ray_voxels(o, d, GRID, backend=backend, **kw)
    assert got.dtype == torch.bool and got.shape == GRID.shape
    assert want.sum() > 100
    assert torch.equal(got, want), f"{int((got != want).sum())} voxels differ"


@pytest.mark.parametrize(
    "backend,device", [("cpu", "cpu"), ("reference", "cpu"), pytest.param("cuda", "cuda", marks=CUDA)]
)
def test_several_frames_in_one_call_equal_one_call_per_frame(backend, device):
    rays = [_rays(500, seed=s, device=device) for s in (1, 2, 3)]
    o = torch.cat([r[0] for r in rays])
    d = torch.cat([r[1] for r in rays])
    t = torch.cat([r[2] for r in rays])
    occ = torch.stack([r[3] for r in rays])
    frame = torch.arange(3, device=device).repeat_interleave(500)
    got = ray_voxels(o, d, GRID, occupied=occ, t_max=t, frame=frame, frames=3, backend=backend)
    for b, (ob, db, tb, occb) in enumerate(rays):
        assert torch.equal(got[b], ray_voxels_reference(ob, db, GRID, occb, tb))


def test_bad_input_is_named():
    o, d, _, occ = _rays(10, seed=0)
    with pytest.raises(ValueError, match="dirs must be"):
        ray_voxels(o, d[:, :2], GRID)
    with pytest.raises(ValueError, match="occupied must be"):
        ray_voxels(o, d, GRID, occupied=occ[:-1])
    with pytest.raises(ValueError, match="frame indices"):
        ray_voxels(o, d, GRID, frame=torch.full((10,), 2), frames=2)
    with pytest.raises(ValueError, match="backend must be"):
        ray_voxels(o, d, GRID, backend="gpu")


@pytest.mark.parametrize(
    "backend,device", [("cpu", "cpu"), ("reference", "cpu"), pytest.param("cuda", "cuda", marks=CUDA)]
)
@pytest.mark.parametrize("batched", [False, True])
def test_opcheck_walk_op(backend, device, batched):
    """autolabel_kernels::ray_voxels: schema, fake function, AOT dispatch with dynamic shapes (no autograd)."""
    o, d, t, occ = _rays(40, seed=5, device=device)
    frame = torch.arange(40, device=device) % 2 if batched else None
    occupied = torch.stack([occ, ~occ]) if batched else occ[None]
    g = GRID
    torch.library.opcheck(
        ray_voxels_op, (o, d, occupied, t, frame, 2 if batched else 1, g.range_min, g.range_max, g.voxel_size, backend)
    )


@pytest.mark.parametrize(
    "backend,device", [("cpu", "cpu"), ("reference", "cpu"), pytest.param("cuda", "cuda", marks=CUDA)]
)
def test_torch_compile_of_the_walk_matches_eager(backend, device):
    """The walk compiles without a graph break (its value checks run inside the op) and marks the same voxels."""
    from torch._dynamo.testing import CompileCounterWithBackend

    def fn(o, d, t, occ, frame):
        both = ray_voxels(o, d, GRID, occupied=occ, t_max=t * 0.5, frame=frame, frames=2, backend=backend)
        one = ray_voxels(o[0], d, GRID, occupied=occ[0], backend=backend)
        return both.sum(0) + one

    torch.compiler.reset()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(fn, backend=counter, fullgraph=True)
    for n in (300, 410):
        o, d, t, occ = _rays(n, seed=n, device=device)
        args = (o, d, t, torch.stack([occ, occ.flip(0)]), torch.arange(n, device=device) % 2)
        want = fn(*args)
        assert torch.equal(compiled(*args), want) and want.sum() > 100
    assert counter.frame_count >= 1
    ops = [str(node.target) for g in counter.graphs for node in g.graph.nodes]
    assert "autolabel_kernels.ray_voxels.default" in ops
