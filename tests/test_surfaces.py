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
    out = render_rays(
        density,
        feats,
        occ.origins,
        occ.directions,
        occ.batch_index,
        torch.zeros(n),
        torch.full((n,), 100.0),
        GRID,
        mode="voxel",
        step_size=0.2,
    )
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
        rays = sample_rays(
            K, T, depth, sem, conf, 1000, 0.0, torch.Generator().manual_seed(0), grid=GRID, depth_target=target
        )
        losses[target] = line_of_sight(density, rays, GRID, RenderConfig(), margin=0.4).item()
    assert losses["occupancy"] < 1e-3 < 1.0 < losses["lidar"]


def test_occupancy_target_leaves_other_classes_alone():
    K, T = _front_camera()
    depth = _ground_depth(K, T)
    sem = torch.full(depth.shape, CAR, dtype=torch.uint8)
    conf = torch.ones_like(depth)
    occ = sample_rays(K, T, depth, sem, conf, 500, 0.0, torch.Generator().manual_seed(0), grid=GRID)
    lidar = sample_rays(
        K, T, depth, sem, conf, 500, 0.0, torch.Generator().manual_seed(0), grid=GRID, depth_target="lidar"
    )
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


def _sparse_lidar_frame():
    """The front camera over flat ground: every pixel below the horizon labelled road, a LiDAR return at
    one pixel row in eight (a 32-beam sensor's sparsity), returns beyond 25 m dropped by _ground_depth."""
    K, T = _front_camera()
    ground = _ground_depth(K, T)
    sem = torch.where(ground > 0, torch.full_like(ground, ROAD), torch.full_like(ground, 255)).to(torch.uint8)
    depth = torch.zeros_like(ground)
    depth[:, ::8] = ground[:, ::8]
    return K, T, depth, sem, torch.ones_like(depth)


def test_semantic_rays_all_add_labelled_pixels_that_lidar_missed():
    K, T, depth, sem, conf = _sparse_lidar_frame()
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    lidar = sample_rays(K, T, depth, sem, conf, 2000, 0.0, gen(), grid=GRID)
    both = sample_rays(K, T, depth, sem, conf, 2000, 0.0, gen(), grid=GRID, semantic_rays="all", semantic_share=0.25)
    assert (lidar.depth > 0).all()  # today's rays: only pixels with a return in the grid
    no_depth = both.depth == 0
    assert no_depth.sum() == 500 and (both.semantics[no_depth] == ROAD).all()
    assert (both.depth[:1500] > 0).all() and no_depth[1500:].all()
    # the added rays run through pixels without a return, rows LiDAR skipped
    pix = torch.stack([both.directions[no_depth] @ T[0, :3, :3][:, i] for i in range(3)], 1)
    v = (K[0, 1, 1] * pix[:, 1] / pix[:, 2] + K[0, 1, 2] - 0.5).round().long()
    assert (v % 8 != 0).all()
    # the first 1,500 rays are the "lidar" draw of 1,500 rays
    first = sample_rays(K, T, depth, sem, conf, 1500, 0.0, gen(), grid=GRID)
    torch.testing.assert_close(both.origins[:1500], first.origins)
    torch.testing.assert_close(both.directions[:1500], first.directions)


def test_semantic_rays_all_leave_labels_whose_return_lies_beyond_the_grid_unused():
    K, T, depth, sem, conf = _sparse_lidar_frame()
    depth = torch.where(depth > 0, torch.full_like(depth, 80.0), depth)  # every return beyond the grid
    rays = sample_rays(
        K,
        T,
        depth,
        sem,
        conf,
        400,
        0.0,
        torch.Generator().manual_seed(0),
        grid=GRID,
        semantic_rays="all",
        semantic_share=0.5,
    )
    assert (rays.depth == 0).all()  # no depth target in the grid: only the pixels without any return
    pix = torch.stack([rays.directions @ T[0, :3, :3][:, i] for i in range(3)], 1)
    v = (K[0, 1, 1] * pix[:, 1] / pix[:, 2] + K[0, 1, 2] - 0.5).round().long()
    assert (v % 8 != 0).all()


def test_a_ray_without_depth_asks_for_semantics_in_proportion_to_its_opacity():
    """A labelled ray with no LiDAR return that the network lets through the grid (its surface may lie
    beyond it) adds nothing to the semantic loss; one stopped inside the grid counts fully."""
    from occnet.losses import rendered_semantics_ce
    from occnet.rays import RayBatch, Rendered

    def batch(depth, opacity):
        n = len(depth)
        rays = RayBatch(
            origins=torch.zeros(n, 3),
            directions=torch.zeros(n, 3),
            batch_index=torch.zeros(n, dtype=torch.long),
            z_per_metre=torch.ones(n),
            depth=torch.tensor(depth),
            semantics=torch.full((n,), ROAD),
            confidence=torch.ones(n),
            weight=torch.ones(n),
        )
        probs = torch.full((n, 17), 0.01)
        probs[0, ROAD] = 0.9  # ray 0 rendered right, ray 1 wrong
        probs[1:, CAR] = 0.9
        o = torch.tensor(opacity)
        return rays, Rendered(depth=torch.zeros(n), opacity=o, probs=probs / probs.sum(1, keepdim=True) * o[:, None])

    right = rendered_semantics_ce(*reversed(batch([5.0], [1.0])))
    see_through = rendered_semantics_ce(*reversed(batch([5.0, 0.0], [1.0, 1e-6])))
    stopped = rendered_semantics_ce(*reversed(batch([5.0, 0.0], [1.0, 1.0])))
    with_depth = rendered_semantics_ce(*reversed(batch([5.0, 7.0], [1.0, 1e-6])))
    torch.testing.assert_close(see_through, right, atol=1e-4, rtol=0)
    assert stopped > 2 * right and with_depth > 2 * right
