"""Image resize / crop for the network input, with the intrinsics updated to match.

Resizing an (H, W) image to (rh, rw) and cropping a window whose top-left corner is (left, top)
maps a pixel coordinate (u, v) of the original (pixel corners at integers) to
u' = sx * u - left, v' = sy * v - top with sx = rw / W, sy = rh / H — PIL's resize maps image
corners onto each other, so this holds exactly. Hence K' = A @ K with
A = [[sx, 0, -left], [0, sy, -top], [0, 0, 1]]; `A` is also the image-augmentation matrix that
the network's view transform undoes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from .frame import Camera, Frame


@dataclass(frozen=True)
class ResizeCrop:
    """Resize an `in_hw` image to `resized_hw`, then crop `out_hw` starting at (top, left).

    Parts of the crop window outside the resized image are filled with zeros.
    """

    in_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    top: int
    left: int
    out_hw: tuple[int, int]

    def __post_init__(self) -> None:
        for name in ("in_hw", "resized_hw", "out_hw"):
            hw = getattr(self, name)
            if len(hw) != 2 or min(hw) <= 0:
                raise ValueError(f"ResizeCrop.{name} must be a positive (height, width), got {hw}")

    @classmethod
    def fit(cls, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> "ResizeCrop":
        """Scale to the output width and keep the bottom rows (the sky is cut, as BEVDet does).

        If the scaled image would be shorter than the output, it is scaled to the output height
        instead and centred horizontally.
        """
        (h, w), (oh, ow) = in_hw, out_hw
        rh = round(h * ow / w)
        if rh >= oh:
            return cls(in_hw=(h, w), resized_hw=(rh, ow), top=rh - oh, left=0, out_hw=(oh, ow))
        rw = round(w * oh / h)
        return cls(in_hw=(h, w), resized_hw=(oh, rw), top=0, left=(rw - ow) // 2, out_hw=(oh, ow))

    @property
    def matrix(self) -> np.ndarray:
        """(3, 3) float64 map from original pixel coordinates to output pixel coordinates."""
        sy = self.resized_hw[0] / self.in_hw[0]
        sx = self.resized_hw[1] / self.in_hw[1]
        return np.array([[sx, 0.0, -self.left], [0.0, sy, -self.top], [0.0, 0.0, 1.0]])

    def apply_image(self, image: np.ndarray, resample: int = Image.BILINEAR) -> np.ndarray:
        """(H, W, C) or (H, W) array -> (out_h, out_w[, C]) array of the same dtype."""
        if tuple(image.shape[:2]) != tuple(self.in_hw):
            raise ValueError(f"ResizeCrop expects images of {self.in_hw}, got {image.shape[:2]}")
        (rh, rw), (oh, ow) = self.resized_hw, self.out_hw
        resized = np.asarray(Image.fromarray(image).resize((rw, rh), resample=resample))
        out = np.zeros((oh, ow) + image.shape[2:], dtype=image.dtype)
        y0, x0 = max(self.top, 0), max(self.left, 0)
        y1, x1 = min(self.top + oh, rh), min(self.left + ow, rw)
        if y1 > y0 and x1 > x0:
            out[y0 - self.top : y1 - self.top, x0 - self.left : x1 - self.left] = resized[y0:y1, x0:x1]
        return out

    def apply_camera(self, cam: Camera) -> Camera:
        """The camera with its image resized / cropped and K updated (works without pixels too)."""
        if tuple(cam.image_size) != tuple(self.in_hw):
            raise ValueError(f"camera {cam.name} ({cam.token}) is {cam.image_size}, ResizeCrop expects {self.in_hw}")
        K = self.matrix @ cam.K
        if cam.image.size:
            return cam.with_image(self.apply_image(cam.image), K)
        return replace(cam, K=K, image_size=tuple(self.out_hw))

    def apply_frame(self, frame: Frame) -> Frame:
        return replace(frame, cameras=tuple(self.apply_camera(c) for c in frame.cameras))
