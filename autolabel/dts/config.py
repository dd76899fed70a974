"""The recipe's ``dts`` section."""

from __future__ import annotations

from dataclasses import dataclass

EVIDENCE = ("lidar", "fusion")
DOUBT_CLASSES = ("all", "ground")


@dataclass
class DTSConfig:
    enabled: bool = True
    momentum: float = 0.999  # EMA momentum m, ramped up as min(m, 1 - (1 + warmup) / (step + 1 + warmup))
    warmup: int = 10
    start_step: int = 200  # the student learns from pseudo-labels (loss.pseudo_3d) from this step on
    # a new round's teacher continues the previous round's: its EMA ramp and start_step count the updates it has
    # seen over every round, so it labels from the round's first step. False: the ramp restarts with the round's
    # steps (momentum 0.08 at the first: the loaded weights are the student's within a few steps) and the round's
    # first start_step steps get no pseudo-labels (the behaviour before 2026-12-02)
    carry_teacher: bool = True
    depth_aware: bool = True  # the teacher's view transform uses the LiDAR depth prior
    lidar_filter: bool = True  # voxels LiDAR rays cross are free, return voxels occupied
    # the evidence the teacher's pseudo-labels are filtered by: the frame's own LiDAR ("lidar"), or in
    # addition the fused labels of its scene window ("fusion", needs fusion.enabled; dts.pseudo.apply_fusion)
    evidence: str = "lidar"
    # labelling with evidence fusion (the stored and exported pseudo-labels): fusion names every voxel it named
    # unless its name is in doubt: fusion's confidence lies below this doubt and below the teacher's probability of
    # its own best class, which then names the voxel (within `doubt_classes`); the teacher names what fusion did
    # not name. 0: fusion names every voxel it named; 1 with doubt_classes "ground" (the default since 2026-12-02):
    # the surer source names a flat-ground voxel: the pool's labels +0.42 mIoU on the development world (57.19
    # against 56.77, two seeds), +0.14 / +0.38 on the quickstart's rounds 0 / 1 (BENCHMARKS.md "Fusion's ground
    # names in doubt"). Over all classes every doubt lowered them (0.3: -0.20, 1: -0.91, three seeds): a softmax
    # probability against a vote share is no calibrated comparison, and the teacher renames the rare things
    # fusion named right
    label_fusion_doubt: float = 1.0
    # the same rule for the student's targets during training (loss.pseudo_3d; EMATeacher.annotate). At 1 over all
    # classes the (depth-blind) teacher's self-training renamed the ground: the recipes' network lost 4.5 mIoU on
    # the test world to it (21.29 against 25.79, BENCHMARKS.md "Training targets named by fusion"); at 0.5 over all
    # classes with the depth-aware teacher the student moved within its spread (26.12 against 25.95, development)
    target_fusion_doubt: float = 0.0
    # which of fusion's names the doubts reach: "ground", a flat-ground name (driveable surface, other flat,
    # sidewalk, terrain) renamed to another flat-ground class only: the network, which learnt the ground's layout
    # across frames and scenes, corrects the 2D masks' confusions between ground classes (development world, doubt
    # 1: driveable +2.2, other flat +4.1, sidewalk +2.8, terrain -2.0 IoU); or "all" (doubt 1: ground +1.8 to +6.8,
    # and construction vehicle -15, barrier -8, others -7)
    doubt_classes: str = "ground"
    # labelling with evidence fusion: fusion's free space wins over a return of the frame's own LiDAR (fusion holds
    # that return and freed the voxel on the evidence of more rays). False: the frame's return occupies the voxel,
    # named by the teacher: wrong more often than right (quickstart: 24% of those voxels named right, 63% truly
    # free); the pool's labels +1.9 mIoU / +3.3 geometric IoU on a development world (BENCHMARKS.md, 2026-12-02)
    label_fusion_free: bool = True
    # the same rule for the student's targets during training (EMATeacher.annotate); off: the frame's returns
    # occupy the voxels fusion freed (the rule labelling had before 2026-12-02)
    target_fusion_free: bool = False
    # labelling with evidence fusion: the teacher's read-out names the voxels that neither fusion nor the frame's
    # LiDAR observed; False leaves them unlabelled (255: free but never confident in the Occ3D export, as fusion
    # alone leaves them): the same mIoU over all labels, at the export threshold 63.67 mIoU at 92.0% of
    # mask_camera kept against 61.48 at 98.9% (a development world). Training's targets take the read-out there
    label_fill: bool = True
    drop_quantile: float = 0.3  # per class, the least confident share of voxels left 255
    occupied_threshold: float = 0.5  # occupancy probability above which a voxel is occupied
    # after training, replace occupied_threshold for labelling and evaluation by the threshold calibrated
    # against LiDAR on training frames (autolabel.training.calibrate; saved and read back by autolabel.checkpoint:
    # rendering-only networks keep grazing surfaces half transparent)
    calibrate_threshold: bool = True
    # the teacher's pseudo-labels during training: read out at the threshold calibrated against the LiDAR
    # of the batches it labels (EMATeacher.online_threshold), not at occupied_threshold
    online_calibration: bool = True
    batch_size: int = 2  # frames per teacher forward pass in `autolabel label`

    def __post_init__(self) -> None:
        if not 0 <= self.momentum < 1:
            raise ValueError("dts.momentum must lie in [0, 1)")
        if self.warmup < 0 or self.start_step < 0:
            raise ValueError("dts.warmup and dts.start_step must be >= 0")
        for key in ("label_fusion_doubt", "target_fusion_doubt"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"dts.{key} must lie in [0, 1] (a confidence), got {getattr(self, key)}")
        if self.doubt_classes not in DOUBT_CLASSES:
            raise ValueError(f"dts.doubt_classes must be one of {DOUBT_CLASSES}, got {self.doubt_classes!r}")
        if not 0 <= self.drop_quantile < 1:
            raise ValueError("dts.drop_quantile must lie in [0, 1)")
        if not 0 < self.occupied_threshold < 1:
            raise ValueError("dts.occupied_threshold must lie in (0, 1)")
        if self.evidence not in EVIDENCE:
            raise ValueError(f"dts.evidence must be one of {EVIDENCE}, got {self.evidence!r}")
        if self.evidence == "fusion" and not self.lidar_filter:
            raise ValueError(
                "dts.evidence: fusion filters by LiDAR and fusion together; it needs dts.lidar_filter: true"
            )
        if self.batch_size < 1:
            raise ValueError("dts.batch_size must be >= 1")
