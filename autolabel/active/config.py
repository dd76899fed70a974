"""The recipe's ``selection`` section."""

from __future__ import annotations

from dataclasses import dataclass

# fusion: uncertainty of the fused labels (`fusion.enabled`), no network (autolabel.active.pool.fusion_pool)
STRATEGIES = ("auto", "random", "stratified", "entropy", "coreset", "kmeans", "hybrid", "fusion")
UNITS = ("frame", "region")
ANNOTATIONS = ("voxels", "points")


# how manual labels reach the other keyframes of their scene in training (rounds.propagate;
# autolabel.active.propagate): not at all, static classes, static classes and free space
PROPAGATE_MODES = ("none", "static", "static_free")


@dataclass
class SelectionConfig:
    # auto: BEV tiles (unit region) of a run that fuses: `fusion`, the tiles whose fused labels are least sure,
    # rare classes first (issue 21: with 5% of the pool's voxels so chosen the test world's exported labels
    # score 71.6 mIoU, against 56.4-56.9 for random keyframes or tiles; BENCHMARKS.md). Otherwise
    # scene-stratified random while little is labelled, then hybrid (at 1-10% of the pool no network-scored
    # strategy beat random, and core-set lost to it)
    strategy: str = "auto"
    # frames, or annotation cost units when cost_model is on; with unit: region, labelled voxels (a frame of
    # the grid counts X * Y * Z voxels: 640,000 on Occ3D's 200 x 200 x 16, so 10 frames = 6,400,000)
    budget: float = 10
    cost_model: bool = False  # cost of a frame = frame_cost + voxel_cost * visible occupied voxels
    frame_cost: float = 1.0
    voxel_cost: float = 0.0001  # per occupied voxel in mask_camera (dense 3D labelling effort)
    per_scene_cap: int = 2  # neighbouring keyframes are near duplicates (frames per scene, whatever the unit)
    hybrid_factor: float = 4.0  # hybrid: top (factor x budget) by uncertainty, then diversity down to the budget
    # auto: scene-stratified random (one frame per scene before any scene's second) while labelled frames are
    # below this share of the pool
    auto_diversity_share: float = 0.05
    seed: int = 0
    # issue 21: "frame" = annotators label whole frames; "region" = they label the most uncertain BEV tiles
    # of a frame (region_size x region_size BEV cells, the full height), and the budget counts voxels
    unit: str = "frame"
    region_size: int = 25  # BEV cells per tile side (25 -> 8 x 8 tiles on the 200 x 200 Occ3D grid)
    max_tiles_per_frame: int = 16  # region: at most this many tiles of one frame per round
    # strategy fusion: classes weigh (1 / their frequency among the pool's fused labels) ** this. 1 puts unsure
    # rare things first; 0 weighs every voxel alike, so the ground classes, most of the grid, take most of the
    # budget. Development world, 5% of the pool's voxels as tiles, exported labels' mIoU: 0.25 / 0.5 / 1 / 1.5
    # gave 60.74 / 62.86 / 64.57 / 64.63 (random tiles 56.7; BENCHMARKS.md, issue 21)
    fusion_class_power: float = 1.0
    # ranked strategies (entropy, fusion): this share of the budget goes to frames or tiles drawn at random once
    # the ranking has had the rest (same caps and quota). A ranking spends its first labels on what it is least
    # sure of (rare things); random tiles cover the common ground classes the network gains most on
    random_share: float = 0.0
    # issue 24: what annotators deliver. "voxels": dense Occ3D labels.npz; "points": nuScenes-lidarseg labels of
    # the keyframe sweep's points + 3D boxes (sample_annotation form), voxelized at ingest
    # (autolabel.annotation). With points, the manifest states the points and boxes of every frame (and tile)
    # and cost_model prices a frame in points: its sweep's points + box_points x its boxes
    annotation: str = "voxels"
    box_points: float = 500.0  # points: one box counts as this many labelled points (cost_model, budgets)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"selection.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.budget <= 0:
            raise ValueError("selection.budget must be > 0")
        if self.per_scene_cap < 1:
            raise ValueError("selection.per_scene_cap must be >= 1")
        if self.hybrid_factor < 1:
            raise ValueError("selection.hybrid_factor must be >= 1")
        if self.frame_cost < 0 or self.voxel_cost < 0:
            raise ValueError("selection.frame_cost and voxel_cost must be >= 0")
        if self.unit not in UNITS:
            raise ValueError(f"selection.unit must be one of {UNITS}, got {self.unit!r}")
        if self.region_size < 1:
            raise ValueError(f"selection.region_size must be >= 1 BEV cells, got {self.region_size}")
        if self.max_tiles_per_frame < 1:
            raise ValueError(f"selection.max_tiles_per_frame must be >= 1, got {self.max_tiles_per_frame}")
        if not 0 <= self.fusion_class_power <= 4:
            raise ValueError(f"selection.fusion_class_power must be in [0, 4], got {self.fusion_class_power}")
        if not 0 <= self.random_share < 1:
            raise ValueError(f"selection.random_share must be in [0, 1), got {self.random_share}")
        if self.annotation not in ANNOTATIONS:
            raise ValueError(f"selection.annotation must be one of {ANNOTATIONS}, got {self.annotation!r}")
        if self.box_points < 0:
            raise ValueError(f"selection.box_points must be >= 0, got {self.box_points}")
        if self.unit == "region" and self.cost_model:
            raise ValueError(
                "selection.cost_model prices whole frames; with selection.unit: region the budget "
                "counts labelled voxels, so set cost_model: false"
            )

    @property
    def region(self) -> bool:
        return self.unit == "region"

    @property
    def points(self) -> bool:
        return self.annotation == "points"


def check_region_budget(cfg: SelectionConfig, shape: tuple[int, int, int]) -> None:
    """With unit region, the tile must fit the grid and the budget (voxels) must buy at least one tile;
    ValueError otherwise, saying how frames convert (a budget left at a frame count is the usual slip)."""
    if not cfg.region:
        return
    x, y, z = (int(s) for s in shape)
    if cfg.region_size > max(x, y):
        raise ValueError(f"selection.region_size {cfg.region_size} is larger than the grid's BEV extent {x} x {y}")
    tile = min(cfg.region_size, x) * min(cfg.region_size, y) * z
    if cfg.budget < tile:
        raise ValueError(
            f"selection.budget is in labelled voxels when selection.unit is region: {cfg.budget:g} does "
            f"not buy one tile of {cfg.region_size} x {cfg.region_size} x {z} = {tile} voxels; a budget "
            f"of N frames is N x {x * y * z} voxels on this {x} x {y} x {z} grid"
        )
