"""Region-level annotation (issue 21): BEV tiles of the voxel grid, their scores and masks.

A tile is ``size x size`` BEV cells over the full height: tile ``t = ix * ny + iy`` covers voxels
``[ix * size, min((ix + 1) * size, X)) x [iy * size, min((iy + 1) * size, Y)) x [0, Z)`` (x-major; the last
row and column of tiles are cut at the grid's edge when the size does not divide it). The cost of a tile is
its voxel count: what an annotator labels.

During pool scoring each frame keeps per-tile, per-predicted-class entropy sums and voxel counts within
mask_camera ((T, 18) each; 64 x 18 x 2 numbers on Occ3D with 25-cell tiles), never a volume; with the pool's
class weights a tile's score is its class-weighted entropy mass per labelled voxel (sum over the tile's
visible voxels of weight x entropy, divided by the tile's voxel count), so a tile with few visible voxels,
which costs as much to label, ranks lower than a tile full of uncertain ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from occnet.classes import NUM_CLASSES

from .scores import entropy


@dataclass(frozen=True)
class RegionGrid:
    shape: tuple[int, int, int]  # the voxel grid (X, Y, Z)
    size: int  # BEV cells per tile side

    @property
    def per_side(self) -> tuple[int, int]:
        x, y, _ = self.shape
        return -(-x // self.size), -(-y // self.size)

    @property
    def count(self) -> int:
        nx, ny = self.per_side
        return nx * ny

    def bounds(self, t: int) -> list[list[int]]:
        """[[x0, x1], [y0, y1], [z0, z1]] half-open voxel index ranges of tile t."""
        nx, ny = self.per_side
        if not 0 <= t < nx * ny:
            raise IndexError(f"tile {t} outside 0..{nx * ny - 1}")
        ix, iy = divmod(int(t), ny)
        x, y, z = self.shape
        s = self.size
        return [[ix * s, min((ix + 1) * s, x)], [iy * s, min((iy + 1) * s, y)], [0, z]]

    def voxels(self) -> np.ndarray:
        """(T,) voxel count of every tile."""
        return np.array([np.prod([b - a for a, b in self.bounds(t)]) for t in range(self.count)], np.int64)

    def cell_tiles(self) -> np.ndarray:
        """(X, Y) int64: the tile of every BEV cell."""
        x, y, _ = self.shape
        _, ny = self.per_side
        ix, iy = np.arange(x) // self.size, np.arange(y) // self.size
        return ix[:, None] * ny + iy[None, :]

    def voxel_tiles(self) -> np.ndarray:
        """(X, Y, Z) int64: the tile of every voxel (its column's)."""
        return np.repeat(self.cell_tiles()[:, :, None], self.shape[2], 2)


def bounds_mask(shape: tuple[int, int, int], bounds: list[list[list[int]]]) -> np.ndarray:
    """(X, Y, Z) bool: the union of boxes given as [[x0, x1], [y0, y1], [z0, z1]]."""
    m = np.zeros(shape, bool)
    for (x0, x1), (y0, y1), (z0, z1) in bounds:
        m[x0:x1, y0:y1, z0:z1] = True
    return m


def tile_entropy_by_class(
    probs: torch.Tensor, mask: torch.Tensor, regions: RegionGrid
) -> tuple[np.ndarray, np.ndarray]:
    """probs (X, Y, Z, 18), mask (X, Y, Z) -> per tile and predicted class: entropy sums and voxel counts
    within the mask, each (T, 18) float64 (what `entropy_by_class` computes for the frame, per tile)."""
    m = mask.bool()
    tiles = torch.from_numpy(regions.cell_tiles()).to(probs.device)
    tile = tiles[:, :, None].expand(m.shape)[m]
    p = probs[m]
    bins = tile * NUM_CLASSES + p.argmax(-1)
    n = regions.count * NUM_CLASSES
    sums = torch.bincount(bins, weights=entropy(p).double(), minlength=n).reshape(regions.count, NUM_CLASSES)
    counts = torch.bincount(bins, minlength=n).reshape(regions.count, NUM_CLASSES)
    return sums.cpu().numpy(), counts.cpu().numpy().astype(np.float64)


def tile_scores(sums: np.ndarray, weights: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    """(T, 18) entropy sums, (18,) class weights, (T,) tile voxel counts -> (T,) class-weighted entropy mass
    per labelled voxel (tiles without visible voxels score 0)."""
    return (np.asarray(sums, np.float64) @ np.asarray(weights, np.float64)) / np.maximum(voxels, 1)
