"""Occupancy labels of one keyframe from the evidence of its scene window (issue 20).

Evidence, all in the labelled keyframe's ego frame at its LiDAR timestamp (the Occ3D grid's frame):
- `Sweep`: the LiDAR of each keyframe of the window (+-`FusionConfig.window` keyframes; sweeps included where
  the dataset reads them), moved through the global frame by the ego poses, as the devkit does;
- `View`: the 2D labels (class, confidence) of every camera of every window keyframe, with its pose.

`fuse` then
1. votes a class for every point: each view that sees the point (in the image, and the first surface
   along that pixel's ray: its depth within a tolerance of a z-buffer of the points of the view's own
   keyframe, the scene as it was when the image was taken, min-pooled so that points behind a surface do
   not show through the gaps between its points) adds the pixel's vote to the pixel's class and to its
   runner-up names (`fusion.vote_rule`: by default the evidence log(p / u) of each, `evidence_weights`; or
   the confidences). Views of the point's own keyframe vote apart: a point whose own-time views call it a
   dynamic class (a car, a pedestrian) takes their vote, since at other times the thing had moved and the
   views there show what was behind it;
2. keeps points of static classes from the whole window and points of dynamic classes (and points no view
   saw) only within `dynamic_seconds` of the labelled frame;
3. voxelizes: a voxel holding kept points is occupied with the class of its summed votes, confidence =
   (winning share of the votes) x min(1, points / full_hits); voxels crossed by a keyframe sweep's ray
   before its return are free (confidence 1), a ray to a ground-class return stopping where it enters
   the return's voxel layer (occnet.surfaces); occupied wins over free (a car parked at one time, driven
   through at another), and a voxel holding any return is never free (a car that has since moved leaves
   its voxels unobserved); everything else is unobserved (255, confidence 0).
Rays are cast only from keyframe sweeps, whose sensor origin is exact; sweep points add occupancy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kernels.grid import GridSpec
from kernels.walk import ray_voxels
from occnet.classes import DYNAMIC_CLASS_IDS, FREE_ID, IGNORE_ID, NUM_SEMANTIC_CLASSES, OCC3D_CLASS_NAMES
from occnet.surfaces import is_flat, layer_entry

from ..annotation.voxelize import PointLabelConfig
from .config import FusionConfig
from .map_prior import UNKNOWN, apply_map_prior, rename_ruled_out_ground
from .rules import FILLED_CONFIDENCE, NamedVoxels, label_voxels, name_voxels, voxel_index


@dataclass
class Sweep:
    """LiDAR points of one window keyframe, in the labelled frame's ego frame."""

    points: torch.Tensor  # (P, 3) float64
    origin: torch.Tensor  # (3,) float64 sensor origin of the keyframe sweep
    keyframe: torch.Tensor  # (P,) bool: from the keyframe sweep itself (rays are cast from these)
    seconds: torch.Tensor  # (P,) float64 time of the point's sweep minus the labelled frame's LiDAR time
    source: int  # index of the window keyframe
    # the keyframe sweep's beams that returned nothing (annotation.accumulate.missing_beams), for
    # `fusion.voxels: rules`: unit directions (M, 3) in the labelled frame's ego frame and how far each is free
    beams: np.ndarray | None = None
    beam_free: np.ndarray | None = None
    # with `fusion.map_prior`: (P,) int8 where each point lies against the map (fusion.map_prior.map_side); None:
    # no map (no prior for these points)
    map_side: torch.Tensor | None = None
    # with the tracks read (FusionConfig.tracks): (P,) int64 the window-wide id of the tracked object each point
    # lies in (-1: none), and each object's box -> labelled-frame ego (4, 4) float64 at this keyframe
    instance: torch.Tensor | None = None
    boxes: dict[int, np.ndarray] | None = None


