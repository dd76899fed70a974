"""occnet: shapes, the view transform's geometry, losses, rays, training, checkpoints, memory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from occnet.config import LossConfig, NetworkConfig, RenderConfig, TrainConfig
from occnet.inference import predict
from occnet.losses import silog, voxel_log_probs
from occnet.fractions import to_fraction
from occnet.network import IMAGE_MEAN, IMAGE_STD, OccupancyNetwork, ViewTransform, normalise_images
from occnet.rays import sample_rays
from occnet.trainer import StepBatches, Trainer
from tiny_models import TINY_GRID

GRID = TINY_GRID  # the grid of conftest's tiny_world, which tiny_dataset reads
SIZE = (64, 112)


def tiny_config(**kw) -> NetworkConfig:
    base = dict(grid=GRID, image_size=SIZE, depth_bins=16, depth_max=25.0, context_channels=8, voxel_channels=8)
    base.update(kw)
    return NetworkConfig(**base)


@pytest.fixture(scope="module")
def tiny_dataset(tiny_world):
    """conftest's world (1 scene x 2 keyframes of seed 5 at 112x200 on GRID, a session fixture)."""
    from autolabel.data.nuscenes import NuScenesFrames
    from autolabel.network_input import FrameDataset

    return FrameDataset(NuScenesFrames(tiny_world, "v1.0-synth", grid=GRID), SIZE, labels="exact")


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="backbone must be one of"):
        NetworkConfig(backbone="vgg")
    with pytest.raises(ValueError, match="divisible by feature_stride"):
        NetworkConfig(image_size=(250, 704))
    with pytest.raises(ValueError, match="voxel_downsample 3 must divide"):
        NetworkConfig(voxel_downsample=3)
    with pytest.raises(ValueError, match="RenderConfig.mode"):
        RenderConfig(mode="cubic")
    assert LossConfig().rendering_only and not LossConfig(labels_3d=1).rendering_only


