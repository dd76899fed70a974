"""The render op: every backend against the PyTorch reference, analytic cases, edge cases, bad input."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from kernels import GridSpec, RenderOutput, render_rays, render_rays_reference
from kernels import render as render_module
from kernels._build import BackendUnavailable

from render_cases import SMALL_GRID, random_rays, random_scene, weighted_loss

CUDA = torch.cuda.is_available()
MODES = ("voxel", "trilinear")
# Named tolerances per dtype (backend vs reference). float32: the backends sum the same terms in the
# same order, but exp / expm1 differ by an ulp between libraries and the backward's suffix sum is a
# difference of running totals; measured worst case 1e-5 absolute on gradients of magnitude ~10.
TOL = {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=1e-4, atol=1e-4)}


def _run(backend, density, features, rays, mode, seed, **kw):
    out = render_rays(density, features, *rays, grid=kw.pop("grid", SMALL_GRID), mode=mode, backend=backend, **kw)
    grads = torch.autograd.grad(weighted_loss(out, seed), [density, features])
    return out, grads


def _compare(backend, device, dtype, mode, n_rays=400, channels=5, seed=0, tol=None, feat_dtype=None, **kw):
    density, features = random_scene(SMALL_GRID, 2, channels, dtype, device, seed)
    rays = random_rays(SMALL_GRID, n_rays, 2, dtype, device, seed + 1)
    ref_out, ref_grads = _run("reference", density, features, rays, mode, seed + 2, **kw)
    if feat_dtype is not None:
        features = features.detach().to(feat_dtype).requires_grad_()
    out, grads = _run(backend, density, features, rays, mode, seed + 2, **kw)
    tol = tol or TOL[dtype]
    for name in ("depth", "opacity", "transmittance"):
        torch.testing.assert_close(
            getattr(out, name), getattr(ref_out, name), **tol, msg=lambda m, name=name: f"{name}: {m}"
        )
    torch.testing.assert_close(out.features.to(dtype), ref_out.features, **tol)
    torch.testing.assert_close(grads[0], ref_grads[0], **tol, msg=lambda m: f"grad density: {m}")
    torch.testing.assert_close(grads[1].to(dtype), ref_grads[1], **tol, msg=lambda m: f"grad features: {m}")
    assert out.opacity.max() > 0.5 and ref_grads[0].abs().max() > 0  # the scene is not empty


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_matches_reference(mode, dtype):
    _compare("cpu", "cpu", dtype, mode)


@pytest.mark.parametrize("mode", MODES)
def test_cpu_matches_reference_with_early_termination(mode):
    _compare("cpu", "cpu", torch.float64, mode, t_threshold=0.3, seed=5)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [1, 5, 17, 40, 70])
def test_cuda_matches_reference(mode, dtype, channels):
    _compare("cuda", "cuda", dtype, mode, channels=channels, seed=channels)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("feat_dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_features_accumulate_in_float32(mode, feat_dtype):
    # Only the features' storage is rounded (bf16: 8 mantissa bits, relative 4e-3); sums are float32.
    _compare("cuda", "cuda", torch.float32, mode, channels=17, feat_dtype=feat_dtype, tol=dict(rtol=2e-2, atol=2e-2))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_float64(backend, mode):
    grid = GridSpec(range_min=(0, 0, 0), range_max=(1.2, 0.8, 0.8), voxel_size=0.4)
    density, features = random_scene(grid, 1, 2, torch.float64, "cpu", seed=3, occupancy=0.7)
    density = (density.detach() + 0.05).requires_grad_()  # finite differences must not step below 0
    rays = random_rays(grid, 6, 1, torch.float64, "cpu", seed=4)

    def fn(d, f):
        out = render_rays(d, f, *rays, grid=grid, mode=mode, backend=backend, step_size=0.15, t_threshold=0.0)
        return out.depth, out.opacity, out.features, out.transmittance

    assert torch.autograd.gradcheck(fn, (density, features), eps=1e-6, atol=1e-6)


# ---- analytic cases -------------------------------------------------------------------------
def _rays(origins, directions, near=0.0, far=100.0, dtype=torch.float64):
    o = torch.tensor(origins, dtype=dtype).reshape(-1, 3)
    d = torch.nn.functional.normalize(torch.tensor(directions, dtype=dtype).reshape(-1, 3), dim=1)
    n = len(o)
    return (
        o,
        d,
        torch.zeros(n, dtype=torch.long),
        torch.full((n,), near, dtype=dtype),
        torch.full((n,), far, dtype=dtype),
    )


BACKENDS_HERE = ["reference", "cpu"] + (["cuda"] if CUDA else [])


def _to(device, *tensors):
    return [t.to(device) for t in tensors]


@pytest.mark.parametrize("backend", BACKENDS_HERE)
@pytest.mark.parametrize("mode", MODES)
def test_constant_density_slab(backend, mode):
    """Uniform sigma everywhere: opacity = 1 - exp(-sigma L), depth = (1 - e^-x (1 + x)) / sigma."""
    device = "cuda" if backend == "cuda" else "cpu"
    grid = GridSpec(range_min=(0, 0, 0), range_max=(4, 2, 2), voxel_size=0.4)
    sigma = 0.7
    density = torch.full((1, *grid.shape), sigma, dtype=torch.float64)
    features = torch.ones((1, *grid.shape, 3), dtype=torch.float64)
    # along x through the middle; and diagonally in x-y; both start outside the grid
    rays = _rays([[-1.0, 1.0, 1.0], [-1.0, 0.1, 1.0]], [[1, 0, 0], [1, 0.3, 0]], near=0.0)
    out = render_rays(*_to(device, density, features, *rays), grid=grid, mode=mode, backend=backend, t_threshold=0.0)
    L = torch.tensor([4.0, math.hypot(4.0, 1.2)], dtype=torch.float64)
    entry = torch.tensor([1.0, math.hypot(1.0, 0.3)], dtype=torch.float64)
    x = sigma * L
    torch.testing.assert_close(out.opacity.cpu(), 1 - torch.exp(-x))
    torch.testing.assert_close(out.transmittance.cpu(), torch.exp(-x))
    expected_depth = entry * (1 - torch.exp(-x)) + (1 - torch.exp(-x) * (1 + x)) / sigma
    torch.testing.assert_close(out.depth.cpu(), expected_depth)
    torch.testing.assert_close(out.features.cpu(), (1 - torch.exp(-x))[:, None].expand(-1, 3))


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_single_opaque_voxel_depth_is_distance_to_its_face(backend):
    device = "cuda" if backend == "cuda" else "cpu"
    grid = GridSpec(range_min=(0, 0, 0), range_max=(4, 4, 4), voxel_size=0.4)
    density = torch.zeros((1, *grid.shape), dtype=torch.float64)
    features = torch.zeros((1, *grid.shape, 2), dtype=torch.float64)
    i, j, k = 6, 4, 5  # voxel spans x [2.4, 2.8), y [1.6, 2.0), z [2.0, 2.4)
    density[0, i, j, k] = 1e6
    features[0, i, j, k] = torch.tensor([3.0, -1.0], dtype=torch.float64)
    origin = torch.tensor([0.5, 0.9, 1.5], dtype=torch.float64)
    target = torch.tensor([2.6, 1.8, 2.2], dtype=torch.float64)  # the voxel's centre
    direction = target - origin
    rays = _rays(origin.tolist(), direction.tolist())
    d = rays[1][0]
    t_face = max(((torch.tensor([2.4, 1.6, 2.0], dtype=torch.float64) - origin) / d).tolist())
    out = render_rays(*_to(device, density, features, *rays), grid=grid, mode="voxel", backend=backend)
    # the face, plus the mean free path 1 / sigma inside the voxel
    assert out.depth.item() == pytest.approx(t_face + 1e-6, abs=1e-9)
    assert out.opacity.item() == pytest.approx(1.0, abs=1e-9)
    torch.testing.assert_close(out.features.cpu()[0], torch.tensor([3.0, -1.0], dtype=torch.float64))


# ---- edge cases -------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS_HERE)
@pytest.mark.parametrize("mode", MODES)
def test_edge_case_rays(backend, mode):
    device = "cuda" if backend == "cuda" else "cpu"
    density, features = random_scene(SMALL_GRID, 1, 3, torch.float64, device, seed=11, occupancy=0.5)
    rays = _rays(
        [[-10, 0, 0], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [0.05, 0.05, -1.0], [1.0, 1.0, 0.5], [9, 9, 9]],
        [[0, 1, 0], [1, 2, 3], [0, 0, 1], [0, 0, 1], [-1, 0, 0], [-1, -1, -1]],
    )
    o, d, b, near, far = rays
    far[2] = near[2]  # zero-length range
    out = render_rays(*_to(device, density, features, o, d, b, near, far), grid=SMALL_GRID, mode=mode, backend=backend)
    ref = render_rays(
        density, features, *_to(device, o, d, b, near, far), grid=SMALL_GRID, mode=mode, backend="reference"
    )
    # ray 0 misses (passes beside the grid), ray 2 has an empty range: nothing rendered
    for r in (0, 2):
        assert out.opacity[r].item() == 0 and out.depth[r].item() == 0 and out.transmittance[r].item() == 1
        assert torch.all(out.features[r] == 0)
    assert out.opacity[1] > 0 and out.opacity[3] > 0 and out.opacity[4] > 0  # inside starts, along axes
    assert out.opacity[5] > 0  # from outside, diagonally through a corner region
    for name in ("depth", "opacity", "features", "transmittance"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), **TOL[torch.float64])


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_zero_rays(backend):
    device = "cuda" if backend == "cuda" else "cpu"
    density, features = random_scene(SMALL_GRID, 1, 4, torch.float32, device, seed=1)
    empty = (torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0))
    out = render_rays(density, features, *_to(device, *empty), grid=SMALL_GRID, backend=backend)
    assert out.depth.shape == (0,) and out.features.shape == (0, 4)
    gd, gf = torch.autograd.grad(out.depth.sum() + out.features.sum(), [density, features], allow_unused=True)
    assert gd is None or torch.all(gd == 0)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_non_contiguous_inputs(backend):
    device = "cuda" if backend == "cuda" else "cpu"
    density, features = random_scene(SMALL_GRID, 2, 6, torch.float64, device, seed=2)
    o, d, b, near, far = random_rays(SMALL_GRID, 50, 2, torch.float64, device, seed=3)
    feats_nc = features.detach().permute(4, 0, 1, 2, 3).contiguous().permute(1, 2, 3, 4, 0)  # same values, strided
    o_nc = o.t().contiguous().t()
    assert not feats_nc.is_contiguous() and not o_nc.is_contiguous()
    a = render_rays(density, feats_nc, o_nc, d, b, near, far, grid=SMALL_GRID, backend=backend)
    c = render_rays(density, features, o, d, b, near, far, grid=SMALL_GRID, backend=backend)
    torch.testing.assert_close(a.features, c.features)
    torch.testing.assert_close(a.depth, c.depth)


# ---- bad input --------------------------------------------------------------------------------
def _good():
    density, features = random_scene(SMALL_GRID, 1, 2, torch.float32, "cpu", seed=0)
    return dict(
        density=density.detach(),
        features=features.detach(),
        **dict(
            zip(
                ("origins", "directions", "batch_index", "near", "far"),
                random_rays(SMALL_GRID, 8, 1, torch.float32, "cpu", 1),
            )
        ),
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.update(density=a["density"].long()), "density must be float32 or float64"),
        (lambda a: a.update(density=a["density"][:, :-1]), "density must be \\(B, X, Y, Z\\)"),
        (lambda a: a.update(features=a["features"][..., 0]), "features must be \\(B, X, Y, Z, C\\)"),
        (lambda a: a.update(features=a["features"].double()), "must share a dtype"),
        (lambda a: a.update(origins=a["origins"][:, :2]), "origins and directions must both be \\(n_rays, 3\\)"),
        (lambda a: a.update(near=a["near"][:3]), "near must be \\(n_rays,\\)"),
        (lambda a: a.update(batch_index=a["batch_index"].int()), "batch_index must be int64"),
        (lambda a: a.update(origins=a["origins"].double()), "origins must have the density's dtype"),
    ],
)
def test_bad_structure_is_a_clear_error(change, message):
    args = _good()
    change(args)
    with pytest.raises(ValueError, match=message):
        render_rays(**args, grid=SMALL_GRID)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a["batch_index"].__setitem__(3, 5), "batch_index must lie in"),
        (lambda a: a["batch_index"].__setitem__(2, -1), "batch_index must lie in"),
        (lambda a: a["origins"].__setitem__((0, 0), float("nan")), "origins hold non-finite"),
        (lambda a: a["directions"].__setitem__((1, 2), float("inf")), "directions hold non-finite"),
        (lambda a: a["directions"].mul_(2), "unit vectors"),
        (lambda a: a["near"].__setitem__(4, float("inf")), "near must be finite"),
        (lambda a: a["far"].__setitem__(4, float("nan")), "far not NaN"),
        (lambda a: a["far"].__setitem__(0, -1.0), "far < near"),
        (lambda a: a["density"].sub_(10.0), "density must be >= 0"),
        (lambda a: a["density"].fill_(float("nan")), "density must be >= 0 \\(and not NaN\\)"),
    ],
)
def test_bad_values_are_a_clear_error(backend, change, message):
    device = "cuda" if backend == "cuda" else "cpu"
    args = _good()
    change(args)
    args = {k: v.to(device) for k, v in args.items()}
    with pytest.raises(ValueError, match=message):
        render_rays(**args, grid=SMALL_GRID, backend=backend)


def test_bad_mode_and_backend_names(monkeypatch):
    args = _good()
    with pytest.raises(ValueError, match="mode must be one of"):
        render_rays(**args, grid=SMALL_GRID, mode="cubic")
    monkeypatch.setenv("AUTOLABEL_KERNELS", "metal")
    with pytest.raises(ValueError, match="backend must be one of"):
        render_rays(**args, grid=SMALL_GRID)


def test_forcing_an_unavailable_backend_fails_clearly(monkeypatch):
    monkeypatch.setenv("AUTOLABEL_KERNELS", "cuda")
    with pytest.raises(BackendUnavailable, match="forced but the inputs are on cpu"):
        render_rays(**_good(), grid=SMALL_GRID)


def test_env_forces_reference(monkeypatch):
    def no_build(name):
        raise AssertionError("no backend may be built when the reference is forced")

    monkeypatch.setattr(render_module, "load_backend", no_build)
    monkeypatch.setenv("AUTOLABEL_KERNELS", "reference")
    out = render_rays(**_good(), grid=SMALL_GRID)
    assert out.depth.shape == (8,)


def test_each_checkout_keeps_a_build_of_its_own(tmp_path):
    """Two checkouts sharing one extension cache used to rebuild each other's build (the include path, one of
    torch's build arguments, names the checkout): the build's name now holds the checkout's source folder."""
    from kernels._build import CSRC, extension_name

    other = tmp_path / "kernels" / "csrc"
    other.mkdir(parents=True)
    assert extension_name("autolabel_render_cpu") == extension_name("autolabel_render_cpu", CSRC)
    assert extension_name("autolabel_render_cpu", other) != extension_name("autolabel_render_cpu")
    assert extension_name("autolabel_render_cpu").startswith("autolabel_render_cpu_")


