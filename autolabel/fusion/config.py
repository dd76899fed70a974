"""The evidence-fusion labeller's settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


@dataclass
class FusionConfig:
    """How LiDAR is accumulated and 2D labels voted (autolabel.fusion); the recipe's ``fusion`` section.

    With `enabled`, `autolabel run` fuses every training frame once, after the 2D supervision (stage
    ``fuse``, into ``<run>/fusion.zarr``), for the uses that read it: `loss.fused_3d` (3D targets for the
    student) and `dts.evidence: fusion` (the teacher's evidence beside the frame's own LiDAR)."""

    enabled: bool = False
    store: Optional[str] = None  # where the fused labels go; None: <run>/fusion.zarr (runs may share one)
    window: int = 3  # keyframes of the scene on each side of the labelled one (+-window)
    # dynamic classes (vehicles, people, cyclists) are kept only from points at most this many seconds
    # from the labelled keyframe's LiDAR (0: its own sweep): they moved in between
    dynamic_seconds: float = 0.0
    # a point is visible in a pixel when its camera depth is at most (1 + rel) * z-buffer + abs, where the
    # z-buffer holds the nearest accumulated point per pixel, min-pooled over zbuffer_pool pixels so that
    # points behind a surface do not show through the gaps between that surface's points
    depth_tolerance_abs: float = 0.3
    depth_tolerance_rel: float = 0.02
    zbuffer_pool: int = 3
    # each view's runner-up names (where the supervision cache keeps them, `supervision.runner_ups`) vote too,
    # their vote (below) times this weight: the views' class distributions, not only their argmax names. 0.5 on the
    # development world: under the sum rule pseudo-labels 55.56 -> 56.38 mIoU (0.25: 56.15, 0.75: 55.32, 1: 54.14),
    # under the evidence rule 56.86 (0.35: 56.41, 0.75: 56.67; at evidence_floor 0.02, 0.25 / 0.5 / 1: 56.20 /
    # 56.73 / 54.25)
    runner_up_weight: float = 0.5
    # how a view's pixel votes: "evidence" (each class it names, the name and the runner-ups, gets the log-ratio
    # of its probability to what the pixel leaves each unnamed class, log(p / u) with u = (1 - the named
    # probabilities) / the unnamed classes, at least `evidence_floor`; summed over views, the log of the product of
    # the views' distributions: weak evidence that every view gives adds up) or "sum" (the name's confidence and
    # each runner-up's, added: the views' distributions summed). Development world: 56.38 (sum) -> 56.86 mIoU
    # (floors 0.002 / 0.005 / 0.02 / 0.05: 56.73 / 56.83 / 56.73 / 56.64); test world 53.53 -> 54.19 (BENCHMARKS.md,
    # "Votes as evidence"). Exact 2D labels (confidence 1, no runner-ups) fuse alike under both
    vote_rule: str = "evidence"
    evidence_floor: float = 0.01
    full_hits: int = 3  # LiDAR points in a voxel at which its occupancy is fully trusted
    # voxels: points of the window's other keyframes are kept, whatever their class, within this many voxels of
    # the labelled keyframe's own returns: there the thing is still there (a parked car, seen from other sides
    # at other times); -1: dynamic classes only from their own time
    parked_radius: int = 1
    # how named points become voxels: "rules" (the point-label voxelizer's rules: surfaces, ghosts, empty beams,
    # gaps, ground fill; fusion/rules.py) or "hits" (the first version: a voxel holding points takes their votes,
    # rays free the rest): pool pseudo-labels 30.7 mIoU / 53.5 geometric IoU at 55.5% kept against the rules'
    # 40.7 / 75.1 at 92.0% on the test world, 45.1 / 87.0 at 92.3% with the fusion rules below (BENCHMARKS.md,
    # issue 20; the decisions in docs/ARCHITECTURE.md)
    voxels: str = "rules"
    # the rules' settings that differ from the point labels' (PointLabelConfig), tuned on the development world:
    # voted classes are noisier than annotated ones, and no box fills a thing, so the ground is filled from
    # further away and under unobserved space too, kerbs are kept, and the surfaces of things are closed
    ground_fill: float = 8.0  # metres: an unobserved ground voxel takes the class of the nearest ground point
    ground_fill_unobserved: bool = True  # ... under unobserved space as well as under free space
    ground_unanimous: bool = False  # ... only where the nearest ground points within reach agree
    ground_boundary: bool = False  # leave ground voxels between two ground classes unobserved
    free_margin: int = 0  # voxels: free voxels this close to a thing are left unobserved
    # binary closings (3 x 3 x 3) of the voxels of things (not flat ground): the part of a surface between two
    # LiDAR rings, which no return lies in, takes the class of the nearest thing voxel
    close_surfaces: int = 1
    # each voxel of a thing (a connected set of named voxels above the ground) adds this times the mean vote
    # share of the whole thing to its own vote shares: one object, one name (a car is not in part a truck)
    cluster_vote: float = 4.0
    # cells (0.4 m each): every flat-ground voxel takes the ground class most frequent among the flat-ground voxels
    # within this many cells in x and y and one layer in z (a mode filter); 0: off. Development world, the pool's
    # two halves: +0.33 / +0.49 mIoU at 2, +0.45 / +0.49 at 4, worse from 6 (BENCHMARKS.md, issue 20)
    ground_smooth: int = 2
    # metres: barriers and traffic cones stand lower than this (nuScenes's are about 1 m). Where a thing's voxels
    # named one of them span more layers, they become manmade: poles, signs and fences that the classifier took
    # for a barrier or a cone (their look-alikes). 0: off. BENCHMARKS.md, issue 20
    low_height: float = 1.2
    # the map as evidence for the ground classes (fusion/map_prior.py): a point on the log's semantic prior
    # (driveable area and walkways) has its votes for terrain scaled by 1 - map_prior, one off it its votes for
    # driveable surface and sidewalk; 0: the map is not read. Tuned on the development world (BENCHMARKS.md)
    map_prior: float = 0.5
    # with the map read (map_prior > 0): flat-ground voxels of a class the map rules out in their cell take the
    # allowed ground class most frequent within map_ground cells around them (0: off); terrain is ruled out only
    # map_margin metres inside the prior's edge (the prior is dilated by a margin nuScenes does not publish; the
    # synthetic world's is 1 m). fusion/map_prior.py; tuned on the development world (BENCHMARKS.md)
    map_ground: int = 4
    map_margin: float = 1.2
    # tracked objects: the dataset's boxes of moving categories (vehicles, people, animals; nuScenes's
    # sample_annotation, by instance), read for where an object is at each keyframe, never for its class (none
    # in a split without annotations: these rules then do nothing). A keyframe-sweep point in an object's box
    # (above its lowest track_floor metres) is voted by its own time's views only; track_vote a mixes its votes
    # with the vote shares of all the object's points over the window, (1 - a) own + a object (0: off, 1: the
    # object's alone): the views of every keyframe name the object, not those of one. With track_move, such points
    # of the window's other keyframes are moved with the box to where the object is at the labelled keyframe
    # (where it is annotated there), as the Occ3D label pipeline does. Development world, the pool's fused
    # labels: 47.37 mIoU without; vote 1 / 4 / 16 / 100 parts to 1 (before the mix) with track_move 49.89 / 51.97
    # / 52.41 / 52.62; track_move alone 48.66 (BENCHMARKS.md, issue 20)
    track_vote: float = 1.0
    track_move: bool = True
    track_floor: float = 0.2
    # the boxes cover every object of the moving categories: a point in no box is not a vehicle, a person or a
    # cyclist, and a point in a box is one (or Occ3D others: an animal, a stroller, an ambulance). Votes for the
    # classes the boxes rule out are scaled by 1 - track_exclusive (0: off): the background behind an object's mask
    # edge, which the mask bleeds over, loses the object's name, and the object loses the wall's; a point no other
    # class was voted for keeps its name (1 would leave it unnamed). Development world, the pool's fused labels:
    # 52.41 mIoU without; 0.5 / 0.8 / 0.95 / 0.99 / 1: 54.61 / 54.86 / 54.95 / 54.88 / 53.59 (BENCHMARKS.md, issue 20)
    track_exclusive: float = 0.95

    def __post_init__(self) -> None:
        _check(self.window >= 0, "fusion.window must be >= 0")
        _check(self.dynamic_seconds >= 0, "fusion.dynamic_seconds must be >= 0")
        _check(
            self.depth_tolerance_abs >= 0 and self.depth_tolerance_rel >= 0,
            "fusion.depth_tolerance_abs / depth_tolerance_rel must be >= 0",
        )
        _check(self.runner_up_weight >= 0, f"fusion.runner_up_weight must be >= 0, got {self.runner_up_weight}")
        _check(self.vote_rule in ("sum", "evidence"), f"fusion.vote_rule must be sum or evidence: {self.vote_rule!r}")
        _check(0 < self.evidence_floor < 1, f"fusion.evidence_floor must lie in (0, 1), got {self.evidence_floor}")
        _check(self.zbuffer_pool >= 1 and self.zbuffer_pool % 2 == 1, "fusion.zbuffer_pool must be an odd number >= 1")
        _check(self.full_hits >= 1, "fusion.full_hits must be >= 1")
        _check(self.voxels in ("hits", "rules"), f"fusion.voxels must be hits or rules, got {self.voxels!r}")
        _check(self.ground_fill >= 0 and self.free_margin >= 0, "fusion.ground_fill / free_margin must be >= 0")
        _check(self.parked_radius >= -1, "fusion.parked_radius must be >= -1 (-1: off)")
        _check(0 <= self.map_prior < 1, f"fusion.map_prior must lie in [0, 1), got {self.map_prior}")
        _check(self.ground_smooth >= 0, "fusion.ground_smooth must be >= 0")
        _check(self.low_height >= 0, f"fusion.low_height must be >= 0 (0: off), got {self.low_height}")
        _check(self.map_ground >= 0 and self.map_margin >= 0, "fusion.map_ground / map_margin must be >= 0")
        _check(0 <= self.track_vote <= 1, f"fusion.track_vote must lie in [0, 1], got {self.track_vote}")
        _check(self.track_floor >= 0, "fusion.track_floor must be >= 0")
        _check(0 <= self.track_exclusive <= 1, f"fusion.track_exclusive must lie in [0, 1], got {self.track_exclusive}")
        _check(self.close_surfaces >= 0 and self.cluster_vote >= 0, "fusion.close_surfaces / cluster_vote must be >= 0")

    @property
    def tracks(self) -> bool:
        """Whether fusion reads the objects' boxes."""
        return self.track_vote > 0 or self.track_move or self.track_exclusive > 0

    def settings(self) -> dict:
        """What the fused labels depend on (provenance; a resumed round must match): all but `enabled` and `store`."""
        return {k: v for k, v in asdict(self).items() if k not in ("enabled", "store")}
