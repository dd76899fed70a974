"""Scoring the pool: one pass of the round's teacher and student over every training frame.

For each frame: the teacher's and the student's voxel distributions, the store's mask_camera for the
round (so `autolabel label --round K` must have run), per-class entropy sums (the class-frequency weights
need the whole pool's histogram, so uncertainty is finished after the pass), teacher-student
disagreement, the student's rendering residual on the frame's own supervision, the annotation cost, and
pooled BEV features of the teacher's voxel encoder for diversity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from kernels.grid import GridSpec
from occnet.classes import FREE_ID, IGNORE_ID, NUM_CLASSES
from occnet.config import NetworkConfig, RenderConfig
from occnet.losses import rendered_semantics_ce
from occnet.distributed import gather_to_main, is_main, rank, world_size
from occnet.fractions import to_fraction
from occnet.rays import render, sample_rays
from occnet.trainer import default_workers

from ..annotation.costs import frame_cost
from ..checkpoint import load_network
from ..data.nuscenes import NuScenesFrames
from ..dts.config import DTSConfig
from ..errors import DataError
from ..network_input import FrameDataset
from ..store.labels import LabelStore
from ..store.manual import labelled_frames
from ..supervision.cache import SupervisionCache
from .config import SelectionConfig
from .scores import (
    class_weights,
    disagreement,
    entropy_by_class,
    occupied_voxels,
    voxel_distribution,
    weighted_uncertainty,
)
from .regions import RegionGrid, tile_entropy_by_class, tile_scores
from .select import Candidate, Pick, resolve_strategy, select_frames, select_regions

BEV_POOL = 8  # pooled BEV feature map side


@dataclass
class PoolScores:
    tokens: list[str]
    scenes: list[str]
    labelled: np.ndarray  # (N,) bool: already has manual 3D labels
    features: np.ndarray  # (N, D) L2-normalised pooled BEV features
    # the unlabelled frames, in token order; with regions also the frames with tiles left to label (a frame
    # annotated by tiles before offers its other tiles: `annotated_tiles`)
    candidates: list[Candidate]
    scored_by: tuple[int, ...] = ()  # frames scored by each process (rank order)
    regions: RegionGrid | None = None  # selection.unit region: the tiles (candidates then carry tile scores)


def labelled_round(store: LabelStore, k: int, frames: NuScenesFrames):
    """Round k's labels of the pool `frames` (scores are measured within its mask_camera, the manifest's page
    shows its bird's-eye view): a DataError saying to run `label` when frames are missing."""
    arrays = store.round(k)
    done = arrays.done()
    if arrays.tokens != frames.tokens or not done.all():
        raise DataError(
            f"{store.path} round {k}: labels are missing for {int((~done).sum())} frames; "
            f"run `autolabel label --round {k}` first"
        )
    return arrays


