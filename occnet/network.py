"""The occupancy network: six images -> voxel density and semantic logits.

ResNet image encoder with a light FPN neck (stride 16 by default) -> LSS view transform (per-pixel
categorical depth x context features, pooled into a coarse voxel grid with one scatter-add) -> 3D
convolutions at the coarse resolution, upsampled to the GridSpec -> heads: density sigma >= 0 (softplus)
and class logits (17 semantic classes; "free" is low density, as in RenderOcc).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import NetworkConfig


def _shape(t) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def _resnet_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of torchvision's `name` (built on the meta device: no memory, no init)."""
    import torchvision

    with torch.device("meta"):
        net = getattr(torchvision.models, name)(weights=None)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


CLASSIFIER_KEYS = ("fc.weight", "fc.bias")  # a backbone file may leave the ImageNet classifier out


def _optional(key: str) -> bool:
    """Keys a backbone file may lack: the classifier (never used here) and BatchNorm's step counters, which
    torchvision's own ImageNet files predate (load_state_dict then sets them to 0)."""
    return key in CLASSIFIER_KEYS or key.endswith(".num_batches_tracked")


def backbone_state(name: str, path: str) -> dict[str, torch.Tensor]:
    """The state dict in `path`, checked against torchvision's `name` ResNet: every key present (the
    classifier's optional), no other key, every shape equal. Raises ValueError with a one-line reason
    (what the file holds instead, and which supported backbone it fits when it fits one)."""
    from .config import BACKBONES

    p = Path(path)
    if not p.is_file():
        raise ValueError("no such file" if not p.exists() else "not a file")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; the file is the problem either way
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"not a PyTorch state-dict file ({type(exc).__name__}: {first[:160]})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        what = f"a dict with keys {sorted(map(str, state))[:4]}" if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"holds {what}, not a state dict of tensors (save one with torch.save(model.state_dict(), path))"
        )

    def mismatch(arch: str) -> tuple[list[str], list[str], list[str]]:
        want = _resnet_shapes(arch)
        missing = [k for k in want if k not in state and not _optional(k)]
        unexpected = [k for k in state if k not in want]
        shapes = [
            f"{k} {_shape(state[k])} in the file, {'x'.join(map(str, want[k]))} in {arch}"
            for k in want
            if k in state and tuple(state[k].shape) != want[k] and k not in CLASSIFIER_KEYS
        ]
        return missing, unexpected, shapes

    missing, unexpected, shapes = mismatch(name)
    if missing or unexpected or shapes:
        parts = [
            f"{len(missing)} keys missing (e.g. {', '.join(missing[:2])})" if missing else "",
            f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:2])})" if unexpected else "",
            f"{len(shapes)} shapes differ (e.g. {shapes[0]})" if shapes else "",
        ]
        fits = [a for a in BACKBONES if a != name and not any(mismatch(a))]
        hint = (
            f"; it is a {fits[0]} state dict: set network.backbone: {fits[0]} or use {name} weights"
            if fits
            else f"; expected a torchvision {name} state dict"
        )
        raise ValueError(f"not a {name} state dict: {'; '.join(x for x in parts if x)}{hint}")
    return state


def _resnet(name: str, weights: str | None) -> nn.Module:
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)  # never downloads
    if weights is not None:
        try:
            state = backbone_state(name, weights)
        except ValueError as exc:
            raise ValueError(f"backbone_weights {weights}: {exc}") from None
        state = {k: v for k, v in state.items() if k not in CLASSIFIER_KEYS}  # the encoder drops fc anyway
        missing, _ = net.load_state_dict(state, strict=False)
        assert all(_optional(k) for k in missing), missing  # backbone_state checked every other key and shape
    return net


