"""LiDAR depth supervision: lidar points projected into each camera as sparse metric z-depth maps.

A point goes from the keyframe ego frame (lidar timestamp) through the global frame into the ego
frame at the camera's own timestamp and then into the camera, exactly as nuscenes-devkit's
``map_pointcloud_to_image`` does, so that motion between the two timestamps is compensated.
Each pixel keeps its nearest point; pixels with no point are 0.
"""

from __future__ import annotations

import numpy as np

from ..data.frame import Camera, Frame, Lidar


def lidar_to_camera(lidar: Lidar, camera: Camera) -> np.ndarray:
    """(4, 4) float64 transform from the keyframe ego frame (lidar time) into camera coordinates."""
    return np.linalg.inv(camera.cam2ego) @ np.linalg.inv(camera.ego2global) @ lidar.ego2global


def project_points(lidar: Lidar, camera: Camera, min_depth: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project the lidar points into a camera.

    Returns:
        uv: (M, 2) float64 continuous pixel coordinates (pixel i covers [i, i+1)),
        depth: (M,) float64 camera z-depth in metres,
        index: (M,) int64 index of each kept point in ``lidar.points``.
    Kept: points with depth > min_depth that land inside the image (0 <= u < W, 0 <= v < H).
    """
    T = lidar_to_camera(lidar, camera)
    xyz = lidar.points[:, :3].astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    z = xyz[:, 2]
    front = np.flatnonzero(z > min_depth)
    pix = xyz[front] @ camera.K.T
    uv = pix[:, :2] / pix[:, 2:3]
    h, w = camera.image_size
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    return uv[inside], z[front][inside], front[inside]


def lidar_depth_map(lidar: Lidar, camera: Camera, min_depth: float = 1.0, max_depth: float | None = None) -> np.ndarray:
    """(H, W) float32 metric z-depth of the nearest lidar point per pixel, 0 where none."""
    uv, depth, _ = project_points(lidar, camera, min_depth)
    if max_depth is not None:
        keep = depth <= max_depth
        uv, depth = uv[keep], depth[keep]
    h, w = camera.image_size
    out = np.zeros(h * w, dtype=np.float32)
    if len(depth) == 0:
        return out.reshape(h, w)
    pixel = np.floor(uv[:, 1]).astype(np.int64) * w + np.floor(uv[:, 0]).astype(np.int64)
    order = np.lexsort((depth, pixel))  # by pixel, nearest first within a pixel
    pixel, depth = pixel[order], depth[order]
    first = np.ones(len(pixel), dtype=bool)
    first[1:] = pixel[1:] != pixel[:-1]
    out[pixel[first]] = depth[first]
    return out.reshape(h, w)


def lidar_depth_maps(frame: Frame, min_depth: float = 1.0, max_depth: float | None = None) -> np.ndarray:
    """(n_cameras, H, W) float32 depth maps in the frame's camera order (all cameras one size)."""
    sizes = {c.image_size for c in frame.cameras}
    if len(sizes) != 1:
        raise ValueError(f"frame {frame.token}: cameras differ in size {sorted(sizes)}; resize them first")
    return np.stack([lidar_depth_map(frame.lidar, c, min_depth, max_depth) for c in frame.cameras])
