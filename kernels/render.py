"""The public render op: `render_rays` composites voxel density and features along rays.

Formulas (see kernels/reference.py, which defines them): each ray is cut into segments
[t0_i, t0_i + delta_i) inside [near, far] and the grid box, each with density sigma_i and features f_i;
s_i = sigma_i delta_i, T_i = exp(-sum_{j<i} s_j), alpha_i = 1 - exp(-s_i), w_i = T_i alpha_i;
opacity = sum w_i, features = sum w_i f_i, depth = sum T_i (alpha_i t0_i + delta_i g(s_i)) with
g(x) = (1 - e^-x (1 + x)) / x (the exact expected hit distance inside a constant-density segment).
Segments are used while T_i >= t_threshold.

Backends: "reference" (PyTorch, any device), "cpu" (C++, at::parallel_for over rays), "cuda" (CUDA C++,
a group of threads per ray, fused; backward recomputes along the ray). The fastest available for the
inputs' device is used; ``AUTOLABEL_KERNELS=reference|cpu|cuda`` or the ``backend`` argument forces one.

The op is registered with torch.library as ``autolabel_kernels::render_rays_fwd`` (fake function, autograd)
and ``autolabel_kernels::render_rays_bwd`` (its backward), so torch.compile and the dispatcher see it as
one op whichever backend runs; docs/ARCHITECTURE.md, "Registered ops".
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ._build import NAMESPACE, load_backend, pick_backend
from .grid import GridSpec
from .reference import render_rays_reference

MODES = ("voxel", "trilinear")
_MODE_IDS = {"voxel": 0, "trilinear": 1}
_warned: set[str] = set()


@dataclass
class RenderOutput:
    """Per-ray results of `render_rays`.

    depth: (n_rays,) expected distance along the ray (metres; not camera z-depth).
    opacity: (n_rays,) sum of weights, 1 - transmittance up to early termination.
    features: (n_rays, C) composited features, in the features' dtype.
    transmittance: (n_rays,) light left after the last segment used.
    """

    depth: torch.Tensor
    opacity: torch.Tensor
    features: torch.Tensor
    transmittance: torch.Tensor


def _fail(msg: str) -> None:
    raise ValueError(f"render_rays: {msg}")


def _validate_structure(
    density, features, origins, directions, batch_index, near, far, grid, mode, step_size, t_threshold
):
    if mode not in MODES:
        _fail(f"mode must be one of {MODES}, got {mode!r}")
    if not isinstance(grid, GridSpec):
        _fail(f"grid must be a GridSpec, got {type(grid).__name__}")
    if density.dim() != 4 or tuple(density.shape[1:]) != grid.shape:
        _fail(f"density must be (B, X, Y, Z) = (B, {', '.join(map(str, grid.shape))}), got {tuple(density.shape)}")
    if features.dim() != 5 or features.shape[:4] != density.shape:
        _fail(f"features must be (B, X, Y, Z, C) matching density {tuple(density.shape)}, got {tuple(features.shape)}")
    if density.dtype not in (torch.float32, torch.float64):
        _fail(f"density must be float32 or float64, got {density.dtype}")
    if features.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        _fail(f"features must be a floating dtype, got {features.dtype}")
    if features.dtype in (torch.float16, torch.bfloat16) and density.dtype != torch.float32:
        _fail("half / bfloat16 features go with float32 density")
    if features.dtype in (torch.float32, torch.float64) and features.dtype != density.dtype:
        _fail(f"features ({features.dtype}) and density ({density.dtype}) must share a dtype")
    if density.is_cuda and features.shape[-1] > 256:
        _fail(f"the CUDA backend takes at most 256 feature channels, got {features.shape[-1]}")
    n = origins.shape[0] if origins.dim() == 2 else -1
    if origins.dim() != 2 or origins.shape[1] != 3 or directions.shape != origins.shape:
        _fail(
            f"origins and directions must both be (n_rays, 3), got {tuple(origins.shape)} and {tuple(directions.shape)}"
        )
    for name, t in (("batch_index", batch_index), ("near", near), ("far", far)):
        if t.shape != (n,):
            _fail(f"{name} must be (n_rays,) = ({n},), got {tuple(t.shape)}")
    for name, t in (("origins", origins), ("directions", directions), ("near", near), ("far", far)):
        if t.dtype != density.dtype:
            _fail(f"{name} must have the density's dtype {density.dtype}, got {t.dtype}")
    if batch_index.dtype != torch.int64:
        _fail(f"batch_index must be int64, got {batch_index.dtype}")
    tensors = dict(
        density=density,
        features=features,
        origins=origins,
        directions=directions,
        batch_index=batch_index,
        near=near,
        far=far,
    )
    devices = {k: t.device for k, t in tensors.items()}
    if len(set(devices.values())) != 1:
        _fail(f"all inputs must be on one device, got {devices}")
    if not step_size > 0:
        _fail(f"step_size must be > 0, got {step_size}")
    if not 0 <= t_threshold < 1:
        _fail(f"t_threshold must lie in [0, 1), got {t_threshold}")


_BAD_INPUT = {  # bits reported by the C++ / CUDA forward (render_core.h, BadInput)
    1: "origins hold non-finite values",
    2: "directions hold non-finite values",
    4: "directions must be unit vectors (| |d| - 1 | <= 1e-3)",
    8: "near must be finite and far not NaN",
    16: "far < near for some rays",
    32: "batch_index must lie in [0, B)",
    64: "density must be >= 0 (and not NaN) where rays read it",
}


def _raise_bad_input(bits: int) -> None:
    _fail("; ".join(msg for bit, msg in _BAD_INPUT.items() if bits & bit))


def _validate_values(density, origins, directions, batch_index, near, far) -> None:
    """The compiled backends check these per ray inside the kernel; the reference checks them here."""
    if origins.shape[0] == 0:
        return
    bits = [
        ~torch.isfinite(origins).all(),
        ~torch.isfinite(directions).all(),
        ((directions.norm(dim=1) - 1).abs() > 1e-3).any(),
        ~torch.isfinite(near).all() | torch.isnan(far).any(),
        (far < near).any(),
        (batch_index < 0).any() | (batch_index >= density.shape[0]).any(),
        (density < 0).any() | torch.isnan(density).any(),
    ]
    flags = sum(int(b) << i for i, b in enumerate(torch.stack(bits).tolist()))
    if flags:
        _raise_bad_input(flags)


# ---- the registered ops ---------------------------------------------------------------------------
# torch.compile, the dispatcher and opcheck see the op as autolabel_kernels::render_rays_fwd, with a
# shape function (register_fake) and a backward (register_autograd) that is itself the op
# autolabel_kernels::render_rays_bwd. Both have one implementation for every device type (the dispatcher's
# CompositeExplicitAutograd key) that picks the backend when it runs: the compiled CPU / CUDA kernels where
# they build, else the PyTorch reference. Inside them nothing is traced: the value checks' host sync and
# the reference's data-dependent sizes stay out of compiled graphs. In eager mode `render_rays` runs the
# reference backend without the op (see there).


def _resolve(backend: str, density: torch.Tensor, features: torch.Tensor) -> str:
    """The backend that runs: `backend` when not "" (an error if it cannot run here), else the fastest."""
    chosen = pick_backend("render_rays", backend or None, density.device, _warned, load_backend)
    if chosen == "cpu" and features.dtype != density.dtype:
        _fail("the cpu backend takes features in the density's dtype")
    return chosen


def _reference(
    density,
    features,
    origins,
    directions,
    batch_index,
    near,
    far,
    grid_min,
    grid_max,
    voxel_size,
    mode,
    step_size,
    t_threshold,
):
    """The PyTorch reference on the op's arguments; features are composited in the density's dtype."""
    grid = GridSpec(range_min=grid_min, range_max=grid_max, voxel_size=voxel_size)
    return render_rays_reference(
        density,
        features.to(density.dtype),
        origins,
        directions,
        batch_index,
        near,
        far,
        grid,
        mode,
        step_size,
        t_threshold,
    )


@contextlib.contextmanager
def _autograd_inside_kernel():
    """Autograd back on inside an op's kernel, for the reference's backward (autograd of its forward).

    The dispatcher runs a custom op's kernel below the autograd keys (they are in the thread's exclude set),
    so torch.enable_grad alone records nothing there. This lifts that exclusion and nothing else. It uses
    torch._C's dispatch-key guards (torch's own higher-order ops do the same); torch.func.vjp would avoid
    them but fails under any TorchDispatchMode ("Cannot access storage of TensorWrapper")."""
    keys = torch._C.DispatchKey
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in (keys.AutogradCPU, keys.AutogradOther, keys.AutogradNestedTensor):  # AutogradCPU: every backend's
        exclude = exclude.remove(key)
    with torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude), torch.enable_grad():
        yield


@torch.library.custom_op(f"{NAMESPACE}::render_rays_fwd", mutates_args=())
def render_rays_fwd(
    density: torch.Tensor,
    features: torch.Tensor,
    origins: torch.Tensor,
    directions: torch.Tensor,
    batch_index: torch.Tensor,
    near: torch.Tensor,
    far: torch.Tensor,
    grid_min: Sequence[float],
    grid_max: Sequence[float],
    voxel_size: Sequence[float],
    mode: str,
    step_size: float,
    t_threshold: float,
    backend: str,
    check_values: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward of `render_rays` on validated structure: (depth, opacity, features, transmittance), the
    features in the density's dtype (the accumulation dtype; `render_rays` casts them back)."""
    chosen = _resolve(backend, density, features)
    if chosen == "reference":
        if check_values:
            _validate_values(density, origins, directions, batch_index, near, far)
        out = _reference(
            density,
            features,
            origins,
            directions,
            batch_index,
            near,
            far,
            grid_min,
            grid_max,
            voxel_size,
            mode,
            step_size,
            t_threshold,
        )
        return tuple(t.contiguous() for t in out)
    mod = load_backend(chosen)
    depth, opacity, feats, trans, flags = mod.forward(
        density.contiguous(),
        features.contiguous(),
        origins.contiguous(),
        directions.contiguous(),
        batch_index.contiguous(),
        near.contiguous(),
        far.contiguous(),
        list(grid_min),
        list(voxel_size),
        list(grid_max),
        _MODE_IDS[mode],
        step_size,
        t_threshold,
    )
    if check_values:
        bits = int(flags.item())  # the op's one host sync: bad input fails here, clearly
        if bits:
            _raise_bad_input(bits)
    return depth, opacity, feats, trans


