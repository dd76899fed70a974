"""Lazy builds of the C++ and CUDA backends with torch.utils.cpp_extension (+ ninja).

Nothing compiles at import: the first call that needs a backend builds it (20-30 s a CPU backend on one core;
the sources include only the torch headers they use, not torch/extension.h),
later processes reuse the build in TORCH_EXTENSIONS_DIR (default: torch's cache folder).
A failed build is remembered for the process, so it is tried once.
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch

CSRC = Path(__file__).parent / "csrc"


BACKENDS = ("reference", "cpu", "cuda")
NAMESPACE = "autolabel_kernels"  # the package's torch.library namespace: render_rays_fwd / _bwd, ray_voxels


class BackendUnavailable(RuntimeError):
    """A backend cannot be built or run here (no compiler, no GPU, build error)."""


def extension_name(base: str, csrc: Path = CSRC) -> str:
    """The build's name in TORCH_EXTENSIONS_DIR: `base` and a digest of the checkout's source folder. torch keeps
    one build per name and rebuilds it when the sources or the build arguments change, and the include path (the
    checkout's csrc folder) is one of them: two checkouts under one name rebuilt each other's build at every
    switch (15-45 s a CPU backend), which is what a worktree beside the main tree, a benchmark comparing two
    commits, or an installed copy beside a development tree does. Each checkout now keeps a build of its own."""
    return f"{base}_{hashlib.sha256(str(csrc.resolve()).encode()).hexdigest()[:8]}"


@functools.lru_cache(maxsize=None)
def _load(name: str) -> ModuleType | BaseException:
    from torch.utils.cpp_extension import load

    try:
        if name == "walk_cpu":
            # -ffp-contract=off: the walk repeats the reference's float64 arithmetic operation by operation
            return load(
                name=extension_name("autolabel_walk_cpu"),
                sources=[str(CSRC / "walk_cpu.cpp")],
                extra_cflags=["-O3", "-fopenmp", "-ffp-contract=off"],
                extra_ldflags=["-fopenmp"],
                extra_include_paths=[str(CSRC)],
                verbose=bool(os.environ.get("AUTOLABEL_KERNELS_VERBOSE")),
            )
        if name == "walk_cuda":
            if not torch.cuda.is_available():
                return BackendUnavailable("no CUDA device is visible")
            return load(
                name=extension_name("autolabel_walk_cuda"),
                sources=[str(CSRC / "walk_cuda.cu")],
                extra_cflags=["-O3"],
                extra_cuda_cflags=["-O3", "--fmad=false"],
                extra_include_paths=[str(CSRC)],
                verbose=bool(os.environ.get("AUTOLABEL_KERNELS_VERBOSE")),
            )
        if name == "cpu":
            return load(
                name=extension_name("autolabel_render_cpu"),
                sources=[str(CSRC / "render_cpu.cpp")],
                # at::parallel_for only runs threads when the extension itself is built with OpenMP
                extra_cflags=["-O3", "-fopenmp"],
                extra_ldflags=["-fopenmp"],
                extra_include_paths=[str(CSRC)],
                verbose=bool(os.environ.get("AUTOLABEL_KERNELS_VERBOSE")),
            )
        if not torch.cuda.is_available():
            return BackendUnavailable("no CUDA device is visible")
        # One .cu file per (dtype, mode): ninja compiles them in parallel.
        lanes = int(os.environ.get("AUTOLABEL_RENDER_LANES", "8"))  # an experiment knob; 8 is the tuned value
        return load(
            name=extension_name("autolabel_render_cuda" + ("" if lanes == 8 else f"_g{lanes}")),
            sources=[str(CSRC / "render_cuda.cpp"), *map(str, sorted(CSRC.glob("render_cuda_*.cu")))],
            extra_cflags=["-O3"],
            extra_cuda_cflags=["-O3", f"-DRENDER_LANES={lanes}"],
            extra_include_paths=[str(CSRC)],
            verbose=bool(os.environ.get("AUTOLABEL_KERNELS_VERBOSE")),
        )
    except Exception as exc:  # compiler missing, nvcc missing, build error: remembered, reported by caller
        if "interrupted by user" in str(exc):
            # Ctrl-C reached ninja (same process group) first and torch reports its exit as a build error:
            # it is the user's interrupt, not a missing compiler, so neither fall back nor remember it
            raise KeyboardInterrupt from exc
        return exc


def load_backend(name: str) -> ModuleType:
    """The compiled module: "cpu" / "cuda" (render op), "walk_cpu" / "walk_cuda" (voxel walk); raises
    BackendUnavailable with the reason."""
    mod = _load(name)
    if isinstance(mod, BaseException):
        what = f"{name[5:]} voxel-walk" if name.startswith("walk_") else f"{name} render"
        raise BackendUnavailable(f"the {what} backend is unavailable: {mod}") from mod
    return mod


def pick_backend(
    op: str,
    requested: str | None,
    device: torch.device,
    warned: set[str],
    load: Callable[[str], ModuleType],
    prefix: str = "",
) -> str:
    """The backend of op `op` for inputs on `device`: `requested` or AUTOLABEL_KERNELS when set (an error if it
    cannot run there), else the compiled one for the device (module `prefix + name`), falling back to
    "reference" with one warning per backend (remembered in `warned`)."""
    forced = requested or os.environ.get("AUTOLABEL_KERNELS") or None
    if forced is not None:
        if forced not in BACKENDS:
            raise ValueError(f"{op}: backend must be one of {BACKENDS}, got {forced!r} (AUTOLABEL_KERNELS or backend=)")
        if forced != "reference":
            if (forced == "cuda") != (device.type == "cuda"):
                raise BackendUnavailable(f"backend {forced!r} was forced but the inputs are on {device}")
            load(prefix + forced)  # raises BackendUnavailable with the reason
        return forced
    candidate = "cuda" if device.type == "cuda" else "cpu" if device.type == "cpu" else None
    if candidate is None:
        return "reference"
    try:
        load(prefix + candidate)
        return candidate
    except BackendUnavailable as exc:
        if candidate not in warned:
            warned.add(candidate)
            warnings.warn(f"{exc}; using the PyTorch reference instead", RuntimeWarning, stacklevel=4)
        return "reference"
