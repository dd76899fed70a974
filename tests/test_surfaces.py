"""Rays meeting flat ground: depth targets and LiDAR free space agree with what the Occ3D grid holds."""
from __future__ import annotations

import torch

from kernels import render_rays
from kernels.grid import GridSpec
from occnet.classes import class_id
from occnet.rays import sample_rays
from occnet.surfaces import layer_entry

# z layers [-1.0, -0.6), [-0.6, -0.2), [-0.2, 0.2), ...: flat ground at z = 0 sits mid-layer, as in Occ3D
GRID = GridSpec(range_min=(-25.6, -25.6, -1.0), range_max=(25.6, 25.6, 2.2), voxel_size=0.4)
ROAD, CAR = class_id("driveable_surface"), class_id("car")


def _front_camera(height: float = 1.57):
    """A 60 x 80 pinhole camera `height` m above the ground at the ego origin, looking along +x (1.57 m: no
    pixel row meets the layer top exactly on a voxel edge, where the walk's tie-break would decide)."""
    K = torch.tensor([[[40.0, 0, 40], [0, 40.0, 30], [0, 0, 1]]])
    T = torch.eye(4)[None]
    T[0, :3, :3] = torch.tensor([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])
    T[0, 2, 3] = height
    return K, T


def _ground_depth(K, T, hw=(60, 80)):
    """Exact z-depth of the plane z = 0 per pixel (0 where the pixel looks above the horizon or past the grid)."""
    h, w = hw
    v, u = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    d_cam = torch.stack([(u - K[0, 0, 2]) / K[0, 0, 0], (v - K[0, 1, 2]) / K[0, 1, 1], torch.ones_like(u)], -1)
    d_ego = d_cam @ T[0, :3, :3].T  # direction per unit camera z
    z = torch.where(d_ego[..., 2] < 0, -T[0, 2, 3] / d_ego[..., 2], torch.zeros_like(u))
    point = T[0, :3, 3] + z[..., None] * d_ego
    z = torch.where((point[..., :2].abs() < 25.0).all(-1), z, torch.zeros_like(z))
    return z[None]


def test_layer_entry_moves_only_flat_returns_of_descending_rays():
    o = torch.tensor([[0.0, 0, 1.6]] * 4, dtype=torch.float64)
    d = torch.tensor([[20.0, 0, -1.6]] * 2 + [[1.0, 0, 0.1], [20.0, 0, -1.6]], dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True)
    dist = torch.full((4,), (20.0**2 + 1.6**2) ** 0.5, dtype=torch.float64)
    dist[2] = 5.0
    flat = torch.tensor([True, False, True, True])
    o[3, 2] = 0.1  # starts inside the ground layer: nothing to enter
    out = layer_entry(o, d, dist, flat, GRID)
    torch.testing.assert_close(out[0], dist[0] * 1.4 / 1.6)  # enters at z = 0.2: 1.4 of the 1.6 m descent
    torch.testing.assert_close(out[1:], dist[1:])  # a car, a rising ray, a ray starting in the layer


def test_occupancy_depth_targets_are_what_the_occ3d_grid_renders():
    """Render an opaque Occ3D ground layer: it stops the rays at the 'occupancy' targets, not at the returns."""
    K, T = _front_camera()
    depth = _ground_depth(K, T)
    sem = torch.where(depth > 0, torch.full_like(depth, ROAD), torch.full_like(depth, 255)).to(torch.uint8)
    conf = torch.ones_like(depth)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731  (the same rays for both targets)
    occ = sample_rays(K, T, depth, sem, conf, 2000, 0.0, gen(), grid=GRID)
    lidar = sample_rays(K, T, depth, sem, conf, 2000, 0.0, gen(), grid=GRID, depth_target="lidar")
    torch.testing.assert_close(occ.origins, lidar.origins)
    density = torch.zeros(1, *GRID.shape)
    density[..., 2] = 1e4  # the layer [-0.2, 0.2) holding the ground is occupied, everything else free
    feats = torch.ones(1, *GRID.shape, 1)
    n = len(occ.origins)
    out = render_rays(density, feats, occ.origins, occ.directions, occ.batch_index, torch.zeros(n), torch.full((n,), 100.0),
                      GRID, mode="voxel", step_size=0.2)
    rendered = out.depth * occ.z_per_metre
    assert (out.opacity > 0.999).all()
    err_occ = (rendered / occ.depth - 1).abs()
    err_lidar = (rendered / lidar.depth - 1).abs()
    assert err_occ.max() < 1e-3  # float32 distances of tens of metres
    assert err_lidar.median() > 0.1  # the returns lie 15% further: 0.2 m more of a 1.37 m descent
    assert (occ.depth < lidar.depth).all()


def test_line_of_sight_is_met_by_the_occ3d_ground_only_with_occupancy_targets():
    """The line-of-sight loss (free until a voxel before the target, stopped a voxel after) is ~0 for the
    opaque Occ3D ground layer with occupancy targets; with LiDAR-return targets it wants the layer emptied."""
    from occnet.config import RenderConfig
    from occnet.losses import line_of_sight

    K, T = _front_camera()
    depth = _ground_depth(K, T)
    sem = torch.where(depth > 0, torch.full_like(depth, ROAD), torch.full_like(depth, 255)).to(torch.uint8)
    conf = torch.ones_like(depth)
    density = torch.zeros(1, *GRID.shape)
    density[..., 2] = 1e4
    losses = {}
    for target in ("occupancy", "lidar"):
        rays = sample_rays(K, T, depth, sem, conf, 1000, 0.0, torch.Generator().manual_seed(0), grid=GRID,
                           depth_target=target)
        losses[target] = line_of_sight(density, rays, GRID, RenderConfig(), margin=0.4).item()
    assert losses["occupancy"] < 1e-3 < 1.0 < losses["lidar"]


def test_occupancy_target_leaves_other_classes_alone():
    K, T = _front_camera()
    depth = _ground_depth(K, T)
    sem = torch.full(depth.shape, CAR, dtype=torch.uint8)
    conf = torch.ones_like(depth)
    occ = sample_rays(K, T, depth, sem, conf, 500, 0.0, torch.Generator().manual_seed(0), grid=GRID)
    lidar = sample_rays(K, T, depth, sem, conf, 500, 0.0, torch.Generator().manual_seed(0), grid=GRID, depth_target="lidar")
    torch.testing.assert_close(occ.depth, lidar.depth)


def test_lidar_free_space_stops_at_the_ground_layer():
    """Voxels of the ground layer that a grazing ray crosses before its return hold ground: never free."""
    from autolabel.dts.pseudo import lidar_free_and_hits

    K, T = _front_camera()
    depth = _ground_depth(K, T)
    road = torch.full(depth.shape, ROAD, dtype=torch.uint8)
    free_naive, hit = lidar_free_and_hits(depth, K.double(), T.double(), GRID)
    free, hit2 = lidar_free_and_hits(depth, K.double(), T.double(), GRID, road)
    assert torch.equal(hit, hit2)
    assert hit[..., 2].any() and not hit[..., :2].any() and not hit[..., 3:].any()  # returns: the ground layer
    assert free_naive[..., 2].sum() > 100  # without labels the carve runs through the ground layer
    assert not free[..., 2].any()  # with them it stops at the layer's top
    assert torch.equal(free[..., 3:], free_naive[..., 3:])  # and frees the air above exactly as before
    unknown = torch.full(depth.shape, 255, dtype=torch.uint8)
    assert torch.equal(lidar_free_and_hits(depth, K.double(), T.double(), GRID, unknown)[0], free_naive)