@dataclass
class View:
    """The 2D labels of one camera image of a window keyframe."""

    target2cam: torch.Tensor  # (4, 4) float64: labelled frame's ego -> camera
    K: torch.Tensor  # (3, 3) float64 intrinsics at the labels' resolution
    semantics: torch.Tensor  # (h, w) int64 class ids, 255 = none
    confidence: torch.Tensor  # (h, w) float32 in [0, 1]
    source: int  # index of the window keyframe
    # the naming classifier's runner-up names (R, h, w) int64 (255 none) and their confidence (R, h, w) float32;
    # None: the 2D labels carry none
    runner_ups: torch.Tensor | None = None
    runner_up_confidence: torch.Tensor | None = None


@dataclass
class Fused:
    """Labels of one keyframe: semantics (X, Y, Z) uint8 (free = 17, unobserved = 255), confidence (X, Y, Z)
    uint8 (round(255 * c)), points (X, Y, Z) int32 kept LiDAR points per voxel."""

    semantics: np.ndarray
    confidence: np.ndarray
    points: np.ndarray


def vote(
    points: torch.Tensor, source: torch.Tensor, views: list[View], cfg: FusionConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class votes of every point. points (P, 3), source (P,) window keyframe of each point.

    Returns (all, own), each (P, 17) float32: the votes of every view that sees the point, and of the views of
    the point's own keyframe only. A view's runner-up names (View.runner_ups) vote beside its name, x
    `runner_up_weight`. Under `vote_rule: evidence` each class a pixel names votes its log-likelihood ratio
    against the classes it leaves unnamed (`evidence_weights`): summed over views, the log of the product of the
    views' distributions; under `sum` it votes its confidence: the distributions summed. Either names a thing
    that every view ranks second better than a vote of argmax names does (benchmarks/naming_views.py)."""
    n = len(points)
    votes = torch.zeros(n, NUM_SEMANTIC_CLASSES, dtype=torch.float32, device=points.device)
    own = torch.zeros_like(votes)
    homog = torch.cat([points, torch.ones_like(points[:, :1])], 1)
    for view in views:
        h, w = view.semantics.shape
        cam = homog @ view.target2cam.T
        z = cam[:, 2]
        front = z > 0.1
        pix = cam[:, :3] @ view.K.T
        u = torch.floor(pix[:, 0] / z.clamp_min(1e-6)).long()
        v = torch.floor(pix[:, 1] / z.clamp_min(1e-6)).long()
        ok = front & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        if not bool(ok.any()):
            continue
        idx = torch.nonzero(ok).squeeze(1)
        flat = v[idx] * w + u[idx]
        zf = z[idx].float()
        zbuf = torch.full((h * w,), float("inf"), device=points.device)
        at_view_time = source[idx] == view.source  # the scene when the image was taken: no ghosts of movers
        zbuf.scatter_reduce_(0, flat[at_view_time], zf[at_view_time], reduce="amin")
        k = cfg.zbuffer_pool
        if k > 1:  # the nearest point within k x k pixels stands for the surface there
            zbuf = -F.max_pool2d(-zbuf.view(1, 1, h, w), k, stride=1, padding=k // 2).view(-1)
        visible = zf <= zbuf[flat] * (1 + cfg.depth_tolerance_rel) + cfg.depth_tolerance_abs
        label = view.semantics.reshape(-1)[flat]
        use = visible & (label != IGNORE_ID) & (label < NUM_SEMANTIC_CLASSES)
        idx, label, flat = idx[use], label[use], flat[use]
        weight = view.confidence.reshape(-1)[flat].float()
        alts = []  # (class, confidence, present) of each runner-up at the voting pixels
        if view.runner_ups is not None and cfg.runner_up_weight > 0:
            for alt, alt_conf in zip(view.runner_ups, view.runner_up_confidence):
                a = alt.reshape(-1)[flat]
                ok = a < NUM_SEMANTIC_CLASSES  # 255: no runner-up here
                alts.append((a, alt_conf.reshape(-1)[flat].float(), ok))
        weight, alts = pixel_votes(weight, alts, cfg)
        mine = source[idx] == view.source
        votes.index_put_((idx, label), weight, accumulate=True)
        own.index_put_((idx[mine], label[mine]), weight[mine], accumulate=True)
        for a, wa, ok in alts:
            votes.index_put_((idx[ok], a[ok]), wa[ok], accumulate=True)
            own.index_put_((idx[ok & mine], a[ok & mine]), wa[ok & mine], accumulate=True)
    return votes, own


def pixel_votes(
    conf: torch.Tensor, alts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], cfg: FusionConfig
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """What pixels vote under `cfg.vote_rule`: for the name (N,) and for each runner-up [(class (N,), vote (N,),
    present (N,) bool)], the runner-ups' votes x `runner_up_weight`. From the name confidences (N,) and the
    runner-ups [(class, confidence, present)]: the confidences themselves (sum) or their evidence
    (`evidence_weights`)."""
    if cfg.vote_rule == "evidence":
        conf, alts = evidence_weights(conf, alts, cfg.evidence_floor)
    return conf, [(a, w * cfg.runner_up_weight, ok) for a, w, ok in alts]


# the least evidence a vote carries: a power of two, so that the rules' float64 vote sums stay exact and the
# same in any order of CUDA's atomic adds (fusion/rules.py, _name_voxels)
MIN_EVIDENCE = 2.0**-7


def evidence_weights(
    conf: torch.Tensor, alts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], floor: float
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """`fusion.vote_rule: evidence`: pixels' name confidences (N,) and runner-ups [(class (N,), confidence (N,),
    present (N,) bool)] as log-likelihood ratios against the classes the pixel leaves unnamed. The pixel's
    distribution puts what its name and runner-ups leave evenly on the other classes, u each (at least `floor`,
    which bounds how much one view counts against a class it leaves unnamed); a class it names with p gets
    log(max(p, u) / u) >= 0. Summed over views these are the log of the product of the views' distributions, up to
    a constant per point. A name keeps at least MIN_EVIDENCE (its point stays seen, as under the sum rule); a
    runner-up's evidence under MIN_EVIDENCE is dropped."""
    named = conf.clone()
    count = torch.ones_like(conf)
    for _, c, ok in alts:
        named += torch.where(ok, c, 0.0)
        count += ok.float()
    u = ((1 - named).clamp_min(0) / (NUM_SEMANTIC_CLASSES - count)).clamp_min(floor)

    def ratio(p: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.maximum(p, u) / u)

    weighed = []
    for a, c, ok in alts:
        r = ratio(c)
        weighed.append((a, r, ok & (r >= MIN_EVIDENCE)))
    return ratio(conf).clamp_min(MIN_EVIDENCE), weighed