class ImageEncoder(nn.Module):
    """(B*N, 3, H, W) normalised images -> (B*N, C, H/s, W/s) features (s = feature_stride)."""

    def __init__(self, cfg: NetworkConfig, out_channels: int = 256, pretrained: bool = True):
        super().__init__()
        net = _resnet(cfg.backbone, cfg.backbone_weights if pretrained else None)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        widths = [(m[-1].conv3 if hasattr(m[-1], "conv3") else m[-1].conv2).out_channels for m in self.layers]
        level = {8: 1, 16: 2, 32: 3}[cfg.feature_stride]  # index of the layer at the output stride
        self.level = level
        self.deeper = deeper = min(level + 1, 3)  # the top-down input; forward runs no layer past it
        self.lateral = nn.Conv2d(widths[level], out_channels, 1)
        self.top = nn.Conv2d(widths[deeper], out_channels, 1) if deeper != level else None
        self.fuse = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        feats = []
        # at stride 8 layer4's output would be thrown away (its weights stay in the module: checkpoints and
        # ImageNet weights load whatever the stride)
        for layer in self.layers[: self.deeper + 1]:
            x = layer(x)
            feats.append(x)
        out = self.lateral(feats[self.level])
        if self.top is not None:
            out = out + F.interpolate(
                self.top(feats[self.level + 1]), size=out.shape[-2:], mode="bilinear", align_corners=False
            )
        return self.fuse(out)