@render_rays_fwd.register_fake
def _render_rays_fwd_fake(
    density,
    features,
    origins,
    directions,
    batch_index,
    near,
    far,
    grid_min,
    grid_max,
    voxel_size,
    mode,
    step_size,
    t_threshold,
    backend,
    check_values,
):
    n, c = origins.shape[0], features.shape[-1]
    return density.new_empty(n), density.new_empty(n), density.new_empty((n, c)), density.new_empty(n)


@torch.library.custom_op(f"{NAMESPACE}::render_rays_bwd", mutates_args=())
def render_rays_bwd(
    density: torch.Tensor,
    features: torch.Tensor,
    origins: torch.Tensor,
    directions: torch.Tensor,
    batch_index: torch.Tensor,
    near: torch.Tensor,
    far: torch.Tensor,
    grid_min: Sequence[float],
    grid_max: Sequence[float],
    voxel_size: Sequence[float],
    mode: str,
    step_size: float,
    t_threshold: float,
    backend: str,
    depth: torch.Tensor,
    opacity: torch.Tensor,
    feats: torch.Tensor,
    trans: torch.Tensor,
    g_depth: torch.Tensor,
    g_opacity: torch.Tensor,
    g_feats: torch.Tensor,
    g_trans: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of density and features (in their dtypes) from the forward's inputs, outputs and output
    gradients; the kernels walk each ray again, the reference differentiates its forward, recomputed."""
    chosen = _resolve(backend, density, features)
    grads = [g.contiguous() for g in (g_depth, g_opacity, g_feats, g_trans)]
    if chosen == "reference":
        with _autograd_inside_kernel():
            d, f = density.detach().requires_grad_(), features.detach().requires_grad_()
            out = _reference(
                d,
                f,
                origins,
                directions,
                batch_index,
                near,
                far,
                grid_min,
                grid_max,
                voxel_size,
                mode,
                step_size,
                t_threshold,
            )
            used = [(o, g) for o, g in zip(out, grads) if o.requires_grad]  # all of them, unless nothing is read
            grad_density, grad_features = (
                torch.autograd.grad([o for o, _ in used], (d, f), [g for _, g in used], allow_unused=True)
                if used
                else (None, None)
            )
        return (
            torch.zeros_like(density) if grad_density is None else grad_density.contiguous(),
            torch.zeros_like(features) if grad_features is None else grad_features.contiguous(),
        )
    mod = load_backend(chosen)
    c = [
        t.contiguous()
        for t in (density, features, origins, directions, batch_index, near, far, depth, opacity, feats, trans)
    ]
    grad_density, grad_features = mod.backward(
        *c[:7],
        list(grid_min),
        list(voxel_size),
        list(grid_max),
        _MODE_IDS[mode],
        step_size,
        t_threshold,
        *c[7:],
        *grads,
    )
    return grad_density, grad_features


@render_rays_bwd.register_fake
def _render_rays_bwd_fake(density, features, *rest):
    return density.new_empty(density.shape), features.new_empty(features.shape)


def _setup_context(ctx, inputs, output):
    density, features, origins, directions, batch_index, near, far = inputs[:7]
    ctx.save_for_backward(density, features, origins, directions, batch_index, near, far, *output)
    ctx.args = tuple(inputs[7:14])  # grid_min, grid_max, voxel_size, mode, step_size, t_threshold, backend


def _backward(ctx, g_depth, g_opacity, g_feats, g_trans):
    saved = ctx.saved_tensors
    inputs, outputs = saved[:7], saved[7:]
    grads = [torch.zeros_like(o) if g is None else g for g, o in zip((g_depth, g_opacity, g_feats, g_trans), outputs)]
    grad_density, grad_features = render_rays_bwd(*inputs, *ctx.args, *outputs, *grads)
    # no gradients for the rays and the settings (documented: gradients flow to density and features only)
    return (grad_density, grad_features) + (None,) * 13


torch.library.register_autograd(f"{NAMESPACE}::render_rays_fwd", _backward, setup_context=_setup_context)


def render_rays(
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
    backend: Optional[str] = None,
    check_values: bool = True,
) -> RenderOutput:
    """Volume-render a voxel grid along rays.

    Args:
        density: (B, X, Y, Z) sigma >= 0 per voxel (1/metre), float32 or float64; X, Y, Z = grid.shape.
        features: (B, X, Y, Z, C) per-voxel features (logits or probabilities), same dtype as density
            (float16 / bfloat16 also allowed with float32 density on CUDA; accumulation is float32).
        origins: (n_rays, 3) ray origins in the grid's metric (ego) coordinates.
        directions: (n_rays, 3) unit directions.
        batch_index: (n_rays,) int64, which grid of the batch each ray reads.
        near, far: (n_rays,) distance interval along the ray (far >= near).
        grid: the GridSpec of the volume.
        mode: "voxel" (exact traversal, one segment per voxel) or "trilinear" (uniform steps).
        step_size: segment length in metres for "trilinear".
        t_threshold: early termination once transmittance falls below it.
        backend: None (fastest available), "reference", "cpu" or "cuda".
        check_values: raise ValueError on non-finite or non-unit rays, far < near, a batch index out of
            range, or negative / NaN density that a ray reads. The compiled backends check inside the
            kernel and cost one host sync per call for it; False skips the sync (bad rays are still
            skipped safely, rendering zeros) for training loops whose rays are known to be valid.

    Returns:
        RenderOutput with depth, opacity, transmittance (n_rays,) and features (n_rays, C).
        Gradients flow to density and features, not to the rays.
    """
    _validate_structure(
        density, features, origins, directions, batch_index, near, far, grid, mode, step_size, t_threshold
    )
    if not torch.compiler.is_compiling():
        backend = _resolve(backend or "", density, features)
        if backend == "reference":
            # Eager: plain PyTorch that autograd differentiates as it runs. Through the op, the backward would
            # have to run the reference's forward again (1.6-1.8x the time, measured on the CPU).
            if check_values:
                _validate_values(density, origins, directions, batch_index, near, far)
            rays = [t.detach() for t in (origins, directions, batch_index, near, far)]  # as the op: no ray gradients
            depth, opacity, feats, trans = render_rays_reference(
                density, features.to(density.dtype), *rays, grid, mode, step_size, t_threshold
            )
            return RenderOutput(depth, opacity, feats.to(features.dtype), trans)
    depth, opacity, feats, trans = render_rays_fwd(
        density,
        features,
        origins,
        directions,
        batch_index,
        near,
        far,
        grid.range_min,
        grid.range_max,
        grid.voxel_size,
        mode,
        float(step_size),
        float(t_threshold),
        backend or "",
        bool(check_values),
    )
    # CUDA and the reference composite half / bfloat16 features in float32; the cast is differentiable
    return RenderOutput(depth, opacity, feats.to(features.dtype), trans)