def _map_side(sweep: Sweep) -> torch.Tensor:
    """(P,) int8 where the sweep's points lie against the map; UNKNOWN (no prior) for a sweep without one."""
    if sweep.map_side is not None:
        return sweep.map_side
    return torch.full((len(sweep.points),), UNKNOWN, dtype=torch.int8, device=sweep.points.device)


def near_returns(points: torch.Tensor, now: torch.Tensor, grid: GridSpec, radius: int) -> torch.Tensor:
    """(P,) bool: the point lies in the grid within `radius` voxels (26-neighbourhood steps) of a voxel that holds
    a point of `now` ((P,) bool)."""
    flat, inside = voxel_index(points, grid)
    held = torch.zeros(grid.num_voxels, dtype=torch.float32, device=points.device)
    held[flat[now & inside]] = 1.0
    if radius > 0:
        k = 2 * radius + 1
        held = F.max_pool3d(held.view(1, 1, *grid.shape), k, stride=1, padding=radius).view(-1)
    return inside & (held[flat.clamp_min(0)] > 0)


def track_votes(votes: torch.Tensor, instance: torch.Tensor) -> torch.Tensor:
    """(P, 17): for each point of a tracked object (instance (P,) >= 0), the vote shares summed over all the
    object's points, times the point's own vote mass (a point no view saw: the mean mass of the object's seen
    points); zero for the others. votes (P, 17)."""
    out = torch.zeros_like(votes)
    m = instance >= 0
    if not bool(m.any()):
        return out
    _, obj = torch.unique(instance[m], return_inverse=True)
    sums = torch.zeros(int(obj.max()) + 1, votes.shape[1], dtype=votes.dtype, device=votes.device)
    sums.index_add_(0, obj, votes[m])
    share = sums / sums.sum(1, keepdim=True).clamp_min(1e-9)
    mass = votes[m].sum(1)
    seen = torch.zeros(len(sums), dtype=votes.dtype, device=votes.device).index_add_(0, obj, (mass > 0).to(votes.dtype))
    total = torch.zeros_like(seen).index_add_(0, obj, mass)
    mass = torch.where(mass > 0, mass, (total / seen.clamp_min(1))[obj])
    out[m] = share[obj] * mass[:, None]
    return out


