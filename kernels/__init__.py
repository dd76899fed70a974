"""Differentiable volume rendering of voxel grids along rays (reference, C++ CPU and CUDA backends)."""
from .grid import GridSpec
from .render import BACKENDS, MODES, RenderOutput, render_rays
from .reference import render_rays_reference

__all__ = ["BACKENDS", "GridSpec", "MODES", "RenderOutput", "render_rays", "render_rays_reference"]
