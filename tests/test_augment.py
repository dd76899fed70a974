"""Training augmentation (occnet.augment) is exact: a BEV symmetry applied to the cameras and undone on the
output grid, or a mirrored camera with mirrored intrinsics, describes the same world; and the class-balanced
3D cross-entropy."""

from __future__ import annotations

import itertools

import pytest
import torch

from kernels.grid import GridSpec
from occnet.augment import BevTransform, check_bev_grid, flip_cameras
from occnet.config import LossConfig, RenderConfig, TrainConfig
from occnet.losses import voxel_ce
from occnet.network import OccupancyNetwork, ViewTransform
from occnet.rays import _pixel_rays
from occnet.trainer import Trainer
from test_occnet import GRID, SIZE, tiny_config, tiny_dataset  # noqa: F401  (module fixture)

ALL = [BevTransform(*bits) for bits in itertools.product((False, True), repeat=3)]


def _rig(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Six cameras around the ego at 1.5 m looking outwards (yaw 0, 60, ... degrees), K for SIZE."""
    K = torch.tensor([[50.0, 0, SIZE[1] / 2], [0, 50.0, SIZE[0] / 2], [0, 0, 1]]).expand(n, 3, 3)
    poses = []
    for i in range(n):
        yaw = torch.tensor(i * torch.pi / 3 + 0.1)
        fwd = torch.stack([torch.cos(yaw), torch.sin(yaw), torch.tensor(0.0)])
        left = torch.stack([-torch.sin(yaw), torch.cos(yaw), torch.tensor(0.0)])
        up = torch.tensor([0.0, 0.0, 1.0])
        T = torch.eye(4)
        T[:3, :3] = torch.stack([-left, -up, fwd], 1)  # camera x right, y down, z forward
        T[:3, 3] = torch.tensor([0.3, 0.1, 1.5])
        poses.append(T)
    return K[None].clone(), torch.stack(poses)[None]


@pytest.mark.parametrize("t", ALL[1:], ids=str)
def test_bev_transform_undone_on_the_output_grid_gives_the_unaugmented_lift(t):
    torch.manual_seed(0)
    cfg = tiny_config(context_channels=4)
    vt = ViewTransform(cfg, 24)
    K, cam2ego = _rig()
    feats = torch.randn(6, 24, *cfg.feature_size)
    with torch.no_grad():
        plain, _ = vt(feats, K, cam2ego)
        aug, _ = vt(feats, K, t.matrix().float() @ cam2ego)
    back = t.unmap(aug[0], 1)  # (C, X, Y, Z): x is dim 1
    assert plain[0].abs().sum() > 0
    # frustum points that sit exactly on a voxel face may floor to the other side after the transform's
    # rounding: the lifted grids agree everywhere else
    close = torch.isclose(back, plain[0], atol=1e-4).all(0)
    assert close.float().mean() > 0.999, close.float().mean()


def test_bev_transform_matrix_and_unmap_agree_on_voxel_centres():
    grid = GridSpec(range_min=(-2.0, -2.0, 0.0), range_max=(2.0, 2.0, 0.4), voxel_size=0.4)
    X, Y, _ = grid.shape
    i, j = torch.meshgrid(torch.arange(X), torch.arange(Y), indexing="ij")
    centre = torch.stack([-2.0 + (i + 0.5) * 0.4, -2.0 + (j + 0.5) * 0.4], -1)  # (X, Y, 2) world xy of each voxel
    for t in ALL:
        m = t.matrix()[:2, :2].float()
        # a grid in the augmented frame holding, at each voxel, the augmented coordinates of its centre ...
        aug = centre.clone()
        # ... unmapped, must hold at each original voxel p the augmented coordinates M p of that voxel
        back = t.unmap(aug, 0)
        torch.testing.assert_close(back, centre @ m.T, msg=str(t))


def test_grids_that_do_not_allow_bev_augmentation():
    assert check_bev_grid(GRID)
    assert not check_bev_grid(GridSpec(range_min=(-4.0, -2.0, 0.0), range_max=(4.0, 2.0, 0.4), voxel_size=0.4))
    with pytest.raises(ValueError, match="symmetric about the ego"):
        check_bev_grid(GridSpec(range_min=(0.0, -2.0, 0.0), range_max=(8.0, 2.0, 0.4), voxel_size=0.4))


def test_a_mirrored_camera_with_mirrored_intrinsics_casts_the_same_rays():
    K, cam2ego = _rig()
    h, w = SIZE
    batch = {
        "images": torch.randn(1, 6, 3, h, w),
        "intrinsics": K,
        "cam2ego": cam2ego,
        "depth": torch.rand(1, 6, h, w),
        "semantics": torch.randint(0, 17, (1, 6, h, w), dtype=torch.uint8),
        "confidence": torch.rand(1, 6, h, w),
    }
    flip = torch.tensor([[True, False, True, False, False, True]])
    out = flip_cameras(batch, flip)
    cam = torch.arange(6).repeat_interleave(50)
    v, u = torch.randint(0, h, (300,)), torch.randint(0, w, (300,))
    u_new = torch.where(flip[0][cam], w - 1 - u, u)
    o1, d1, z1 = _pixel_rays(K[0], cam2ego[0], cam, v, u)
    o2, d2, z2 = _pixel_rays(out["intrinsics"][0], cam2ego[0], cam, v, u_new)
    torch.testing.assert_close(d2, d1, atol=1e-6, rtol=0)
    torch.testing.assert_close(z2, z1, atol=1e-6, rtol=0)
    for key in ("images", "depth", "semantics", "confidence"):  # the maps moved with their pixels
        a, b = batch[key][0], out[key][0]
        torch.testing.assert_close(b[cam, ..., v, u_new], a[cam, ..., v, u])
    assert torch.equal(out["images"][0, 1], batch["images"][0, 1])  # unflipped cameras untouched


def test_class_balanced_voxel_ce_lifts_rare_classes_and_keeps_the_total():
    torch.manual_seed(0)
    dens = torch.rand(1, 8, 8, 2) * 3
    logits = torch.randn(1, 8, 8, 2, 17)
    target = torch.full((1, 8, 8, 2), 17, dtype=torch.uint8)  # free
    target[0, 0, 0, 0] = 4  # one car voxel among 128
    w = torch.ones(1, 8, 8, 2)
    target[0, 1:, :, 0] = 11  # 56 driveable-surface voxels
    plain = voxel_ce(dens, logits, target, w, 0.4)
    assert voxel_ce(dens, logits, target, w, 0.4, class_balance=0.0) == plain
    # free and one occupied class: balancing changes nothing (free keeps its weight, the class its total)
    one = target.clone()
    one[one == 4] = 11
    torch.testing.assert_close(voxel_ce(dens, logits, one, w, 0.4, 0.5), voxel_ce(dens, logits, one, w, 0.4))
    # a rare voxel with a large loss weighs more when balanced
    logits2 = logits.clone()
    logits2[0, 0, 0, 0, 4] = -20.0  # the car voxel is badly predicted
    assert voxel_ce(dens, logits2, target, w, 0.4, 0.5) > voxel_ce(dens, logits2, target, w, 0.4) + 0.05
    # ... at the ground's expense, not free space's: a bad free voxel costs the same either way
    dens2 = dens.clone()
    dens2[0, 0, 7, 1] = 50.0  # a free voxel predicted solid
    gap = voxel_ce(dens2, logits, target, w, 0.4) - voxel_ce(dens, logits, target, w, 0.4)
    gap_cb = voxel_ce(dens2, logits, target, w, 0.4, 0.5) - voxel_ce(dens, logits, target, w, 0.4, 0.5)
    torch.testing.assert_close(gap_cb, gap)


def test_augmented_training_is_a_function_of_the_step(tiny_dataset, tmp_path):  # noqa: F811
    def run(folder):
        torch.manual_seed(0)
        t = Trainer(
            OccupancyNetwork(tiny_config()),
            RenderConfig(rays_per_frame=256),
            LossConfig(silog_lambda=0.0, labels_3d=1.0, class_balance_3d=0.5),
            TrainConfig(steps=4, warmup_steps=1, bev_augment=True, image_flip=True),
            folder,
        )
        return [h["loss"] for h in t.fit(tiny_dataset, workers=0, progress=False)]

    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    assert a == pytest.approx(b, rel=1e-5)
    assert all(torch.isfinite(torch.tensor(a)))


def test_smoothed_voxel_ce_hedges_the_name_not_the_occupancy():
    torch.manual_seed(1)
    dens = (torch.rand(1, 4, 4, 2) * 3).requires_grad_()
    logits = torch.randn(1, 4, 4, 2, 17, requires_grad=True)
    target = torch.full((1, 4, 4, 2), 17, dtype=torch.uint8)  # free
    target[0, :2] = 11
    target[0, 3, 3, 1] = 255  # ignored
    w = torch.rand(1, 4, 4, 2)
    eps = 0.2
    got = voxel_ce(dens, logits, target, w, 0.4, smoothing=eps)
    # the soft target written out: occupied voxels 1 - eps on their class + eps / 17 on each class, over
    # P(c) = o softmax_c; free voxels one-hot on free
    o = -torch.expm1(-dens * 0.4)
    logp_cls = torch.log(o)[..., None] + logits.log_softmax(-1)
    soft = torch.full_like(logits, eps / 17)
    occ = (target < 17) & (target != 255)
    soft[occ] += (1 - eps) * torch.nn.functional.one_hot(target[occ].long(), 17)
    per = torch.where(occ, -(soft * logp_cls).sum(-1), dens * 0.4)  # -log P(free) = sigma * voxel_size
    keep = target != 255
    want = (w * per)[keep].sum() / w[keep].sum()
    torch.testing.assert_close(got, want)
    # occupancy untouched: the density gradient equals the unsmoothed loss's
    g_s = torch.autograd.grad(got, dens)[0]
    g_0 = torch.autograd.grad(voxel_ce(dens, logits, target, w, 0.4), dens)[0]
    torch.testing.assert_close(g_s, g_0)
    # off is the plain loss, bit for bit
    assert torch.equal(voxel_ce(dens, logits, target, w, 0.4, smoothing=0.0), voxel_ce(dens, logits, target, w, 0.4))


def test_voxel_ce_name_weight_scales_the_names_and_leaves_the_occupancy_whole():
    torch.manual_seed(3)
    dens = (torch.rand(2, 4, 4, 2) * 3).requires_grad_()
    logits = torch.randn(2, 4, 4, 2, 17, requires_grad=True)
    target = torch.randint(0, 18, (2, 4, 4, 2), dtype=torch.uint8)
    target[0, 0, 0, 0] = 255
    w = torch.rand(2, 4, 4, 2)
    v = torch.rand(4, 4, 1)  # one weight per column, as loss.fused_name_range makes them
    got = voxel_ce(dens, logits, target, w, 0.4, class_balance=0.5, name_weight=v)
    # written out (class balance as voxel_ce weighs it): -log o + v * (-log softmax_c) for occupied voxels
    log_o = torch.log(-torch.expm1(-dens * 0.4))
    occ = (target < 17) & (target != 255)
    c = torch.where(occ, target.long(), torch.zeros_like(target.long()))
    name = -logits.log_softmax(-1).gather(-1, c[..., None])[..., 0]
    per = torch.where(occ, -log_o + v * name, dens * 0.4)
    keep = target != 255
    mass = torch.bincount(target[keep].long(), weights=w[keep], minlength=18)
    mass[-1] = 0
    cw = torch.where(mass > 0, (mass / mass.sum()).clamp_min(1e-12) ** -0.5, torch.zeros_like(mass))
    cw = cw * mass.sum() / (cw * mass).sum()
    cw[-1] = 1
    wb = w[keep] * cw[target[keep].long()]
    torch.testing.assert_close(got, (wb * per[keep]).sum() / wb.sum())
    # the density gradient is the plain loss's; with weight 0 an occupied voxel's name pulls nothing
    g = torch.autograd.grad(got, (dens, logits))
    torch.testing.assert_close(g[0], torch.autograd.grad(voxel_ce(dens, logits, target, w, 0.4, 0.5), dens)[0])
    zero = voxel_ce(dens, logits, target, w, 0.4, name_weight=torch.zeros(4, 4, 1))
    plain = torch.autograd.grad(voxel_ce(dens, logits, target, w, 0.4), logits)[0]
    # to rounding: log o is read back as the logsumexp of the occupied classes' log-probabilities
    assert torch.autograd.grad(zero, logits)[0].abs().max() < 1e-6 * plain.abs().max()
    # weight 1 is the plain loss
    ones = voxel_ce(dens, logits, target, w, 0.4, name_weight=torch.ones(4, 4, 1))
    torch.testing.assert_close(ones, voxel_ce(dens, logits, target, w, 0.4))


def test_agreement_weighted_voxel_ce_scales_names_by_the_networks_own_probability_within_each_class():
    torch.manual_seed(2)
    dens = (torch.rand(1, 4, 4, 2) * 3).requires_grad_()
    logits = torch.randn(1, 4, 4, 2, 17, requires_grad=True)
    target = torch.full((1, 4, 4, 2), 17, dtype=torch.uint8)  # free
    target[0, :2] = 11  # 16 driveable-surface voxels
    target[0, 2, 0, 0] = 4  # one car voxel: alone in its class, its weight stays whatever the network says
    target[0, 3, 3, 1] = 255  # ignored
    w = torch.rand(1, 4, 4, 2)
    q = 1.5
    got = voxel_ce(dens, logits, target, w, 0.4, agreement_power=q)
    # written out: -log o + a * (-log softmax_c) for occupied voxels, a = p_c ** q / (its class's w-weighted
    # mean of p_c ** q); free voxels sigma * voxel_size
    log_o = torch.log(-torch.expm1(-dens * 0.4))
    ls = logits.log_softmax(-1)
    occ = (target < 17) & (target != 255)
    c = torch.where(occ, target.long(), torch.zeros_like(target.long()))
    name = -ls.gather(-1, c[..., None])[..., 0]
    p = torch.exp(-name).detach() ** q
    a = torch.zeros_like(p)
    for k in (4, 11):
        m = target == k
        a[m] = p[m] * w[m].sum() / (w[m] * p[m]).sum()
    per = torch.where(occ, -log_o + a * name, dens * 0.4)
    keep = target != 255
    want = (w * per)[keep].sum() / w[keep].sum()
    torch.testing.assert_close(got, want)
    assert abs(a[target == 4].item() - 1) < 1e-6
    # occupancy untouched: the density gradient equals the plain loss's
    g_a = torch.autograd.grad(got, dens)[0]
    g_0 = torch.autograd.grad(voxel_ce(dens, logits, target, w, 0.4), dens)[0]
    torch.testing.assert_close(g_a, g_0)
    # a voxel the network names otherwise pulls its logits less than one it agrees with
    plain = torch.autograd.grad(voxel_ce(dens, logits, target, w, 0.4), logits)[0]
    weighted = torch.autograd.grad(voxel_ce(dens, logits, target, w, 0.4, agreement_power=q), logits)[0]
    drive = (target == 11)[0]
    ratio = weighted[0][drive].norm(dim=-1) / plain[0][drive].norm(dim=-1)
    order = p[0][drive].argsort()
    assert ratio[order[0]] < ratio[order[-1]]
    # off is the plain loss, bit for bit
    off = voxel_ce(dens, logits, target, w, 0.4, agreement_power=0.0)
    assert torch.equal(off, voxel_ce(dens, logits, target, w, 0.4))
