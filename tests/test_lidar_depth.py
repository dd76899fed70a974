"""LiDAR depth maps agree with nuscenes-devkit's own projection on the real sample."""

import numpy as np
import pytest

from autolabel.data.transforms import ResizeCrop
from autolabel.supervision.lidar_depth import lidar_depth_map, lidar_depth_maps, project_points


@pytest.fixture(scope="module")
def explorer(sample_root):
    from nuscenes.nuscenes import NuScenes, NuScenesExplorer

    return NuScenesExplorer(NuScenes("v1.0-mini", str(sample_root), verbose=False))


def test_projection_matches_devkit(sample_frame, explorer):
    f = sample_frame
    for cam in f.cameras:
        ref_uv, ref_depth, _ = explorer.map_pointcloud_to_image(f.lidar.token, cam.token, min_dist=1.0)
        ref_uv = ref_uv[:2].T
        uv, depth, _ = project_points(f.lidar, cam, min_depth=1.0)
        h, w = cam.image_size
        # the devkit keeps 1 < u < W-1, 1 < v < H-1; compare on the points both keep
        both = (uv[:, 0] > 1) & (uv[:, 0] < w - 1) & (uv[:, 1] > 1) & (uv[:, 1] < h - 1)
        assert both.sum() == len(ref_uv) > 1000, cam.name
        assert np.abs(uv[both] - ref_uv).max() < 0.5
        assert np.abs(depth[both] - ref_depth).max() < 1e-3

        dmap = lidar_depth_map(f.lidar, cam)
        assert dmap.shape == (h, w) and dmap.dtype == np.float32
        # every pixel holds the nearest of its points' devkit depths (pixels from our uv: a point
        # within float32 rounding of a pixel edge may fall on either side in the devkit)
        pix = np.floor(uv[both]).astype(int)
        flat = pix[:, 1] * w + pix[:, 0]
        nearest = np.full(h * w, np.inf)
        np.minimum.at(nearest, flat, ref_depth)
        hit = np.unique(flat)
        np.testing.assert_allclose(dmap.reshape(-1)[hit], nearest[hit], atol=1e-3)
        assert (dmap > 0).sum() >= len(hit)  # border pixels that the devkit drops may add a few


def test_depth_maps_after_resize_and_crop(sample_frame):
    f = sample_frame
    rc = ResizeCrop.fit((900, 1600), (256, 704))
    assert rc.resized_hw == (396, 704) and rc.top == 140
    small = rc.apply_frame(f)
    assert all(c.image.shape == (256, 704, 3) and c.image_size == (256, 704) for c in small.cameras)
    maps = lidar_depth_maps(small)
    assert maps.shape == (6, 256, 704)
    for cam, cam_small, dmap in zip(f.cameras, small.cameras, maps):
        uv, depth, idx = project_points(f.lidar, cam)
        uv2, depth2, idx2 = project_points(f.lidar, cam_small)
        A = rc.matrix
        expected = uv @ A[:2, :2].T + A[:2, 2]
        inside = (expected[:, 0] >= 0) & (expected[:, 0] < 704) & (expected[:, 1] >= 0) & (expected[:, 1] < 256)
        inside_idx = set(idx[inside].tolist())
        common = np.isin(idx2, idx[inside])
        # K' = A K moves every point exactly as the image moved; only points on the crop edge may differ
        assert len(inside_idx ^ set(idx2.tolist())) <= 2
        pos = {i: p for i, p in zip(idx[inside], expected[inside])}
        np.testing.assert_allclose(uv2[common], np.array([pos[i] for i in idx2[common]]), atol=1e-6)
        np.testing.assert_allclose(depth2, depth[np.searchsorted(idx, idx2)], atol=1e-9)
        assert 0 < (dmap > 0).sum() <= len(idx2)
        assert dmap.max() <= depth2.max() + 1e-4


def test_resize_keeps_image_content():
    img = np.zeros((90, 160, 3), np.uint8)
    img[60:70, 40:60] = 255  # a bright block
    rc = ResizeCrop(in_hw=(90, 160), resized_hw=(45, 80), top=5, left=10, out_hw=(40, 70))
    out = rc.apply_image(img)
    assert out.shape == (40, 70, 3)
    # block corners (40,60)-(60,70) map to (10,25)-(20,30) after s=0.5 and the (10, 5) crop
    assert out[26:29, 11:19].min() == 255 and out[:20].max() == 0
    with pytest.raises(ValueError, match="positive"):
        ResizeCrop(in_hw=(0, 1), resized_hw=(1, 1), top=0, left=0, out_hw=(1, 1))