class ViewTransform(nn.Module):
    """LSS: lift image features with a categorical depth, splat them into the coarse voxel grid."""

    def __init__(self, cfg: NetworkConfig, in_channels: int):
        super().__init__()
        self.cfg = cfg
        self.head = nn.Conv2d(in_channels, cfg.depth_bins + cfg.context_channels, 1)
        h, w = cfg.feature_size
        s = cfg.feature_stride
        v, u = torch.meshgrid((torch.arange(h) + 0.5) * s, (torch.arange(w) + 0.5) * s, indexing="ij")
        depths = cfg.depth_min + torch.arange(cfg.depth_bins) * cfg.depth_step
        self.register_buffer("pixels", torch.stack([u, v, torch.ones_like(u)], -1), persistent=False)  # (h, w, 3)
        self.register_buffer("depths", depths, persistent=False)  # (D,)

    def depth_prior(self, depth_maps: torch.Tensor) -> torch.Tensor:
        """(B, N, H, W) metric depth (0 = none) -> (B, N, h, w) median depth per feature cell (0 = none).

        The median, not the nearest point: a cell spans many pixel rows, and on the ground the nearest
        point belongs to its bottom rows, which would lift the cell-centre ray's point above the ground.
        """
        s = self.cfg.feature_stride
        b, n, H, W = depth_maps.shape
        cells = F.unfold(depth_maps.reshape(b * n, 1, H, W).float(), s, stride=s)  # (B*N, s*s, h*w)
        cells = torch.where(cells > 0, cells, torch.full_like(cells, float("nan")))
        med = torch.nanmedian(cells, dim=1).values.reshape(b, n, H // s, W // s)
        return torch.nan_to_num(med, nan=0.0)

    def sharpen(self, prob: torch.Tensor, depth_maps: torch.Tensor) -> torch.Tensor:
        """Depth probabilities (B, N, D, h, w) sharpened around the LiDAR depth (B, N, H, W; 0 = none) of each
        feature cell that has one (a Gaussian of `depth_prior_sigma` bins), unchanged where none."""
        cfg = self.cfg
        prior = self.depth_prior(depth_maps)
        k = (prior - cfg.depth_min) / cfg.depth_step  # bin coordinate (B, N, h, w)
        bins = torch.arange(cfg.depth_bins, device=prior.device, dtype=prob.dtype)[None, None, :, None, None]
        g = torch.exp(-0.5 * ((bins - k[:, :, None]) / cfg.depth_prior_sigma) ** 2)
        sharpened = prob * g
        sharpened = sharpened / sharpened.sum(2, keepdim=True).clamp_min(1e-12)
        return torch.where((prior > 0)[:, :, None], sharpened, prob)

    def geometry(self, intrinsics: torch.Tensor, cam2ego: torch.Tensor) -> torch.Tensor:
        """Ego-frame points (B, N, D, h, w, 3) of every frustum cell; intrinsics belong to the input image."""
        rays = torch.einsum("bnij,hwj->bnhwi", torch.linalg.inv(intrinsics), self.pixels)  # z = 1 per pixel
        pts = rays[:, :, None] * self.depths[None, None, :, None, None, None]  # (B, N, D, h, w, 3), z-depth
        R, t = cam2ego[..., :3, :3], cam2ego[..., :3, 3]
        return torch.einsum("bnij,bndhwj->bndhwi", R, pts) + t[:, :, None, None, None]

    def forward(
        self,
        feats: torch.Tensor,
        intrinsics: torch.Tensor,
        cam2ego: torch.Tensor,
        depth_maps: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B*N, C, h, w) -> coarse voxel features (B, Cc + 2, Xc, Yc, Zc) and the network's own depth
        probabilities (B, N, D, h, w), before any LiDAR prior (what the depth-bin loss supervises); `depth_maps`
        (B, N, H, W) sharpens the distribution the features are lifted with."""
        cfg = self.cfg
        b, n = intrinsics.shape[:2]
        out = self.head(feats)
        logits = out[:, : cfg.depth_bins].reshape(b, n, cfg.depth_bins, *out.shape[-2:])
        context = out[:, cfg.depth_bins :].reshape(b, n, cfg.context_channels, *out.shape[-2:])
        own = logits.float().softmax(2)
        # the depth-aware teacher (and the student on train.depth_prior_share of its frames) lifts with the prior
        prob = own if depth_maps is None else self.sharpen(own, depth_maps)
        pts = self.geometry(intrinsics.float(), cam2ego.float())
        grid = cfg.grid
        coarse = cfg.coarse_shape
        lo = torch.tensor(grid.range_min, device=pts.device)
        vs = torch.tensor(grid.voxel_size, device=pts.device) * cfg.voxel_downsample
        idx = torch.floor((pts - lo) / vs).long()  # (B, N, D, h, w, 3)
        inside = ((idx >= 0) & (idx < torch.tensor(coarse, device=idx.device))).all(-1)
        flat = (
            (torch.arange(b, device=idx.device)[:, None, None, None, None] * coarse[0] + idx[..., 0]) * coarse[1]
            + idx[..., 1]
        ) * coarse[2] + idx[..., 2]
        # Lifted features: depth probability x context, for the cells that land in the grid, plus the
        # probability itself and a count. A voxel gets the probability-weighted mean of the context and
        # the mean depth probability of the cells it holds: sums would grow with the number of frustum
        # cells per voxel, which is largest next to the cameras, whatever the scene.
        p = prob[inside][:, None]  # (M, 1)
        ctx = context.float()[:, :, None].expand(-1, -1, cfg.depth_bins, -1, -1, -1).permute(0, 1, 2, 4, 5, 3)[inside]
        lifted = torch.cat([p * ctx, p, torch.ones_like(p)], 1)  # (M, Cc + 2)
        n_vox = b * coarse[0] * coarse[1] * coarse[2]
        sums = torch.zeros(n_vox, cfg.context_channels + 2, device=feats.device, dtype=lifted.dtype)
        sums.index_add_(0, flat[inside], lifted)
        weight, count = sums[:, -2:-1], sums[:, -1:]
        voxels = torch.cat([sums[:, :-2] / weight.clamp_min(1e-6), weight / count.clamp_min(1.0)], 1)
        voxels = voxels.reshape(b, *coarse, cfg.context_channels + 1).permute(0, 4, 1, 2, 3)
        # height above the grid floor in [-1, 1]: 3D convolutions are blind to position, and the ground
        # and the sky sit at fixed heights in the ego frame
        z = torch.linspace(-1, 1, coarse[2], device=voxels.device, dtype=voxels.dtype)
        voxels = torch.cat([voxels, z.expand(b, 1, *coarse)], 1)
        return voxels.contiguous(), own


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class VoxelEncoder(nn.Module):
    """Coarse voxel features -> full-resolution density (B, X, Y, Z) and logits (B, X, Y, Z, K)."""

    def __init__(self, cfg: NetworkConfig):
        super().__init__()
        c = cfg.voxel_channels
        self.down = nn.Sequential(_block(cfg.context_channels + 2, c), _block(c, c))
        self.scale = cfg.voxel_downsample
        self.up = _block(c, c)
        self.density = nn.Conv3d(c, 1, 1)
        self.semantic = nn.Conv3d(c, cfg.num_classes, 1)
        nn.init.constant_(
            self.density.bias, -5.0
        )  # start nearly empty: softplus(-5) = 0.007 / m, 25% opacity over 40 m

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.down(x)
        if self.scale > 1:
            x = F.interpolate(x, scale_factor=self.scale, mode="trilinear", align_corners=False)
        x = self.up(x)
        density = F.softplus(self.density(x)[:, 0].float())
        logits = self.semantic(x).permute(0, 2, 3, 4, 1)
        return density, logits


@dataclass
class NetworkOutput:
    density: torch.Tensor  # (B, X, Y, Z) sigma >= 0 per metre
    logits: torch.Tensor  # (B, X, Y, Z, K) semantic logits
    depth_prob: torch.Tensor  # (B, N, D, h, w) the network's own, before any LiDAR prior


IMAGE_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, which torchvision's pretrained ResNets expect
IMAGE_STD = (0.229, 0.224, 0.225)


def normalise_images(images: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) uint8 pixels -> float32 (x / 255 - mean) / std; float input is taken as normalised
    already and returned as it is. Loaders hand over uint8 so that a batch moves a quarter of the bytes through
    pinned memory and onto the GPU; the arithmetic (float32, this order) matches the loaders' former NumPy
    normalisation bit for bit."""
    if images.dtype != torch.uint8:
        return images
    mean, std = _image_stats(images.device)
    return (images.float() / 255 - mean) / std


@functools.lru_cache(maxsize=None)
def _image_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, 1, 1) float32 mean and std on `device`, made once per device: a training step then copies nothing
    from the host for them."""
    return tuple(torch.tensor(v, dtype=torch.float32, device=device).view(3, 1, 1) for v in (IMAGE_MEAN, IMAGE_STD))


class OccupancyNetwork(nn.Module):
    """forward(images (B, N, 3, H, W) uint8 pixels or float normalised (`normalise_images`), intrinsics
    (B, N, 3, 3) of those images, cam2ego (B, N, 4, 4), depth_maps (B, N, H, W) optional LiDAR prior)
    -> NetworkOutput.

    pretrained=False leaves cfg.backbone_weights unread: for a network whose weights come from a checkpoint
    next (labelling, evaluation, a resumed or fine-tuned round), which then needs no backbone file."""

    def __init__(self, cfg: NetworkConfig, pretrained: bool = True):
        super().__init__()
        self.cfg = cfg
        self.encoder = ImageEncoder(cfg, pretrained=pretrained)
        self.view = ViewTransform(cfg, 256)
        self.voxels = VoxelEncoder(cfg)

    def forward(
        self,
        images: torch.Tensor,
        intrinsics: torch.Tensor,
        cam2ego: torch.Tensor,
        depth_maps: torch.Tensor | None = None,
    ) -> NetworkOutput:
        b, n = images.shape[:2]
        if tuple(images.shape[-2:]) != tuple(self.cfg.image_size):
            raise ValueError(
                f"OccupancyNetwork: images are {tuple(images.shape[-2:])}, the config expects {self.cfg.image_size}"
            )
        feats = self.encoder(normalise_images(images).flatten(0, 1))
        coarse, prob = self.view(feats, intrinsics, cam2ego, depth_maps)
        density, logits = self.voxels(coarse)
        return NetworkOutput(density=density, logits=logits, depth_prob=prob)
