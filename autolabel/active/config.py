"""The recipe's ``selection`` section."""
from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("auto", "random", "stratified", "entropy", "coreset", "kmeans", "hybrid")


@dataclass
class SelectionConfig:
    strategy: str = "auto"  # auto: diversity first (core-set) while little is labelled, then hybrid
    budget: float = 10  # frames, or annotation cost units when cost_model is on
    cost_model: bool = False  # cost of a frame = frame_cost + voxel_cost * visible occupied voxels
    frame_cost: float = 1.0
    voxel_cost: float = 0.0001  # per occupied voxel in mask_camera (dense 3D labelling effort)
    per_scene_cap: int = 2  # neighbouring keyframes are near duplicates
    hybrid_factor: float = 4.0  # hybrid: top (factor x budget) by uncertainty, then diversity down to the budget
    auto_diversity_share: float = 0.05  # auto: core-set while labelled frames are below this share of the pool
    seed: int = 0

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