def test_failed_build_falls_back_with_one_warning(monkeypatch):
    def broken(name):
        raise BackendUnavailable(f"the {name} render backend is unavailable: no compiler")

    monkeypatch.setattr(render_module, "load_backend", broken)
    monkeypatch.setattr(render_module, "_warned", set())
    monkeypatch.delenv("AUTOLABEL_KERNELS", raising=False)
    with pytest.warns(RuntimeWarning, match="no compiler; using the PyTorch reference"):
        a = render_rays(**_good(), grid=SMALL_GRID)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = render_rays(**_good(), grid=SMALL_GRID)  # no second warning
    torch.testing.assert_close(a.depth, b.depth)


@pytest.mark.parametrize("backend", [b for b in BACKENDS_HERE if b != "reference"])
def test_unchecked_bad_rays_render_nothing_and_do_not_fail(backend):
    """check_values=False skips the host sync; a bad ray is still never walked (no stray reads)."""
    device = "cuda" if backend == "cuda" else "cpu"
    args = _good()
    args["batch_index"][3] = 7  # out of range: would read outside the density if walked
    args["origins"][5, 0] = float("nan")
    args = {k: v.to(device) for k, v in args.items()}
    out = render_rays(**args, grid=SMALL_GRID, backend=backend, check_values=False)
    for r in (3, 5):
        assert out.opacity[r].item() == 0 and out.transmittance[r].item() == 1 and torch.all(out.features[r] == 0)
    good = render_rays(
        **{k: v[torch.tensor([0, 1, 2, 4, 6, 7])] if k not in ("density", "features") else v for k, v in args.items()},
        grid=SMALL_GRID,
        backend=backend,
    )
    torch.testing.assert_close(out.depth[torch.tensor([0, 1, 2, 4, 6, 7])], good.depth)