def rendering_residual(
    density: torch.Tensor, logits: torch.Tensor, item: dict, grid: GridSpec, render_cfg: RenderConfig, seed: int
) -> float:
    """Mean |log rendered depth - log LiDAR depth| + rendered 2D cross-entropy on a fixed ray sample."""
    dev = density.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    try:
        rays = sample_rays(
            item["intrinsics"].to(dev),
            item["cam2ego"].to(dev),
            item["depth"].to(dev),
            item["semantics"].to(dev),
            to_fraction(item["confidence"].to(dev)),
            max(256, render_cfg.rays_per_frame // 4),
            0.0,
            gen,
            grid=grid,
            depth_target=render_cfg.depth_target,
            semantic_rays=render_cfg.semantic_rays,
            semantic_share=render_cfg.semantic_share,
        )
    except ValueError:  # nothing of the frame falls in the grid
        return 0.0
    r = render(density[None], logits[None], rays, grid, render_cfg)
    has = rays.depth > 0
    depth_err = (
        (torch.log(r.depth[has].clamp_min(1e-3)) - torch.log(rays.depth[has])).abs().mean() if has.any() else 0.0
    )
    return float(depth_err + rendered_semantics_ce(r, rays))


def _first(items: list) -> dict:
    return items[0]


def _as_is(item):
    """A DataLoader's sample unchanged (NumPy arrays stay NumPy arrays)."""
    return item


def score_pool(
    frames: NuScenesFrames,
    cache: SupervisionCache,
    store: LabelStore,
    k: int,
    checkpoint,
    network: NetworkConfig,
    render_cfg: RenderConfig,
    dts: DTSConfig,
    selection: SelectionConfig,
    device: torch.device,
    progress: bool = True,
    workers: int | None = None,
) -> PoolScores | None:
    """Score every training frame (`frames`, labelled in round k of `store`) with the round's `checkpoint`
    (its teacher and student). Under torchrun each rank scores frames ``i % world == rank`` (DataLoader
    workers read them: `default_workers()` unless given) and rank 0 gathers the per-frame results and
    returns the pool; the other ranks return None. The scores do not depend on the number of processes
    (a frame's residual rays are seeded by its index in the pool; class weights need the whole pool, so
    they are computed after the gather)."""
    arrays = labelled_round(store, k, frames)
    teacher = load_network(network, checkpoint, device, "teacher").model
    student = load_network(network, checkpoint, device, "student").model
    feats: dict[str, torch.Tensor] = {}
    hook = teacher.voxels.up.register_forward_hook(lambda m, i, o: feats.__setitem__("bev", o.float().mean(-1)))
    voxel = float(min(network.grid.voxel_size))
    regions = RegionGrid(network.grid.shape, selection.region_size) if selection.region else None
    mine = [i for i in range(len(frames)) if i % world_size() == rank()]
    dataset = FrameDataset(
        frames,
        network.image_size,
        labels="cache",
        cache=cache,
        grid=network.grid,
        indices=mine,
    )
    loader = DataLoader(
        dataset, batch_size=1, num_workers=default_workers() if workers is None else workers, collate_fn=_first
    )
    # pool index -> (entropy sums, counts, disagreement, residual, cost, feature, per-tile sums and counts or None)
    scored: dict[int, tuple] = {}
    try:
        bar = tqdm(loader, total=len(mine), desc=f"score pool (round {k})", disable=not progress or not is_main())
        for item in bar:
            i = frames.index(item["token"])
            b = {key: item[key][None].to(device) for key in ("images", "intrinsics", "cam2ego", "depth")}
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                t = teacher(b["images"], b["intrinsics"], b["cam2ego"], b["depth"] if dts.depth_aware else None)
                s = student(b["images"], b["intrinsics"], b["cam2ego"])
                res = rendering_residual(
                    s.density[0].float(), s.logits[0].float(), item, network.grid, render_cfg, seed=i
                )
            pt = voxel_distribution(t.density[0], t.logits[0], voxel)
            ps = voxel_distribution(s.density[0], s.logits[0], voxel)
            mask = torch.from_numpy(arrays.read(i, "mask_camera")).to(device).bool()
            sums, n = entropy_by_class(pt, mask)
            cost = selection.frame_cost + selection.voxel_cost * occupied_voxels(pt, mask)
            bev = F.adaptive_avg_pool2d(feats["bev"], BEV_POOL).flatten(1)[0]
            scored[i] = (
                sums.cpu().numpy(),
                n.cpu().numpy(),
                disagreement(pt.argmax(-1), ps.argmax(-1), mask),
                res,
                cost,
                F.normalize(bev, dim=0).cpu().numpy(),
                tile_entropy_by_class(pt, mask, regions) if regions is not None else None,
            )
    finally:
        hook.remove()
    gathered = _gathered(scored, len(frames.tokens), "score_pool")
    if gathered is None:
        return None
    rows, counts = gathered
    labelled, annotated = _labelled(store, frames.tokens, regions)
    pool = _finish(frames, labelled, rows, regions, annotated=annotated)
    pool.scored_by = counts
    if selection.points:
        _point_costs(pool, frames, network.grid, selection, arrays)
    return pool


def _gathered(scored: dict[int, tuple], n: int, what: str) -> tuple[list[tuple], tuple[int, ...]] | None:
    """Every rank's per-frame results (pool index -> row) on rank 0: the rows in pool order and how many frames each
    rank scored; None on the other ranks. RuntimeError if a frame was scored by no rank."""
    parts = gather_to_main(scored)
    if not is_main():
        return None
    counts = (len(scored), *(len(part) for part in parts))
    for part in parts:
        scored.update(part)
    if sorted(scored) != list(range(n)):
        raise RuntimeError(f"{what}: {n - len(scored)} frames were scored by no rank")
    return [scored[i] for i in range(n)], counts


UNSCORED = ("random", "stratified")  # whole-frame strategies that read no score of the network


def needs_scores(cfg: SelectionConfig, n_labelled: int, pool_size: int) -> bool:
    """Whether the selection reads the network's pool scores. Random and stratified whole frames without the
    cost model read none; tiles need their visible voxels, the cost model the visible occupied voxels and the
    other strategies uncertainty or features. `auto` resolves to stratified while little is labelled, so the
    default round skips a teacher-and-student pass over the whole pool."""
    return cfg.region or cfg.cost_model or resolve_strategy(cfg, n_labelled, pool_size) not in UNSCORED


def unscored_pool(frames: NuScenesFrames, store: LabelStore, k: int, grid: GridSpec, selection: SelectionConfig):
    """The pool as `score_pool` returns it for a selection that reads no score: tokens, scenes, which frames are
    labelled, candidates without scores (cost 1), features of width 0; with point annotation each candidate's
    points and boxes, which come from the dataset and the store (round k), not from the network."""
    arrays = labelled_round(store, k, frames)
    tokens = list(frames.tokens)
    labelled = labelled_frames(store, tokens)
    scenes = [frames.scene_of(t) for t in tokens]
    cands = [Candidate(t, s) for t, s, done in zip(tokens, scenes, labelled) if not done]
    pool = PoolScores(tokens, scenes, labelled, np.zeros((len(tokens), 0), np.float32), cands)
    if selection.points:
        _point_costs(pool, frames, grid, selection, arrays)
    return pool


def _point_costs(pool: PoolScores, frames, grid: GridSpec, sel: SelectionConfig, arrays) -> None:
    """selection.annotation points (issue 24): every candidate's points and boxes to label (per tile too with
    regions); with cost_model its cost in points (points + box_points x boxes)."""
    cells = pool.regions.cell_tiles() if pool.regions is not None else None
    for c in pool.candidates:
        i = arrays.index(c.token)
        c.point_cost = frame_cost(
            frames,
            c.token,
            grid,
            cells,
            lambda i=i: (arrays.read(i, "semantics"), arrays.read(i, "mask_camera")),
        )
        if sel.cost_model:
            c.cost = c.point_cost.cost(sel.box_points)


class _FusedFrameScores(torch.utils.data.Dataset):
    """Per pool index: one frame's fused-label uncertainty sums and counts by class (and by tile and class), and
    its cost: `fusion_pool`'s per-frame work, read in DataLoader workers (each opens the store itself)."""

    def __init__(self, path, grid, tokens, indices, regions, selection):
        self.path, self.grid, self.tokens, self.indices = path, grid, tokens, indices
        self.regions, self.selection = regions, selection
        # (X, Y, Z) tile of every voxel, once (not per frame)
        self.tile_of = None if regions is None else regions.voxel_tiles()
        self.arrays = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple:
        if self.arrays is None:
            self.arrays = LabelStore.open(self.path, self.grid).round(0)
        i = self.indices[j]
        f = self.arrays.index(self.tokens[i])
        sem = self.arrays.read(f, "semantics").astype(np.int64)
        mask = self.arrays.read(f, "mask_camera").astype(bool) & (sem != IGNORE_ID)
        cls = sem[mask]
        unc = 1.0 - self.arrays.read(f, "confidence")[mask].astype(np.float64) / 255.0
        sums = np.bincount(cls, unc, NUM_CLASSES)
        counts = np.bincount(cls, minlength=NUM_CLASSES).astype(np.float64)
        tiles = None
        if self.regions is not None:
            code = self.tile_of[mask] * NUM_CLASSES + cls
            size = self.regions.count * NUM_CLASSES
            tiles = (
                np.bincount(code, unc, size).reshape(self.regions.count, NUM_CLASSES),
                np.bincount(code, minlength=size).reshape(self.regions.count, NUM_CLASSES).astype(np.float64),
            )
        cost = self.selection.frame_cost + self.selection.voxel_cost * int((cls != FREE_ID).sum())
        return i, (sums, counts, 0.0, 0.0, cost, np.zeros(0, np.float32), tiles)


def fusion_pool(
    frames: NuScenesFrames,
    store: LabelStore,
    k: int,
    fused: LabelStore,
    selection: SelectionConfig,
    progress: bool = True,
    workers: int | None = None,
) -> PoolScores | None:
    """The pool scored by its fused labels (`fused`, the store `fuse_round` wrote; no network): a voxel's
    uncertainty is 1 - the confidence of its fused label, within the fused labels' mask_camera (unobserved voxels,
    which have no class to weigh, count 0); frames and tiles score as for the network's entropy (`_finish`), the
    classes weighted by (1 / their frequency among the pool's fused labels) ** `selection.fusion_class_power`
    (default 1: a tile of unsure barriers outranks one of unsure road). Which frames are labelled comes from
    `store` (round k must be labelled, as for `score_pool`). Under torchrun each rank reads frames
    ``i % world == rank`` (in DataLoader workers: `default_workers()` unless given) and rank 0 gathers them and
    returns the pool; the others None."""
    arrays = fused.round(0)
    done = arrays.done()
    missing = [t for t in frames.tokens if not arrays.has(t) or not done[arrays.index(t)]]
    if missing:
        raise DataError(
            f"{fused.path}: no fused labels for {len(missing)} pool frames (first {missing[0]}); run the fuse stage"
        )
    labelled_round(store, k, frames)
    regions = RegionGrid(store.grid.shape, selection.region_size) if selection.region else None
    tokens = list(frames.tokens)
    mine = [i for i in range(len(tokens)) if i % world_size() == rank()]
    data = _FusedFrameScores(fused.path, fused.grid, tokens, mine, regions, selection)
    loader = DataLoader(
        data, batch_size=None, num_workers=default_workers() if workers is None else workers, collate_fn=_as_is
    )
    bar = tqdm(loader, total=len(mine), desc="score pool (fused labels)", disable=not progress or not is_main())
    gathered = _gathered(dict(bar), len(tokens), "fusion_pool")
    if gathered is None:
        return None
    rows, counts = gathered
    labelled, annotated = _labelled(store, tokens, regions)
    pool = _finish(frames, labelled, rows, regions, selection.fusion_class_power, annotated)
    pool.scored_by = counts
    if selection.points:
        _point_costs(pool, frames, store.grid, selection, store.round(k))
    return pool


def _labelled(store: LabelStore, tokens: list[str], regions: RegionGrid | None) -> tuple[np.ndarray, dict | None]:
    """Which of `tokens` have manual labels (N,) bool and, with `regions`, their annotated tiles
    (`annotated_tiles`; None without regions): what `_finish` needs of the store."""
    labelled = labelled_frames(store, tokens)
    return labelled, (annotated_tiles(store, tokens, labelled, regions) if regions is not None else None)


def annotated_tiles(store: LabelStore, tokens: list[str], labelled: np.ndarray, regions: RegionGrid) -> dict:
    """Token -> (T,) bool, the tiles of `regions` holding a voxel an annotator labelled, for the `labelled` ones
    of `tokens` (their manual group's confidence 255: every tile of a whole-frame label). Reads one array per
    labelled frame."""
    manual = store.manual()
    cells = regions.cell_tiles().ravel()
    out = {}
    for t in np.asarray(tokens)[labelled]:
        annotated = (manual.read(manual.index(t), "confidence") == 255).any(-1).ravel()
        out[str(t)] = np.bincount(cells[annotated], minlength=regions.count) > 0
    return out


def _finish(
    frames,
    labelled: np.ndarray,
    rows: list[tuple],
    regions: RegionGrid | None = None,
    power: float = 0.5,
    annotated: dict | None = None,
) -> PoolScores:
    """The pool's scores from per-frame results in pool order (class weights over the whole pool, (1 / frequency)
    ** power; with `regions`, each candidate's tile scores use the same weights). `annotated` (with regions,
    `annotated_tiles`): a labelled frame with tiles left stays a candidate, its annotated tiles not visible."""
    annotated = annotated or {}
    ent_sum = np.stack([r[0] for r in rows]).astype(np.float64)
    counts = np.stack([r[1] for r in rows]).astype(np.float64)
    w = class_weights(torch.from_numpy(counts.sum(0)), power)
    unc = weighted_uncertainty(torch.from_numpy(ent_sum).float(), torch.from_numpy(counts).float(), w).numpy()
    cands = [
        Candidate(
            t,
            frames.scene_of(t),
            {"uncertainty": float(unc[i]), "disagreement": rows[i][2], "residual": rows[i][3]},
            rows[i][4],
        )
        for i, t in enumerate(frames.tokens)
        if not labelled[i] or (t in annotated and not annotated[t].all())
    ]
    if regions is not None:
        voxels = regions.voxels()
        by_token = {t: rows[i][6] for i, t in enumerate(frames.tokens)}
        for c in cands:
            sums, n = by_token[c.token]
            c.tile_scores, c.tile_visible = tile_scores(sums, w.numpy(), voxels), n.sum(-1)
            if c.token in annotated:  # labelled by tiles before: only its other tiles are offered
                c.tiles_before = annotated[c.token]
                c.tile_visible = np.where(c.tiles_before, 0, c.tile_visible)
    return PoolScores(
        list(frames.tokens),
        [frames.scene_of(t) for t in frames.tokens],
        labelled,
        np.stack([r[5] for r in rows]),
        cands,
        regions=regions,
    )


def select_pool(pool: PoolScores, cfg, device: str | torch.device | None = None) -> tuple[list[Pick], str]:
    """Run the selection on a scored pool: whole frames (`select_frames`) or, with ``selection.unit: region``,
    BEV tiles of frames under a voxel budget (`select_regions`)."""
    lab = pool.labelled
    row = {t: i for i, t in enumerate(pool.tokens)}
    rows = np.array([row[c.token] for c in pool.candidates], np.int64)  # a frame with tiles left is both
    args = (pool.candidates, pool.features[rows], pool.features[lab], cfg)
    kw = {"n_labelled": int(lab.sum()), "pool_size": len(pool.tokens), "device": device}
    if cfg.region:
        if pool.regions is None or pool.regions.size != cfg.region_size:
            raise ValueError("select_pool: the pool was not scored for selection.unit region with this region_size")
        return select_regions(*args, pool.regions, **kw)
    return select_frames(*args, **kw)
