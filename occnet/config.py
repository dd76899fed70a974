"""Typed configuration of the occupancy network, its rendering supervision, losses and training.

Every dataclass validates itself in `__post_init__` with errors that name the field and say what to
change; derived values are properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from kernels.grid import GridSpec

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")  # torchvision ResNets (their state dicts load)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass
class NetworkConfig:
    """Image encoder -> LSS view transform -> 3D voxel encoder -> density and semantic heads."""

    grid: GridSpec = field(default_factory=GridSpec)
    image_size: tuple[int, int] = (256, 704)  # network input (H, W)
    backbone: str = "resnet18"
    # a torchvision ResNet state dict (.pth) of `backbone`, e.g. ImageNet weights saved by torchvision (fc.* may be
    # left out); None = random initialisation. Checked by occnet.network.backbone_state (keys and shapes).
    backbone_weights: Optional[str] = None
    feature_stride: int = 16  # image features at 1/16 of the input
    context_channels: int = 32
    depth_min: float = 1.0  # metres, first depth bin centre
    depth_max: float = 45.0
    depth_bins: int = 64
    voxel_downsample: int = 2  # the view transform fills a grid this much coarser; the 3D encoder upsamples
    voxel_channels: int = 32
    num_classes: int = 17  # semantic classes 0..16; free comes from density
    depth_prior_sigma: float = 1.0  # bins: width of the LiDAR depth prior's Gaussian

    def __post_init__(self) -> None:
        _check(self.backbone in BACKBONES, f"NetworkConfig.backbone must be one of {BACKBONES}, got {self.backbone!r}")
        h, w = self.image_size
        _check(
            h % self.feature_stride == 0 and w % self.feature_stride == 0,
            f"NetworkConfig.image_size {self.image_size} must be divisible by feature_stride {self.feature_stride}",
        )
        _check(
            self.feature_stride in (8, 16, 32),
            f"NetworkConfig.feature_stride must be 8, 16 or 32, got {self.feature_stride}",
        )
        _check(0 < self.depth_min < self.depth_max, "NetworkConfig.depth_min must be > 0 and < depth_max")
        _check(self.depth_bins >= 2, "NetworkConfig.depth_bins must be >= 2")
        for axis, n in zip("xyz", self.grid.shape):
            _check(
                n % self.voxel_downsample == 0,
                f"NetworkConfig.voxel_downsample {self.voxel_downsample} must divide the grid's {axis} size {n}",
            )
        _check(self.num_classes >= 1, "NetworkConfig.num_classes must be >= 1")

    @property
    def feature_size(self) -> tuple[int, int]:
        return self.image_size[0] // self.feature_stride, self.image_size[1] // self.feature_stride

    @property
    def coarse_shape(self) -> tuple[int, int, int]:
        return tuple(n // self.voxel_downsample for n in self.grid.shape)  # type: ignore[return-value]

    @property
    def depth_step(self) -> float:
        return (self.depth_max - self.depth_min) / (self.depth_bins - 1)


@dataclass
class RenderConfig:
    """How training rays are drawn and rendered."""

    rays_per_frame: int = 38_400
    mode: str = "voxel"
    step_size: float = 0.2
    class_balance: float = 0.5  # sampling weight of a pixel ~ (1 / class frequency) ** class_balance
    aux_rays_per_frame: int = 0  # rays from each auxiliary keyframe (needs a dataset with aux_frames > 0)
    aux_weight: float = 0.5  # loss weight of rays from auxiliary keyframes
    # "occupancy": rays labelled with a ground class aim at the top of the voxel layer holding their LiDAR
    # return, where the Occ3D grid stops them (occnet.surfaces); "lidar": at the return itself
    depth_target: str = "occupancy"
    # "lidar": semantic targets only at pixels whose LiDAR return lies in the grid (a few percent of the
    # pixels); "all": also at labelled pixels LiDAR missed, semantic_share of the rays (occnet.rays)
    semantic_rays: str = "lidar"
    semantic_share: float = 0.5

    def __post_init__(self) -> None:
        _check(self.rays_per_frame > 0, "RenderConfig.rays_per_frame must be > 0")
        _check(
            self.semantic_rays in ("lidar", "all"),
            f"RenderConfig.semantic_rays must be 'lidar' or 'all', got {self.semantic_rays!r}",
        )
        _check(0 <= self.semantic_share < 1, "RenderConfig.semantic_share must lie in [0, 1)")
        _check(
            self.mode in ("voxel", "trilinear"), f"RenderConfig.mode must be 'voxel' or 'trilinear', got {self.mode!r}"
        )
        _check(self.step_size > 0, "RenderConfig.step_size must be > 0")
        _check(0 <= self.class_balance <= 1, "RenderConfig.class_balance must lie in [0, 1]")
        _check(self.aux_rays_per_frame >= 0, "RenderConfig.aux_rays_per_frame must be >= 0")
        _check(0 < self.aux_weight <= 1, "RenderConfig.aux_weight must lie in (0, 1]")
        _check(
            self.depth_target in ("occupancy", "lidar"),
            f"RenderConfig.depth_target must be 'occupancy' or 'lidar', got {self.depth_target!r}",
        )


@dataclass
class LossConfig:
    """Which losses are on and their weights. Rendering only = depth + semantics_2d + line_of_sight (+ the
    depth-bin loss on the view transform), 3D weights 0."""

    depth: float = 1.0
    silog_lambda: float = 0.85
    semantics_2d: float = 1.0
    depth_distribution: float = 1.0  # BEVDepth-style: LiDAR depth bins supervise the view transform directly
    opacity_entropy: float = 0.0  # pushes rendered opacity to 0 or 1
    # LiDAR rays through the renderer: free until one voxel before the depth target, stopped one voxel after
    # (occnet.losses.line_of_sight): the expected-depth loss alone is met by a fog spread along the ray
    line_of_sight: float = 1.0
    labels_3d: float = 0.0  # cross-entropy on voxels of frames with 3D labels (mask_camera)
    pseudo_3d: float = 0.0  # confidence-weighted cross-entropy on pseudo-labels
    # confidence-weighted cross-entropy on labels fused from the scene's evidence (batch fused_semantics /
    # fused_confidence: LiDAR over time named by voted 2D labels), on frames without 3D labels
    fused_3d: float = 0.0
    # 3D cross-entropies weigh an occupied voxel by (its class's share of the batch's occupied voxels) **
    # -class_balance_3d, free voxels unchanged (occnet.losses.voxel_ce; 0 = off). 0.5: +2.0 mIoU for the
    # 3D-supervised network on the development world, one seed (BENCHMARKS.md, benchmark v2)
    class_balance_3d: float = 0.5
    # label smoothing of the names (not the occupancy) of the 3D targets made without annotation: pseudo_3d
    # and fused_3d (occnet.losses.voxel_ce); exact 3D labels are not smoothed
    smoothing_3d: float = 0.0
    # fused_3d weighs a voxel by its fused confidence ** this power (voxels of confidence 0 stay out): above 1
    # the voxels the views disagree on or few points hit count for less than the confident ones. 4: +0.66
    # mIoU on the test world's held-out scenes over 1, 3 seeds (BENCHMARKS.md, "Trusting the fused labels by
    # their confidence"); 2 and 8 lay between, 16 below 1
    fused_confidence_power: float = 4.0
    # fused_3d weighs an occupied voxel's name (not its occupancy) by the network's own probability of that
    # name ** this power, rescaled within each class (occnet.losses.voxel_ce; 0 = off): names every view
    # got wrong alike carry full confidence, and the network trained on the rest of the pool disputes them.
    # q = 1: +0.45 mIoU on the development world, +0.17 +- 0.4 on the test world (BENCHMARKS.md, "The fused
    # labels' names weighed by the network's agreement"): no result, so off
    fused_agreement_power: float = 0.0
    # fused_3d trains the names (not the occupancy) of occupied voxels only within this horizontal distance of
    # the ego, in metres (0 = everywhere): far voxels are named from distant views alone, and whole far patches
    # are named wrong alike (BENCHMARKS.md, "Where the development world's remaining errors lie"). Measured on
    # the development world: 20 m -2.2 mIoU, 30 m -0.15 (the far ground loses its names): off
    fused_name_range: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "depth",
            "semantics_2d",
            "depth_distribution",
            "opacity_entropy",
            "line_of_sight",
            "labels_3d",
            "pseudo_3d",
            "fused_3d",
        ):
            _check(getattr(self, name) >= 0, f"LossConfig.{name} must be >= 0")
        _check(0 <= self.silog_lambda <= 1, "LossConfig.silog_lambda must lie in [0, 1]")
        _check(0 <= self.class_balance_3d <= 1, "LossConfig.class_balance_3d must lie in [0, 1]")
        _check(0 <= self.smoothing_3d < 1, "LossConfig.smoothing_3d must lie in [0, 1)")
        _check(self.fused_confidence_power >= 0, "LossConfig.fused_confidence_power must be >= 0")
        _check(self.fused_agreement_power >= 0, "LossConfig.fused_agreement_power must be >= 0")
        _check(self.fused_name_range >= 0, "LossConfig.fused_name_range must be >= 0 (metres; 0 = off)")

    @property
    def rendering_only(self) -> bool:
        return self.labels_3d == 0 and self.pseudo_3d == 0 and self.fused_3d == 0


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 1  # frames per micro-batch on each process
    accumulate: int = 1  # micro-batches per optimiser step (a step sees batch_size x accumulate x processes frames)
    lr: float = 2e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    grad_clip: float = 5.0
    checkpoint_every: int = 500
    bf16: bool = True  # autocast on CUDA only
    seed: int = 0
    # share of each step's frames drawn from the frames with 3D labels (annotated in earlier rounds), when
    # some but not all have them: a 1% budget would otherwise be seen once per hundred frames
    labelled_share: float = 0.25
    # augmentation (occnet.augment): the network sees a mirrored / rotated world or mirrored cameras; the
    # losses stay in each frame's own frame
    bev_augment: bool = False
    image_flip: bool = False
    # share of training frames whose forward pass gets the LiDAR depth prior (the view transform's depth
    # distribution sharpened around the frame's LiDAR depth, as the depth-aware DTS teacher's is), drawn per frame
    # from (seed, step, position): a network that never saw the prior meets sharpened depths it was not trained
    # on in the teacher's forward pass (the teacher is the EMA of its weights)
    depth_prior_share: float = 0.0

    def __post_init__(self) -> None:
        _check(self.steps > 0, "TrainConfig.steps must be > 0")
        _check(0 <= self.labelled_share < 1, "TrainConfig.labelled_share must lie in [0, 1)")
        _check(0 <= self.depth_prior_share <= 1, "TrainConfig.depth_prior_share must lie in [0, 1]")
        _check(self.batch_size > 0, "TrainConfig.batch_size must be > 0")
        _check(self.accumulate > 0, "TrainConfig.accumulate must be > 0")
        _check(self.lr > 0, "TrainConfig.lr must be > 0")
        _check(self.warmup_steps >= 0, "TrainConfig.warmup_steps must be >= 0")
        _check(self.checkpoint_every > 0, "TrainConfig.checkpoint_every must be > 0")