@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_backward_with_shared_gradient_buffers(threads):
    """Grids too large for per-thread gradient copies take the atomic path (and 1 thread never copies)."""
    grid = GridSpec(range_min=(-4, -4, -1.2), range_max=(4, 4, 2.0), voxel_size=0.4)  # 20 x 20 x 8
    channels = 2200  # float64: 2 threads x 3,200 voxels x 2,200 x 8 B = 113 MB > the 64 MB budget for copies
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        density, features = random_scene(grid, 1, channels, torch.float64, "cpu", seed=9)
        rays = random_rays(grid, 64, 1, torch.float64, "cpu", seed=10)
        ref = torch.autograd.grad(
            weighted_loss(render_rays(density, features, *rays, grid=grid, backend="reference"), 1), [density, features]
        )
        got = torch.autograd.grad(
            weighted_loss(render_rays(density, features, *rays, grid=grid, backend="cpu"), 1), [density, features]
        )
    finally:
        torch.set_num_threads(previous)
    torch.testing.assert_close(got[0], ref[0], **TOL[torch.float64])
    torch.testing.assert_close(got[1], ref[1], **TOL[torch.float64])


# ---- the registered ops (autolabel_kernels::render_rays_fwd / _bwd): opcheck, torch.compile ----------------
TINY_GRID = GridSpec(range_min=(0, 0, 0), range_max=(1.6, 1.2, 0.8), voxel_size=0.4)  # 4 x 3 x 2


