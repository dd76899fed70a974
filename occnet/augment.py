"""Training-time augmentation that changes what the network sees but not what it is scored against.

Two exact geometric augmentations (BEVDet's "BDA" and "IDA" in their simplest, lossless form):

* **BEV augmentation**: the network gets the cameras of a mirrored / rotated world, cam2ego' = T cam2ego
  with T one of the 8 symmetries of the square (flips of x and y, and the x <-> y swap), and its output
  grids are mapped back through T before any loss. On a grid that is symmetric about the ego
  (range_min = -range_max in x and y) the voxel at index i along a flipped axis is exactly the voxel
  X - 1 - i, and the swap needs X = Y; so the un-mapping is a flip / transpose of the output tensors and
  every loss, ray and 3D label stays in the frame's own ego frame. Without the swap symmetry only flips
  are drawn; on an asymmetric grid the option is refused.
* **Image flip**: a camera's image, depth map and 2D labels are mirrored left-right and its intrinsics
  with them (u' = W - u: fx' = -fx, cx' = W - cx), which describes exactly the same rays. Rendering losses
  and the depth-bin loss read the flipped maps with the flipped intrinsics, so they are unchanged in
  meaning; the image encoder sees mirrored images.

Both are functions of a generator seeded by (seed, step, position in the global batch), like the rays,
so a resumed or distributed run draws the same augmentations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.grid import GridSpec

CAMERA_KEYS = ("images", "depth", "semantics", "confidence")  # (B, N, [C,] H, W): mirrored along W


@dataclass(frozen=True)
class BevTransform:
    """p' = M p in the xy plane with M = F W: W swaps x and y when `swap`, F negates x / y when flip_x /
    flip_y."""

    swap: bool = False
    flip_x: bool = False
    flip_y: bool = False

    def matrix(self) -> torch.Tensor:
        """(4, 4) float64 ego -> augmented-ego transform."""
        m = torch.eye(4, dtype=torch.float64)
        if self.swap:
            m[:2, :2] = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
        f = torch.diag(
            torch.tensor([-1.0 if self.flip_x else 1.0, -1.0 if self.flip_y else 1.0, 1.0, 1.0], dtype=torch.float64)
        )
        return f @ m

    def unmap(self, t: torch.Tensor, x_dim: int) -> torch.Tensor:
        """A grid tensor indexed in the augmented frame (x at dim `x_dim`, y at x_dim + 1) -> the same
        values indexed in the original frame: out(p) = t(M p)."""
        dims = [d for d, on in ((x_dim, self.flip_x), (x_dim + 1, self.flip_y)) if on]
        if dims:
            t = t.flip(dims)
        return t.transpose(x_dim, x_dim + 1) if self.swap else t


def check_bev_grid(grid: GridSpec) -> bool:
    """Whether the grid allows BEV augmentation; returns True when the x <-> y swap is exact as well.
    Raises ValueError when x or y is not symmetric about the ego."""
    for axis in (0, 1):
        if abs(grid.range_min[axis] + grid.range_max[axis]) > 1e-6:
            raise ValueError(
                f"train.bev_augment needs a grid symmetric about the ego in x and y; axis {'xy'[axis]} spans "
                f"[{grid.range_min[axis]}, {grid.range_max[axis]}]"
            )
    return grid.shape[0] == grid.shape[1] and abs(grid.voxel_size[0] - grid.voxel_size[1]) < 1e-9


def draw_bev(generator: torch.Generator, swap_allowed: bool) -> BevTransform:
    bits = torch.randint(0, 2, (3,), generator=generator).tolist()
    return BevTransform(swap=bool(bits[0]) and swap_allowed, flip_x=bool(bits[1]), flip_y=bool(bits[2]))


def flip_cameras(batch: dict, flip: torch.Tensor) -> dict:
    """Mirror the cameras marked in `flip` (B, N) bool left-right: images, depth, semantics, confidence
    and intrinsics (B, N, 3, 3) of the network's input. Returns a new dict; other keys are shared."""
    if not bool(flip.any()):
        return batch
    out = dict(batch)
    for key in CAMERA_KEYS:
        if key in batch:
            t = batch[key]
            m = flip.to(t.device).view(*flip.shape, *([1] * (t.dim() - 2)))
            out[key] = torch.where(m, t.flip(-1), t)
    width = batch["images"].shape[-1]
    k = batch["intrinsics"].clone()
    f = flip.to(k.device)
    k[..., 0, 0] = torch.where(f, -k[..., 0, 0], k[..., 0, 0])
    k[..., 0, 2] = torch.where(f, width - k[..., 0, 2], k[..., 0, 2])
    out["intrinsics"] = k
    return out
