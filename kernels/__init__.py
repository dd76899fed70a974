"""Differentiable volume rendering of voxel grids along rays (reference, C++ CPU and CUDA backends)."""

from ._build import BACKENDS
from .grid import GridSpec
from .reference import render_rays_reference
from .render import MODES, RenderOutput, render_rays

__all__ = ["BACKENDS", "GridSpec", "MODES", "RenderOutput", "render_rays", "render_rays_reference"]