def _tiny(backend, mode, n_rays=16, seed=0, dtype=torch.float64, feat_dtype=None, device=None):
    device = device or ("cuda" if backend == "cuda" else "cpu")
    density, features = random_scene(TINY_GRID, 2, 3, dtype, device, seed, occupancy=0.6)
    if feat_dtype is not None:
        features = features.detach().to(feat_dtype).requires_grad_()
    return density, features, random_rays(TINY_GRID, n_rays, 2, dtype, device, seed + 1)


def _fwd_args(density, features, rays, mode, backend):
    g = TINY_GRID
    return (density, features, *rays, g.range_min, g.range_max, g.voxel_size, mode, 0.15, 1e-4, backend, True)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
@pytest.mark.parametrize("mode", MODES)
def test_opcheck_render_ops(backend, mode):
    """Schema, fake (shape) functions, autograd registration and AOT dispatch with dynamic shapes."""
    density, features, rays = _tiny(backend, mode)
    args = _fwd_args(density, features, rays, mode, backend)
    torch.library.opcheck(render_module.render_rays_fwd, args)
    outs = render_module.render_rays_fwd(density.detach(), features.detach(), *args[2:])
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(o.shape, generator=gen, dtype=o.dtype).to(o.device) for o in outs]
    bwd_args = (density.detach(), features.detach(), *args[2:-1], *outs, *grads)
    torch.library.opcheck(render_module.render_rays_bwd, bwd_args)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("feat_dtype", [torch.float16, torch.bfloat16])