# Occ3D "others" is the lidarseg ignore group, which holds moving categories too (animals, strollers, wheelchairs,
# emergency vehicles): a point in a moving box may be it, as may a point in none
OTHERS_ID = OCC3D_CLASS_NAMES.index("others")


def exclusive_scale(tracked: torch.Tensor, weight: float) -> torch.Tensor:
    """(P, 17) float32 vote factors of `fusion.track_exclusive`: 1 - weight for the moving classes
    (DYNAMIC_CLASS_IDS) at points in no box and for the other classes but `others` at points in a box (tracked (P,)
    bool), 1 elsewhere."""
    moving = torch.zeros(NUM_SEMANTIC_CLASSES, dtype=torch.bool, device=tracked.device)
    moving[list(DYNAMIC_CLASS_IDS)] = True
    ruled_out = tracked[:, None] != moving[None, :]
    ruled_out[:, OTHERS_ID] = False
    return torch.where(ruled_out, 1.0 - weight, 1.0).to(torch.float32)


def moved_with_tracks(sweeps: list[Sweep], target: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The points of the window (indices (M,) into the sweeps' concatenation) that belong to a tracked object of
    another keyframe annotated at the labelled keyframe too, and the rigid motion of each (M, 4, 4) float64 that
    carries it to where its object is at the labelled keyframe (its box there @ its box then ^ -1)."""
    dev = sweeps[0].points.device
    now = sweeps[target].boxes or {}
    index, motion, start = [], [], 0
    for s in sweeps:
        ids = [i for i in (s.boxes or {}) if i in now] if s.source != target and s.instance is not None else []
        if ids:
            table = np.stack([now[i] @ np.linalg.inv(s.boxes[i]) for i in ids])
            row = torch.full((max(s.boxes) + 2,), -1, dtype=torch.long, device=dev)  # id -> row; -1 (none) -> -1
            row[torch.tensor(ids, device=dev)] = torch.arange(len(ids), device=dev)
            k = row[s.instance]
            sel = torch.nonzero(k >= 0).squeeze(1)
            index.append(sel + start)
            motion.append(torch.from_numpy(table).to(dev)[k[sel]])
        start += len(s.points)
    if not index:
        return torch.zeros(0, dtype=torch.long, device=dev), torch.zeros(0, 4, 4, dtype=torch.float64, device=dev)
    return torch.cat(index), torch.cat(motion)


@dataclass
class WindowPoints:
    """The window's points after steps 1 and 2, in the labelled frame: points (P, 3) and the origins of their rays
    (P, 3) float64 (moved with their object where `moved`), the window keyframe each came from (P,), their votes
    (P, 17), the class of their votes (P,) (IGNORE_ID: no view saw it), whether fusion keeps them (P,) bool, and
    whether they were moved with a tracked object (P,) bool: their rays no longer hold."""

    points: torch.Tensor
    origins: torch.Tensor
    source: torch.Tensor
    votes: torch.Tensor
    cls: torch.Tensor
    keep: torch.Tensor
    moved: torch.Tensor


def _named_points(
    sweeps: list[Sweep], views: list[View], grid: GridSpec, cfg: FusionConfig, target: int
) -> WindowPoints:
    """Steps 1 and 2, with the tracked objects' rules (`FusionConfig.track_vote`, `track_move`)."""
    dev = sweeps[0].points.device
    points = torch.cat([s.points for s in sweeps])
    origins = torch.cat([s.origin.expand(len(s.points), 3) for s in sweeps])
    source = torch.cat([torch.full((len(s.points),), s.source, dtype=torch.long, device=dev) for s in sweeps])
    seconds = torch.cat([s.seconds for s in sweeps])
    votes, own = vote(points, source, views, cfg)
    dynamic = torch.tensor(DYNAMIC_CLASS_IDS, device=dev)
    tracked = torch.zeros(len(points), dtype=torch.bool, device=dev)
    if cfg.tracks and all(s.instance is not None for s in sweeps):
        instance = torch.cat([s.instance for s in sweeps])
        tracked = instance >= 0
        if cfg.track_exclusive > 0:  # what the boxes rule out, before anything reads the votes
            scale = exclusive_scale(tracked, cfg.track_exclusive)
            votes, own = votes * scale, own * scale
    # dynamic things and tracked objects take their own time's views only: they moved, and other times' views
    # show what was behind them
    own_time = ((own.sum(1) > 0) & torch.isin(own.argmax(1), dynamic)) | tracked
    votes = torch.where(own_time[:, None], own, votes)
    if cfg.track_vote > 0 and bool(tracked.any()):  # one object, one name, from every keyframe that saw it
        a = cfg.track_vote
        votes = torch.where(tracked[:, None], (1 - a) * votes + a * track_votes(votes, instance), votes)
    if cfg.map_prior > 0 and any(s.map_side is not None for s in sweeps):
        votes = apply_map_prior(votes, torch.cat([_map_side(s) for s in sweeps]), cfg.map_prior)
    seen = votes.sum(1) > 0
    cls = torch.where(seen, votes.argmax(1), torch.full_like(source, IGNORE_ID))
    now = seconds.abs() <= cfg.dynamic_seconds + 1e-6
    keep = now | (seen & ~torch.isin(cls, dynamic))
    if cfg.parked_radius >= 0:  # a thing still there at the frame's own time keeps its other views' points
        keep |= near_returns(points, now, grid, cfg.parked_radius)
    moved = torch.zeros_like(keep)
    if cfg.track_move and bool(tracked.any()):  # voted where they were seen, then carried to where the object is
        index, motion = moved_with_tracks(sweeps, target)
        rot, shift = motion[:, :3, :3], motion[:, :3, 3]
        points, origins = points.clone(), origins.clone()
        points[index] = (rot @ points[index, :, None])[..., 0] + shift
        origins[index] = (rot @ origins[index, :, None])[..., 0] + shift
        moved[index] = True
        keep |= moved
    return WindowPoints(points, origins, source, votes, cls, keep, moved)


def fuse(
    sweeps: list[Sweep],
    views: list[View],
    grid: GridSpec,
    cfg: FusionConfig,
    target: int,
    cells: np.ndarray | None = None,
) -> Fused:
    """Occupancy labels of the labelled keyframe from its window's sweeps and views (module docstring; with
    `fusion.voxels: rules` step 3 is fusion/rules.py's: `name_points` then `finish_rules`). target: the `source`
    of the labelled keyframe's sweep (needed by the rules: its rays tell the ghosts of moved things); cells:
    the grid's cells against the map (`map_prior.cell_sides`, for `fusion.map_ground`), None: no map."""
    if cfg.voxels == "rules":
        return finish_rules(name_points(sweeps, views, grid, cfg, target), grid, cfg, cells)
    w = _named_points(sweeps, views, grid, cfg, target)
    points, votes, cls, keep = w.points, w.votes, w.cls, w.keep
    dev = points.device
    index, inside = voxel_index(points, grid)
    sel = keep & inside
    flat = index[sel]
    nvox = grid.num_voxels
    hits = torch.bincount(flat, minlength=nvox)
    sums = torch.zeros(nvox, NUM_SEMANTIC_CLASSES, device=dev)
    sums.index_add_(0, flat, votes[sel])
    total = sums.sum(1)
    occupied = hits > 0
    agree = sums.max(1).values / total.clamp_min(1e-9)
    occ_cls = torch.where(total > 0, sums.argmax(1), torch.full_like(hits, IGNORE_ID))
    occ_conf = torch.where(total > 0, agree * (hits.float() / cfg.full_hits).clamp(max=1.0), torch.zeros_like(agree))

    free = torch.zeros(grid.shape, dtype=torch.bool, device=dev)
    start = 0
    for s in sweeps:  # LiDAR free space from each keyframe sweep's rays, stopped at the ground layer
        m = s.keyframe
        own = slice(start, start + len(s.points))  # this sweep's points in the concatenation
        start += len(s.points)
        if not bool(m.any()):
            continue
        vec = s.points[m] - s.origin
        dist = vec.norm(dim=1)
        good = dist > 1e-3
        dirs = vec[good] / dist[good, None]
        d = dist[good]
        c = cls[own][m][good]
        entry = layer_entry(s.origin, dirs, d, is_flat(c), grid)
        t_free = torch.where(entry < d, entry - 1e-4, d)  # a hair before the layer's top plane
        free |= ray_voxels(s.origin, dirs, grid, t_max=t_free)
    any_return = torch.zeros(nvox, dtype=torch.bool, device=dev)
    any_return[index[inside]] = True
    free = free.view(-1) & ~any_return

    semantics = torch.full((nvox,), IGNORE_ID, dtype=torch.long, device=dev)
    semantics[free] = FREE_ID
    semantics[occupied] = occ_cls[occupied]
    confidence = torch.zeros(nvox, device=dev)
    confidence[free] = 1.0
    confidence[occupied] = occ_conf[occupied]
    return Fused(
        semantics=semantics.view(grid.shape).to(torch.uint8).cpu().numpy(),
        confidence=(confidence * 255).round().view(grid.shape).to(torch.uint8).cpu().numpy(),
        points=hits.view(grid.shape).to(torch.int32).cpu().numpy(),
    )


def point_rules(cfg: FusionConfig) -> PointLabelConfig:
    """The point-label voxelizer's settings that fusion uses (its defaults but for the recipe's fusion keys)."""
    return PointLabelConfig(
        ground_fill=cfg.ground_fill,
        ground_unanimous=cfg.ground_unanimous,
        ground_boundary=cfg.ground_boundary,
        free_margin=cfg.free_margin,
    )


def name_points(sweeps: list[Sweep], views: list[View], grid: GridSpec, cfg: FusionConfig, target: int) -> NamedVoxels:
    """Steps 1 and 2 and the per-point rules of step 3 by fusion/rules.py (`fusion.voxels: rules`), on the sweeps'
    device: what `finish_rules` turns into labels, on the CPU (in another process where fuse_round has workers)."""
    w = _named_points(sweeps, views, grid, cfg, target)
    beams = [(s.origin.cpu().numpy(), s.beams, s.beam_free) for s in sweeps if s.beams is not None]
    cast = torch.cat([s.keyframe for s in sweeps]) & ~w.moved  # a moved point's ray was cast from elsewhere
    return name_voxels(w.points, w.origins, cast, w.source == target, w.keep, w.votes, beams, grid, point_rules(cfg))


def finish_rules(named: NamedVoxels, grid: GridSpec, cfg: FusionConfig, cells: np.ndarray | None = None) -> Fused:
    """The volume rules of fusion/rules.py on `name_points`' results (NumPy, scipy.ndimage), then, with the map's
    `cells` (X, Y) (`map_prior.cell_sides`) and `fusion.map_ground`, the ground classes it rules out renamed."""
    sem, conf, hits = label_voxels(
        named,
        grid,
        cfg.full_hits,
        point_rules(cfg),
        ground_fill_unobserved=cfg.ground_fill_unobserved,
        close_surfaces=cfg.close_surfaces,
        cluster_vote=cfg.cluster_vote,
        ground_smooth=cfg.ground_smooth,
        low_height=cfg.low_height,
    )
    if cells is not None and cfg.map_ground > 0:
        margin = math.ceil(cfg.map_margin / grid.voxel_size[0] - 1e-9)
        conf[rename_ruled_out_ground(sem, cells, grid, cfg.map_ground, margin)] = FILLED_CONFIDENCE
    return Fused(
        semantics=sem.reshape(grid.shape),
        confidence=np.round(conf * 255).astype(np.uint8).reshape(grid.shape),
        points=hits.astype(np.int32).reshape(grid.shape),
    )