@pytest.mark.parametrize("stride,deepest", [(8, 2), (16, 3)])
def test_the_image_encoder_runs_only_the_layers_it_reads(stride, deepest):
    """At stride 8 the features read layer2 and layer3: layer4 is not run (it was, and its output thrown away)."""
    from occnet.network import ImageEncoder

    enc = ImageEncoder(tiny_config(feature_stride=stride), pretrained=False)
    ran = []
    for i, layer in enumerate(enc.layers):
        layer.register_forward_hook(lambda m, a, out, i=i: ran.append(i))
    out = enc(torch.randn(1, 3, *SIZE))
    assert ran == list(range(deepest + 1)) and out.shape[-2:] == (SIZE[0] // stride, SIZE[1] // stride)


def test_network_shapes_and_dtypes(tiny_dataset):
    model = OccupancyNetwork(tiny_config())
    item = tiny_dataset[0]
    assert item["images"].shape == (6, 3, *SIZE) and item["depth"].shape == (6, *SIZE)
    out = model(item["images"][None], item["intrinsics"][None], item["cam2ego"][None], item["depth"][None])
    assert out.density.shape == (1, *GRID.shape) and out.density.dtype == torch.float32 and (out.density >= 0).all()
    assert out.logits.shape == (1, *GRID.shape, 17)
    sem, conf = predict(model, item["images"][None], item["intrinsics"][None], item["cam2ego"][None])
    assert sem.dtype == torch.uint8 and sem.shape == (1, *GRID.shape) and int(sem.max()) <= 17
    assert conf.dtype == torch.float32 and 0 <= float(conf.min()) and float(conf.max()) <= 1


def test_uint8_images_are_normalised_by_the_network_as_the_loader_did(tiny_dataset):
    """Items carry uint8 pixels (a quarter of float32's bytes through pinned memory and onto the GPU); the
    network normalises them exactly as the loader's NumPy code did before, so its output is unchanged."""
    item = tiny_dataset[0]
    assert item["images"].dtype == torch.uint8
    pixels = item["images"].numpy()
    mean, std = (np.array(v, np.float32)[:, None, None] for v in (IMAGE_MEAN, IMAGE_STD))
    before = torch.from_numpy((pixels.astype(np.float32) / 255 - mean) / std)  # the loader's former arithmetic
    assert torch.equal(normalise_images(item["images"]), before)
    assert normalise_images(before) is before  # float input is taken as normalised
    torch.manual_seed(0)
    model = OccupancyNetwork(tiny_config()).eval()
    args = (item["intrinsics"][None], item["cam2ego"][None])
    with torch.no_grad():
        a, b = model(item["images"][None], *args), model(before[None], *args)
    assert torch.equal(a.density, b.density) and torch.equal(a.logits, b.logits)


def test_a_training_step_is_the_same_with_confidence_levels_or_fractions(tiny_dataset, tmp_path):
    """The trainer decodes uint8 confidence levels (what the cache and fused labels hand over) on its device:
    the step's losses equal those of the same batch given as float fractions."""
    item = tiny_dataset[0]
    levels = (item["confidence"] * 255).round().to(torch.uint8)
    fused = torch.randint(0, 256, GRID.shape, generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    batch = {k: v[None] for k, v in item.items() if torch.is_tensor(v)}
    batch["fused_semantics"] = torch.full((1, *GRID.shape), 3, dtype=torch.uint8)
    as_levels = {**batch, "confidence": levels[None], "fused_confidence": fused[None]}
    as_fractions = {**batch, "confidence": to_fraction(levels)[None], "fused_confidence": to_fraction(fused)[None]}
    assert as_fractions["confidence"].dtype == torch.float32
    losses = []
    for b in (as_levels, as_fractions):
        trainer = _trainer(tmp_path, loss=LossConfig(fused_3d=1.0))
        with torch.no_grad():
            losses.append({k: float(v) for k, v in trainer.losses(b, 0).items()})
    assert losses[0] == losses[1] and "fused3d" in losses[0]


@pytest.mark.parametrize("power", [0.0, 1.0, 4.0])
def test_fused_targets_weigh_a_voxel_by_its_confidence_to_the_power(tiny_dataset, tmp_path, monkeypatch, power):
    """loss.fused_confidence_power p: the fused term's voxel weights are confidence ** p, and a voxel of
    confidence 0 stays out at every p (0 ** 0 would let it in); loss.fused_agreement_power reaches the loss."""
    import occnet.trainer as trainer_module

    seen, ce = [], trainer_module.voxel_ce

    def spy(density, logits, target, weight, *args):
        seen.append((target.clone(), weight.clone(), args))
        return ce(density, logits, target, weight, *args)

    item = tiny_dataset[0]
    batch = {k: v[None] for k, v in item.items() if torch.is_tensor(v)}
    batch["has_gt"] = torch.zeros(1, dtype=torch.bool)  # fused targets count on frames without 3D labels
    g = torch.Generator().manual_seed(2)
    levels = torch.randint(0, 256, GRID.shape, generator=g, dtype=torch.uint8)
    levels.view(-1)[::7] = 0
    batch["fused_semantics"] = torch.randint(0, 18, (1, *GRID.shape), generator=g, dtype=torch.uint8)
    batch["fused_confidence"] = levels[None]
    loss = LossConfig(fused_3d=1.0, fused_confidence_power=power, fused_agreement_power=0.5, fused_name_range=3.0)
    trainer = _trainer(tmp_path, loss=loss)
    monkeypatch.setattr(trainer_module, "voxel_ce", spy)
    with torch.no_grad():
        trainer.losses(batch, 0)
    (target, weight, args), conf = seen[-1], to_fraction(levels)[None]
    assert torch.equal(target, batch["fused_semantics"])
    assert args[3] == 0.5  # the agreement power
    # loss.fused_name_range: the names within 3 m of the ego (horizontally) are trained, the others not
    centres = GRID.index_to_world(torch.stack(torch.meshgrid(*map(torch.arange, GRID.shape), indexing="ij"), -1))
    near = centres[..., :2].norm(dim=-1) <= 3.0
    assert near.any() and not near.all()
    assert torch.equal(args[4].expand(GRID.shape) > 0, near)
    assert torch.equal(weight == 0, conf == 0)
    torch.testing.assert_close(weight[conf > 0], conf[conf > 0] ** power)


def test_view_transform_puts_a_feature_into_its_voxel():
    cfg = tiny_config(context_channels=2, depth_bins=16)
    vt = ViewTransform(cfg, cfg.depth_bins + cfg.context_channels)
    with torch.no_grad():  # the head passes its input through: channels = depth logits, then context
        vt.head.weight.zero_()
        vt.head.bias.zero_()
        vt.head.weight[:, :, 0, 0] = torch.eye(cfg.depth_bins + cfg.context_channels)
    K = torch.tensor([[60.0, 0, 56], [0, 60.0, 32], [0, 0, 1]])
    cam2ego = torch.eye(4)
    cam2ego[:3, :3] = torch.tensor([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # camera looks along ego +x
    cam2ego[:3, 3] = torch.tensor([0.5, 0.0, 1.5])
    h, w = cfg.feature_size
    row, col, k = 2, 4, 5  # feature cell and depth bin (9 m: inside the 12.8 m grid)
    s = cfg.feature_stride
    depth = cfg.depth_min + k * cfg.depth_step
    u, v = (col + 0.5) * s, (row + 0.5) * s
    p_cam = depth * torch.linalg.inv(K) @ torch.tensor([u, v, 1.0])
    p_ego = cam2ego[:3, :3] @ p_cam + cam2ego[:3, 3]
    feats = torch.zeros(1, cfg.depth_bins + cfg.context_channels, h, w)
    feats[0, k, row, col] = 50.0  # a sharp depth at bin k for that cell
    feats[0, cfg.depth_bins, row, col] = 1.0  # context channel 0 is set only there
    with torch.no_grad():
        voxels, prob = vt(feats, K[None, None], cam2ego[None, None])
    ctx = voxels[0, 0]
    expected = torch.floor(
        (p_ego - torch.tensor(GRID.range_min)) / (torch.tensor(GRID.voxel_size) * cfg.voxel_downsample)
    ).long()
    assert grid_contains(expected, cfg.coarse_shape)
    assert tuple(torch.nonzero(ctx > 1e-6).flatten().tolist()) == tuple(expected.tolist())
    assert float(ctx[tuple(expected)]) > 0.5 and float(prob[0, 0, k, row, col]) > 0.99


def grid_contains(idx: torch.Tensor, shape) -> bool:
    return all(0 <= int(i) < n for i, n in zip(idx, shape))


def test_depth_prior_sharpens_the_distribution():
    cfg = tiny_config()
    vt = ViewTransform(cfg, 16)
    feats = torch.randn(1, 16, *cfg.feature_size)
    K = torch.tensor([[60.0, 0, 56], [0, 60.0, 32], [0, 0, 1]])[None, None]
    T = torch.eye(4)[None, None]
    depth = torch.zeros(1, 1, *SIZE)
    depth[0, 0, :16, :16] = 10.0  # LiDAR hits the top-left feature cell
    v0, p0 = vt(feats, K, T)
    v1, own = vt(feats, K, T, depth)
    p1 = vt.sharpen(p0, depth)
    k = (10.0 - cfg.depth_min) / cfg.depth_step
    near = (torch.arange(cfg.depth_bins) - k).abs() <= 1.5  # bins within 1.5 of the prior (sigma = 1 bin)
    assert p1[0, 0, near, 0, 0].sum() > 0.6 > p0[0, 0, near, 0, 0].sum()
    torch.testing.assert_close(p1[0, 0, :, 2:, 2:], p0[0, 0, :, 2:, 2:])  # no prior, no change
    # the features are lifted with the sharpened distribution; the one returned (what the depth-bin loss
    # supervises) is the network's own, so that a frame given the prior does not satisfy that loss by construction
    assert not torch.allclose(v1, v0)
    torch.testing.assert_close(own, p0)


def test_losses():
    t = torch.tensor([2.0, 5.0, 10.0])
    w = torch.ones(3)
    assert silog(t, t, w).item() < 1e-3
    # a global scale error costs sqrt(1 - lambda) |log scale|
    assert silog(t * 2, t, w, 0.85).item() == pytest.approx(math.sqrt(0.15) * math.log(2), rel=1e-4)
    dens = torch.rand(1, 4, 4, 2) * 3
    logits = torch.randn(1, 4, 4, 2, 17)
    lp = voxel_log_probs(dens, logits, 0.4)
    torch.testing.assert_close(lp.logsumexp(-1), torch.zeros(1, 4, 4, 2), atol=1e-5, rtol=0)


def test_line_of_sight_wants_free_space_then_a_stop_at_the_lidar_return():
    from occnet.losses import line_of_sight
    from occnet.rays import RayBatch

    n = 8
    rays = RayBatch(
        origins=torch.zeros(n, 3),
        directions=torch.tensor([[1.0, 0, 0]]).repeat(n, 1),
        batch_index=torch.zeros(n, dtype=torch.long),
        z_per_metre=torch.ones(n),
        depth=torch.full((n,), 6.1),
        semantics=torch.zeros(n, dtype=torch.long),
        confidence=torch.ones(n),
        weight=torch.ones(n),
    )
    cfg = RenderConfig()
    x = torch.arange(GRID.shape[0]) * 0.4 - 12.8 + 0.2  # voxel centres along x
    wall = torch.zeros(1, *GRID.shape)
    wall[0, (x - 6.1).abs() < 0.2] = 60.0  # the voxel of the return
    fog = torch.full((1, *GRID.shape), 0.3, requires_grad=True)  # the same expected depth is reachable by fog
    sharp = line_of_sight(wall, rays, GRID, cfg, margin=0.4).item()
    loss = line_of_sight(fog, rays, GRID, cfg, margin=0.4)
    assert sharp < 0.01 < 1.0 < loss.item()
    loss.backward()
    g = fog.grad[0, :, GRID.shape[1] // 2, 2]  # the voxels the rays cross (y = 0, z = 0)
    assert (g[(x > 0.4) & (x < 5.5)] > 0).all()  # before the return: less density
    assert (g[(x - 6.1).abs() < 0.2] < 0).all()  # at the return: more


def test_ray_sampling_balances_classes_and_keeps_rays_in_the_grid():
    n, h, w = 1, 40, 60
    K = torch.tensor([[[30.0, 0, 30], [0, 30.0, 20], [0, 0, 1]]])
    T = torch.eye(4)[None]
    T[0, :3, :3] = torch.tensor([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])
    depth = torch.full((n, h, w), 5.0)
    depth[:, :, :10] = 50.0  # outside the 12.8 m grid: never supervised
    sem = torch.full((n, h, w), 15, dtype=torch.uint8)  # manmade (a wall): its depth target is the return
    sem[:, 18:22, 30:34] = 4  # a rare class: 16 of 2,400 pixels, near the centre (inside the grid)
    conf = torch.ones(n, h, w)
    rays = sample_rays(K, T, depth, sem, conf, 4000, 1.0, torch.Generator().manual_seed(0), grid=GRID)
    frac = (rays.semantics == 4).float().mean().item()
    assert frac > 0.3  # fully balanced: about half the rays, against 0.7% of the pixels
    assert (rays.depth == 5.0).all()
    torch.testing.assert_close(rays.directions.norm(dim=1), torch.ones(4000))


def _trainer(tmp_path, steps=20, loss=None, **kw):
    torch.manual_seed(0)
    model = OccupancyNetwork(tiny_config())
    return Trainer(
        model,
        RenderConfig(rays_per_frame=1024),
        loss or LossConfig(),
        TrainConfig(steps=steps, warmup_steps=2, lr=2e-3, checkpoint_every=5, **kw),
        tmp_path,
    )


def test_training_draws_semantic_rays_where_the_recipe_says(tiny_dataset, tmp_path, monkeypatch):
    """render.semantic_rays / semantic_share reach the ray sampler of the training step."""
    import occnet.trainer as trainer_module

    drawn = []

    def spy(*args, **kw):
        rays = sample_rays(*args, **kw)
        drawn.append(((kw.get("semantic_rays"), kw.get("semantic_share")), int((rays.depth == 0).sum())))
        return rays

    monkeypatch.setattr(trainer_module, "sample_rays", spy)
    torch.manual_seed(0)
    trainer = Trainer(
        OccupancyNetwork(tiny_config()),
        RenderConfig(rays_per_frame=256, semantic_rays="all", semantic_share=0.25),
        LossConfig(),
        TrainConfig(steps=1, warmup_steps=1, checkpoint_every=5),
        tmp_path,
    )
    hist = trainer.fit(tiny_dataset, workers=0, progress=False)
    assert drawn and all(mode == ("all", 0.25) for mode, _ in drawn)
    assert any(n == 64 for _, n in drawn)  # a quarter of the rays at labelled pixels without a return
    assert math.isfinite(hist[-1]["sem2d"])


def test_the_depth_prior_reaches_the_training_forward_pass_on_its_share_of_frames(tiny_dataset, tmp_path):
    """train.depth_prior_share: the student's forward pass gets the LiDAR depth maps of the drawn frames (zeros,
    no prior, for the rest), so that the depth-aware teacher made of its weights has seen the prior; a draw is a
    function of (seed, step, position)."""
    trainer = _trainer(tmp_path, steps=2, depth_prior_share=1.0)
    seen = []
    forward = trainer.model.forward

    def spy(images, intrinsics, cam2ego, depth_maps=None):
        seen.append(depth_maps)
        return forward(images, intrinsics, cam2ego, depth_maps)

    trainer.model.forward = spy
    trainer.fit(tiny_dataset, workers=0, progress=False)
    assert len(seen) == 2 and all(d is not None and bool((d > 0).any()) for d in seen)

    depth = torch.ones(2, 6, *SIZE)
    assert _trainer(tmp_path / "off").prior_depth({"depth": depth}, 0, 0) is None  # the default: never
    half = _trainer(tmp_path / "half", depth_prior_share=0.5)
    drawn = []
    for step in range(200):
        d = half.prior_depth({"depth": depth}, step, 0)
        got = torch.zeros(2, dtype=torch.bool) if d is None else d.flatten(1).amax(1) > 0
        assert d is None or torch.equal(d[got], depth[got]) and bool((d[~got] == 0).all())
        drawn.append(got)
        again = half.prior_depth({"depth": depth}, step, 0)
        assert (again is None) == (d is None) and (d is None or torch.equal(again, d))
    share = torch.stack(drawn).float().mean()
    assert 0.4 < share < 0.6, share
    with pytest.raises(ValueError, match="depth_prior_share"):
        TrainConfig(depth_prior_share=1.5)


def test_training_reduces_each_loss(tiny_dataset, tmp_path):
    hist = _trainer(tmp_path / "a", steps=24, loss=LossConfig(labels_3d=1.0)).fit(
        tiny_dataset, workers=0, progress=False
    )
    for term in ("depth", "sem2d", "labels3d"):
        first = np.mean([h[term] for h in hist[:4]])
        last = np.mean([h[term] for h in hist[-4:]])
        assert last < first, (term, first, last)


def test_checkpoint_resume_continues_the_same_curve(tiny_dataset, tmp_path):
    full = _trainer(tmp_path / "full", steps=10).fit(tiny_dataset, workers=0, progress=False)
    first = _trainer(tmp_path / "resumed", steps=10).fit(tiny_dataset, workers=0, progress=False, until=5)  # "crash"
    resumed = _trainer(tmp_path / "resumed", steps=10)
    rest = resumed.fit(tiny_dataset, workers=0, progress=False)
    assert resumed.step == 10 and len(first) == 5 and len(rest) == 5
    for a, b in zip(full, first + rest):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    ref = _trainer(tmp_path / "full", steps=10)
    assert ref.load()
    for (name, p), q in zip(ref.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert ref.optimizer.state_dict()["state"].keys() == resumed.optimizer.state_dict()["state"].keys()


def test_step_batches_are_a_function_of_the_step():
    a = StepBatches(7, 2, 0, 10, seed=3)
    b = StepBatches(7, 2, 4, 10, seed=3)
    assert list(a)[4:] == list(b)
    assert sorted(sum(list(a)[:4], [])[:7]) == list(range(7))  # an epoch visits every frame once


def test_labelled_frames_take_their_share_of_every_step():
    one = StepBatches(100, 4, 0, 50, seed=1, priority=[7, 42], share=0.25)
    steps = list(one)
    assert all(b[0] in (7, 42) for b in steps)  # one of four positions, every step
    assert sorted(b[0] for b in steps[:2]) == [7, 42]  # cycling through the labelled frames
    rest = [i for b in steps for i in b[1:]]
    assert len(set(rest[:100])) == 100  # the other positions still run through the whole pool
    # two ranks of 2 frames see the same global batch as one process of 4
    r0 = StepBatches(100, 2, 0, 50, seed=1, rank=0, world=2, priority=[7, 42], share=0.25)
    r1 = StepBatches(100, 2, 0, 50, seed=1, rank=1, world=2, priority=[7, 42], share=0.25)
    assert [a + b for a, b in zip(r0, r1)] == steps
    # one frame per step: every 4th step is a labelled frame, the others still cover the pool
    single = list(StepBatches(10, 1, 0, 40, seed=2, priority=[3], share=0.25))
    assert [b[0] for b in single[::4]] == [3] * 10
    assert sorted([b[0] for i, b in enumerate(single) if i % 4][:10]) == list(range(10))  # one epoch of the pool
    # nothing labelled, or everything: plain epochs
    assert list(StepBatches(7, 2, 0, 10, seed=3, priority=[], share=0.25)) == list(StepBatches(7, 2, 0, 10, seed=3))


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


@pytest.mark.slow(114)
def test_rendering_only_training_learns_the_scene(tiny_dataset, tmp_path):
    """Rendering losses alone (LiDAR depth + exact 2D labels, no 3D label) on a tiny synthetic scene
    reach an Occ3D mIoU and geometric IoU well above an untrained network and a constant-class guess.
    Measured (seed 5 world, 2 frames, 150 steps of 2,048 rays at lr 8e-3: 42.2 / 79.3 against 0.9 / 14.3 for the
    constant class; 40.7-45.0 / 79.3-82.3 over three seeds and two thread counts): see docs/ARCHITECTURE.md,
    "Learning test". The same training checks that host memory does not grow with the steps (a test of its own
    before, 70 more steps of the suite's longest-running kind)."""
    from occnet.metrics import OccupancyMetric

    torch.manual_seed(0)
    cfg = tiny_config(context_channels=16, voxel_channels=16, feature_stride=8, voxel_downsample=1, depth_bins=24)
    model = OccupancyNetwork(cfg)

    def scores(predict_fn):
        metric = OccupancyMetric()
        for i in range(len(tiny_dataset)):
            item = tiny_dataset[i]
            metric.update(predict_fn(item), item["gt_semantics"], item["gt_mask"])
        return metric.compute()

    def model_fn(item):
        return predict(model, item["images"][None], item["intrinsics"][None], item["cam2ego"][None])[0][0]

    untrained = scores(model_fn)
    counts = sum(
        np.bincount(tiny_dataset[i]["gt_semantics"].numpy()[tiny_dataset[i]["gt_mask"].numpy() > 0], minlength=18)
        for i in range(len(tiny_dataset))
    )
    constant_cls = int(np.argmax(counts[:17]))
    constant = scores(lambda item: torch.full(GRID.shape, constant_cls, dtype=torch.uint8))
    trainer = Trainer(
        model,
        RenderConfig(rays_per_frame=2048),
        LossConfig(silog_lambda=0.0),
        TrainConfig(steps=150, warmup_steps=10, lr=8e-3, checkpoint_every=1000),
        tmp_path,
    )
    rss = []
    trainer.fit(tiny_dataset, workers=0, progress=False, on_log=lambda step, logs: rss.append(_rss_mb()))
    growth = max(rss[40:]) - rss[20]
    # measured +5.5 MB from step 20 to 200 on the CI-class machine (0-5 MB from step 20 to 70 in the test of its
    # own before); a per-step leak of even 0.25 MB (a float64 map of one 64x112 camera is 57 KB) would exceed the
    # bound over these 130 steps
    assert growth < 30, f"RSS grew {growth:.1f} MB from step 20 to {len(rss)}"
    trained = scores(model_fn)
    print(
        f"untrained mIoU {untrained.miou:.3f} geo {untrained.geometric_iou:.3f}; constant ({constant_cls}) "
        f"mIoU {constant.miou:.3f} geo {constant.geometric_iou:.3f}; trained mIoU {trained.miou:.3f} "
        f"geo {trained.geometric_iou:.3f}; host memory {growth:+.1f} MB from step 20"
    )
    # margins a third of the measured gains: a loaded machine once gave 26 / 33 where an idle one gave 34 / 46
    assert trained.miou > max(untrained.miou, constant.miou) + 0.15
    assert trained.geometric_iou > max(untrained.geometric_iou, constant.geometric_iou) + 0.2


def test_auxiliary_keyframes_are_moved_into_the_current_ego_frame(tiny_dataset, tmp_path):
    from autolabel.network_input import FrameDataset

    ds = FrameDataset(tiny_dataset.frames, SIZE, labels="exact", aux_frames=1)
    first, second = ds[0], ds[1]
    assert first["aux_valid"].tolist() == [False, True] and second["aux_valid"].tolist() == [True, False]
    # the next keyframe's cameras sit where the ego will be 0.5 s later: ahead along the ego's x axis
    ahead = first["aux_cam2ego"][1, :, :3, 3] - first["cam2ego"][:, :3, 3]
    assert (ahead[:, 0] > 2.0).all() and ahead[:, 1:].abs().max() < 0.3
    torch.testing.assert_close(
        second["aux_cam2ego"][0, :, :3, 3] - second["cam2ego"][:, :3, 3], -ahead, atol=0.05, rtol=0
    )
    trainer = Trainer(
        OccupancyNetwork(tiny_config()),
        RenderConfig(rays_per_frame=256, aux_rays_per_frame=128),
        LossConfig(),
        TrainConfig(steps=2, warmup_steps=1),
        tmp_path,
    )
    batch = {k: (v[None] if torch.is_tensor(v) else v) for k, v in first.items()}
    logs = trainer.train_step(batch)
    assert np.isfinite(logs["loss"])


def test_local_backbone_weights_are_loaded(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    model = OccupancyNetwork(tiny_config(backbone_weights=str(path)))
    torch.testing.assert_close(model.encoder.stem[0].weight, ref.conv1.weight)
    torch.save({"not": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not a resnet18 state dict"):
        OccupancyNetwork(tiny_config(backbone_weights=str(path)))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_and_inference_on_cuda(tmp_path):
    """bf16 autocast, rays sampled on the device, the CUDA render op, checkpoint round trip."""
    cfg = tiny_config()
    torch.manual_seed(0)
    n, (h, w) = 6, SIZE
    K = torch.tensor([[60.0, 0, w / 2], [0, 60.0, h / 2], [0, 0, 1]]).expand(1, n, 3, 3).contiguous()
    T = torch.eye(4).expand(1, n, 4, 4).clone()
    for c in range(n):  # six cameras around the ego, looking out horizontally
        yaw = 2 * math.pi * c / n
        R = torch.tensor([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])
        Rz = torch.tensor([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])
        T[0, c, :3, :3] = Rz @ R
        T[0, c, :3, 3] = torch.tensor([0.0, 0.0, 1.5])
    batch = {
        "images": torch.randn(1, n, 3, h, w),
        "intrinsics": K,
        "cam2ego": T,
        "depth": torch.where(torch.rand(1, n, h, w) < 0.2, torch.rand(1, n, h, w) * 8 + 2, torch.zeros(1, n, h, w)),
        "semantics": torch.randint(0, 17, (1, n, h, w), dtype=torch.uint8),
        "confidence": torch.ones(1, n, h, w),
    }
    trainer = Trainer(
        OccupancyNetwork(cfg),
        RenderConfig(rays_per_frame=2048),
        LossConfig(),
        TrainConfig(steps=3, warmup_steps=1),
        tmp_path,
        device="cuda",
    )
    logs = [trainer.train_step(batch) for _ in range(3)]
    assert all(np.isfinite(v) for log in logs for v in log.values())
    trainer.save()
    assert trainer.load() and trainer.step == 3
    sem, conf = predict(trainer.model, batch["images"].cuda(), K.cuda(), T.cuda(), batch["depth"].cuda())
    assert sem.is_cuda and sem.dtype == torch.uint8 and conf.dtype == torch.float32


def test_a_frame_with_nothing_in_the_grid_is_skipped_not_fatal(tmp_path):
    """All LiDAR beyond the grid and no 2D label: no ray to render, the step still trains the depth bins."""
    n, (h, w) = 6, SIZE
    K = torch.tensor([[60.0, 0, w / 2], [0, 60.0, h / 2], [0, 0, 1]]).expand(1, n, 3, 3).contiguous()
    T = torch.eye(4).expand(1, n, 4, 4).clone()
    T[..., :3, :3] = torch.tensor([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])
    batch = {
        "images": torch.randn(1, n, 3, h, w),
        "intrinsics": K,
        "cam2ego": T,
        "depth": torch.full((1, n, h, w), 20.0),  # 20 m ahead: outside the 12.8 m grid
        "semantics": torch.full((1, n, h, w), 255, dtype=torch.uint8),
        "confidence": torch.zeros(1, n, h, w),
    }
    trainer = Trainer(
        OccupancyNetwork(tiny_config()),
        RenderConfig(rays_per_frame=64),
        LossConfig(),
        TrainConfig(steps=2, warmup_steps=1),
        tmp_path,
    )
    logs = trainer.train_step(batch)
    assert set(logs) == {"loss", "depthbins"} and np.isfinite(logs["loss"])