def test_opcheck_render_ops_cuda_half_features(feat_dtype):
    """Half features: the forward's features come out in float32, their gradient in the features' dtype."""
    density, features, rays = _tiny("cuda", "trilinear", dtype=torch.float32, feat_dtype=feat_dtype)
    torch.library.opcheck(render_module.render_rays_fwd, _fwd_args(density, features, rays, "trilinear", "cuda"))


@pytest.mark.parametrize(
    "backend,device",
    [(b, "cuda" if b == "cuda" else "cpu") for b in BACKENDS_HERE] + ([("reference", "cuda")] if CUDA else []),
)
@pytest.mark.parametrize("mode", MODES)
def test_op_gradients_equal_plain_autograd_of_the_reference(backend, device, mode):
    """The op's autograd wiring (setup_context, backward, the backward op), called directly (eager render_rays
    skips it for the reference), against autograd run directly on render_rays_reference: a mix-up shared by
    every backend shows here (and the reference's backward inside the op, which needs autograd back on)."""
    density, features, rays = _tiny(backend, mode, n_rays=40, seed=7, device=device)
    out = RenderOutput(*render_module.render_rays_fwd(*_fwd_args(density, features, rays, mode, backend)))
    ref = render_rays_reference(density, features, *rays, grid=TINY_GRID, mode=mode, step_size=0.15)
    got = torch.autograd.grad(weighted_loss(out, 3), [density, features])
    want = torch.autograd.grad(weighted_loss(RenderOutput(*ref), 3), [density, features])
    for name, a, b in zip(
        ("depth", "opacity", "features", "transmittance"),
        (out.depth, out.opacity, out.features, out.transmittance),
        ref,
    ):
        torch.testing.assert_close(a, b, **TOL[torch.float64], msg=lambda m, name=name: f"{name}: {m}")
    torch.testing.assert_close(got[0], want[0], **TOL[torch.float64], msg=lambda m: f"grad density: {m}")
    torch.testing.assert_close(got[1], want[1], **TOL[torch.float64], msg=lambda m: f"grad features: {m}")
    assert want[0].abs().max() > 0 and want[1].abs().max() > 0


def _small_loss_fn(mode, backend):
    """A small function around render_rays (ops before and after it), returning the tensors to compare."""

    def fn(log_density, features, origins, directions, batch_index, near, far):
        out = render_rays(
            log_density.exp() - 1,
            features * 2,
            origins,
            directions,
            batch_index,
            near,
            far,
            grid=TINY_GRID,
            mode=mode,
            step_size=0.15,
            backend=backend,
        )
        return out.depth * 2 + out.opacity, out.features.square(), out.transmittance

    return fn


def _compile_matches_eager(compiler, backend, mode, ray_counts=(16, 23)):
    """torch.compile(fullgraph=True: no graph break) against eager, forward values and gradients, for each
    ray count (the second one recompiles with a symbolic ray count, through the fake functions)."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch.compiler.reset()
    fn = _small_loss_fn(mode, backend)
    counter = CompileCounterWithBackend(compiler)
    compiled = torch.compile(fn, backend=counter, fullgraph=True)
    for n in ray_counts:
        density, features, rays = _tiny(backend, mode, n_rays=n, seed=n)
        log_density = torch.log1p(density.detach()).requires_grad_()
        results = []
        for f in (fn, compiled):
            outs = f(log_density, features, *rays)
            gen = torch.Generator().manual_seed(n)
            loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype).to(o.device)).sum() for o in outs)
            results.append((outs, torch.autograd.grad(loss, [log_density, features])))
        (want, want_grads), (got, got_grads) = results
        for i, (a, b) in enumerate(zip(got, want)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m, i=i: f"output {i}, {n} rays: {m}")
        for name, a, b in zip(("log density", "features"), got_grads, want_grads):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m, name=name: f"grad {name}: {m}")
        assert want_grads[0].abs().max() > 0 and want[0].abs().max() > 0
    assert counter.frame_count >= 1  # compiled, not silently run eagerly
    ops = {str(node.target) for g in counter.graphs for node in g.graph.nodes}
    assert "autolabel_kernels.render_rays_fwd.default" in ops, sorted(ops)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("compiler", ["eager", "aot_eager"])
def test_torch_compile_matches_eager(compiler, backend, mode):
    _compile_matches_eager(compiler, backend, mode)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_torch_compile_inductor_matches_eager(backend):
    """Inductor compiles the ops around the render op (C++ on the CPU: needs a compiler, as the cpu backend).
    Scalar C++ (no vector-ISA probing, which compiles test programs): 13 s instead of 30 s with inductor's
    cache cold on 2 loaded cores, 8 s with it warm."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch({"cpp.vec_isa_ok": False}):
        _compile_matches_eager("inductor", backend, "trilinear", ray_counts=(16,))


def test_compiled_graphs_hold_the_forward_and_backward_ops():
    """What torch.compile sees: one render_rays_fwd node in the forward graph, render_rays_bwd in the backward."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = {}

    def keep(name):
        def compiler(gm, example_inputs):
            graphs[name] = [str(node.target) for node in gm.graph.nodes if node.op == "call_function"]
            return make_boxed_func(gm.forward)

        return compiler

    torch.compiler.reset()
    fn = torch.compile(
        _small_loss_fn("voxel", "cpu"),
        backend=aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw")),
        fullgraph=True,
    )
    density, features, rays = _tiny("cpu", "voxel")
    outs = fn(torch.log1p(density.detach()).requires_grad_(), features, *rays)
    torch.autograd.grad(sum(o.sum() for o in outs), [features])
    assert graphs["fw"].count("autolabel_kernels.render_rays_fwd.default") == 1, graphs["fw"]
    assert graphs["bw"].count("autolabel_kernels.render_rays_bwd.default") == 1, graphs["bw"]
    assert not any("render_rays_fwd" in t for t in graphs["bw"])  # the backward recomputes, never re-runs forward
