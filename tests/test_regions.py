"""Region-level annotation (issue 21): BEV tiles, their scores and selection under a voxel budget, tile
manifests, partial deliveries at ingest, the 3D loss trusting only annotated voxels, the oracle's tiles."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from autolabel.active.config import SelectionConfig, check_region_budget
from autolabel.active.regions import RegionGrid, bounds_mask, tile_entropy_by_class, tile_scores
from autolabel.active.scores import entropy_by_class
from autolabel.active.select import Candidate, select_regions
from autolabel.cli import main
from autolabel.data.occ3d import Occ3DLabels, labels_path, read_labels, write_labels
from autolabel.errors import DataError
from autolabel.store.labels import LabelStore
from occnet.classes import FREE_ID, IGNORE_ID


# ---- config -------------------------------------------------------------------------------------------------
def test_region_config_is_validated_with_clear_errors():
    with pytest.raises(ValueError, match="selection.unit must be one of"):
        SelectionConfig(unit="tile")
    with pytest.raises(ValueError, match="cost_model prices whole frames"):
        SelectionConfig(unit="region", cost_model=True, budget=1e6)
    with pytest.raises(ValueError, match="region_size must be >= 1"):
        SelectionConfig(unit="region", region_size=0)
    cfg = SelectionConfig(unit="region", budget=10)  # a frame count left in place
    with pytest.raises(
        ValueError,
        match=r"in labelled voxels .* 25 x 25 x 16 = 10000 voxels; a budget of N frames "
        r"is N x 640000 voxels",
    ):
        check_region_budget(cfg, (200, 200, 16))
    check_region_budget(SelectionConfig(unit="region", budget=10_000), (200, 200, 16))
    check_region_budget(SelectionConfig(budget=10), (200, 200, 16))  # frames: nothing to check
    with pytest.raises(ValueError, match="larger than the grid"):
        check_region_budget(SelectionConfig(unit="region", region_size=300, budget=1e9), (200, 200, 16))
    from autolabel.config_io import from_dict
    from autolabel.recipe import Recipe

    with pytest.raises(DataError, match="selection.budget is in labelled voxels"):
        from_dict(Recipe, {"data": {"dataroot": "x"}, "selection": {"unit": "region", "budget": 10}})


# ---- tiles and their scores ---------------------------------------------------------------------------------
def test_tiles_cover_the_grid_and_their_scores_add_up_to_the_frame():
    occ3d = RegionGrid((200, 200, 16), 25)
    assert occ3d.per_side == (8, 8) and occ3d.count == 64 and (occ3d.voxels() == 10_000).all()
    assert occ3d.bounds(9) == [[25, 50], [25, 50], [0, 16]]
    ragged = RegionGrid((64, 64, 8), 25)  # the last row and column are cut at the edge
    assert ragged.per_side == (3, 3) and ragged.bounds(8) == [[50, 64], [50, 64], [0, 8]]
    assert ragged.voxels().sum() == 64 * 64 * 8
    assert bounds_mask((64, 64, 8), [ragged.bounds(t) for t in range(9)]).all()
    tiles = ragged.cell_tiles()
    assert tiles[0, 0] == 0 and tiles[30, 0] == 3 and tiles[63, 63] == 8

    g = torch.Generator().manual_seed(0)
    probs = (8 * torch.rand(64, 64, 8, 18, generator=g)).softmax(-1)
    probs[:25, :25] = 0.001 / 17  # tile 0: confident (free) ...
    probs[:25, :25, :, FREE_ID] = 0.999
    probs[25:50, 50:] = 1 / 18  # ... tile 5: as confused as it gets
    mask = torch.rand(64, 64, 8, generator=g) > 0.3
    mask[50:, 50:] = False  # tile 8: nothing visible
    sums, counts = tile_entropy_by_class(probs, mask, ragged)
    assert sums.shape == counts.shape == (9, 18)
    fs, fc = entropy_by_class(probs, mask)
    np.testing.assert_allclose(sums.sum(0), fs.numpy(), rtol=1e-4)
    np.testing.assert_array_equal(counts.sum(0), fc.numpy())
    assert counts[8].sum() == 0
    score = tile_scores(sums, np.ones(18), ragged.voxels())
    assert score[8] == 0 and int(np.argmax(score)) == 5 and int(np.argmin(score[:8])) == 0


# ---- selection ----------------------------------------------------------------------------------------------
def _region_pool(n_scenes=3, per_scene=4, tiles=16, seed=0):
    rng = np.random.default_rng(seed)
    cands = []
    for s in range(n_scenes):
        for i in range(per_scene):
            visible = rng.integers(0, 50, tiles).astype(float)
            visible[rng.random(tiles) < 0.25] = 0
            cands.append(
                Candidate(
                    f"t{s}{i}",
                    f"scene{s}",
                    {"uncertainty": float(rng.random())},
                    tile_scores=rng.random(tiles) * (visible > 0),
                    tile_visible=visible,
                )
            )
    return cands, rng.normal(size=(len(cands), 8))


@pytest.mark.parametrize("strategy", ["random", "stratified", "entropy", "coreset", "kmeans", "hybrid", "auto"])
def test_region_selection_holds_budget_caps_and_is_deterministic(strategy):
    cands, feats = _region_pool()
    regions = RegionGrid((64, 64, 8), 16)  # 4 x 4 tiles of 2,048 voxels
    cfg = SelectionConfig(
        strategy=strategy, unit="region", budget=2048 * 11 + 100, per_scene_cap=2, max_tiles_per_frame=3
    )
    picks, used = select_regions(cands, feats, np.zeros((0, 8)), cfg, regions)
    again, _ = select_regions(cands, feats, np.zeros((0, 8)), cfg, regions)
    assert [(p.candidate.token, p.tiles) for p in picks] == [(p.candidate.token, p.tiles) for p in again]
    assert used == (strategy if strategy != "auto" else "stratified")
    total = sum(p.voxels for p in picks)
    assert total == 2048 * 11 == sum(len(p.tiles) for p in picks) * 2048  # the budget is spent in whole tiles
    assert all(len(p.tiles) <= 3 and len(set(p.tiles)) == len(p.tiles) for p in picks)
    scenes = [p.candidate.scene for p in picks]
    assert max(scenes.count(s) for s in set(scenes)) <= 2 and len(set(p.candidate.token for p in picks)) == len(picks)
    assert all(p.candidate.tile_visible[t] > 0 for p in picks for t in p.tiles)  # never a tile with nothing visible


def test_region_entropy_takes_the_most_uncertain_tiles_of_the_pool():
    cands, feats = _region_pool()
    regions = RegionGrid((64, 64, 8), 16)
    cfg = SelectionConfig(strategy="entropy", unit="region", budget=2048 * 5, per_scene_cap=10, max_tiles_per_frame=16)
    picks, _ = select_regions(cands, feats, np.zeros((0, 8)), cfg, regions)
    pairs = sorted(
        ((c.tile_scores[t], c.token, t) for c in cands for t in range(16) if c.tile_visible[t] > 0), reverse=True
    )
    assert {(p.candidate.token, t) for p in picks for t in p.tiles} == {(tok, t) for _, tok, t in pairs[:5]}
    with pytest.raises(ValueError, match="does not buy one tile"):
        select_regions(cands, feats, np.zeros((0, 8)), SelectionConfig(unit="region", budget=10), regions)


def test_a_random_share_spends_the_rest_of_the_budget_beside_the_ranking():
    cands, feats = _region_pool(n_scenes=4)
    regions = RegionGrid((64, 64, 8), 16)
    budget = 2048 * 8
    ranked = SelectionConfig(strategy="entropy", unit="region", budget=budget, per_scene_cap=10, max_tiles_per_frame=16)
    mixed = replace(ranked, random_share=0.5)
    pure, _ = select_regions(cands, feats, np.zeros((0, 8)), ranked, regions)
    picks, used = select_regions(cands, feats, np.zeros((0, 8)), mixed, regions)
    again, _ = select_regions(cands, feats, np.zeros((0, 8)), mixed, regions)
    assert used == "entropy" and [(p.candidate.token, p.tiles) for p in picks] == [
        (p.candidate.token, p.tiles) for p in again
    ]
    assert sum(p.voxels for p in picks) == budget
    pairs = [(p.candidate.token, t) for p in picks for t in p.tiles]
    assert len(set(pairs)) == 8  # no tile twice
    top = sorted(((c.tile_scores[t], c.token, t) for c in cands for t in range(16) if c.tile_visible[t]), reverse=True)
    # half the budget by rank: the 4 most uncertain tiles of the pool; the other 4 drawn at random from the rest
    assert {(tok, t) for _, tok, t in top[:4]} <= set(pairs)
    assert set(pairs) != {(tok, t) for _, tok, t in top[:8]} == {(p.candidate.token, t) for p in pure for t in p.tiles}
    assert all(p.candidate.tile_visible[t] > 0 for p in picks for t in p.tiles)
    assert any("random share" in p.reason for p in picks)
    with pytest.raises(ValueError, match=r"random_share must be in \[0, 1\)"):
        SelectionConfig(unit="region", budget=1e6, random_share=1.0)


# ---- the 3D loss trusts only annotated voxels ----------------------------------------------------------------
def test_labels_outside_the_annotated_tiles_never_reach_the_loss(pool_world):
    """A region-level manual label whose voxels outside the tiles carry wrong classes trains exactly like one
    whose outside voxels are right (or absent); the teacher's pseudo-labels teach the outside voxels only."""
    from occnet.config import LossConfig, RenderConfig, TrainConfig
    from occnet.network import OccupancyNetwork
    from occnet.trainer import Trainer
    from tiny_models import NET, TINY_GRID

    from autolabel.data.nuscenes import NuScenesFrames
    from autolabel.network_input import FrameDataset
    from occnet.config import NetworkConfig

    frames = NuScenesFrames(pool_world, "v1.0-synth", grid=TINY_GRID)
    token = frames.tokens[0]
    gt = frames.frame(token, images=False).gt
    tiles = bounds_mask(TINY_GRID.shape, [RegionGrid(TINY_GRID.shape, 16).bounds(t) for t in (5, 10)])
    wrong = np.where(tiles, gt.semantics, np.where(gt.semantics == FREE_ID, 4, FREE_ID)).astype(np.uint8)
    ann = tiles.astype(np.uint8)

    def batch(sem):
        lab = Occ3DLabels(sem, gt.mask_lidar, gt.mask_camera, mask_annotated=ann)
        item = FrameDataset(frames, (64, 112), labels="exact", indices=[0], manual={token: lab})[0]
        return {k: (v[None] if torch.is_tensor(v) else v) for k, v in item.items()}

    right, bad = batch(gt.semantics), batch(wrong)
    assert bad["gt_annotated"].sum() == tiles.sum() and not bad["gt_mask"][0][~torch.from_numpy(tiles)].any()
    pseudo = torch.from_numpy(gt.semantics.astype(np.int64))[None]

    def annotate(b, step, sem=pseudo):
        return {"pseudo_semantics": sem, "pseudo_confidence": torch.ones(sem.shape), "has_pseudo": torch.tensor([True])}

    torch.manual_seed(0)
    model = OccupancyNetwork(NetworkConfig(**{**NET, "grid": TINY_GRID})).eval()
    off = dict(depth=0, semantics_2d=0, depth_distribution=0, line_of_sight=0)
    trainer = Trainer(
        model,
        RenderConfig(rays_per_frame=64),
        LossConfig(labels_3d=1, pseudo_3d=1, **off),
        TrainConfig(steps=1),
        Path("/nonexistent"),
        torch.device("cpu"),
        annotate=annotate,
    )
    with torch.no_grad():
        a, b = trainer.losses(right, 0), trainer.losses(bad, 0)
        torch.testing.assert_close(a["labels3d"], b["labels3d"])
        whole = dict(
            bad, gt_annotated=torch.ones_like(bad["gt_annotated"]), gt_mask=torch.from_numpy(gt.mask_camera)[None]
        )
        assert not torch.allclose(trainer.losses(whole, 0)["labels3d"], a["labels3d"])  # wrong labels would count
        # pseudo-labels: changed inside the tiles -> no effect; changed outside -> the loss moves
        flip = torch.where(pseudo == FREE_ID, 4, FREE_ID)
        t = torch.from_numpy(tiles)[None]
        trainer.annotate = lambda b_, s_: annotate(b_, s_, torch.where(t, flip, pseudo))
        torch.testing.assert_close(trainer.losses(bad, 0)["pseudo3d"], a["pseudo3d"])
        trainer.annotate = lambda b_, s_: annotate(b_, s_, torch.where(t, pseudo, flip))
        assert not torch.allclose(trainer.losses(bad, 0)["pseudo3d"], a["pseudo3d"])


# ---- the round protocol -------------------------------------------------------------------------------------
@pytest.fixture
def region_run(trained, tmp_path) -> Path:
    shutil.copytree(trained, tmp_path / "t")
    recipe = tmp_path / "t" / "recipe.yaml"
    r = yaml.safe_load(recipe.read_text())
    r["out"] = str(tmp_path / "t" / "run")
    r["selection"] = {
        "unit": "region",
        "region_size": 16,
        "budget": 2048 * 5,
        "per_scene_cap": 1,
        "max_tiles_per_frame": 3,
        "strategy": "entropy",
    }
    recipe.write_text(yaml.safe_dump(r))
    return recipe


def test_region_round_select_oracle_ingest_export(region_run, pool_world, tmp_path, capsys):
    from autolabel.stages import ingest_folder as ingest
    from autolabel.stages import oracle_delivery
    from autolabel.recipe import load_recipe
    from autolabel.store.manual import labelled_voxels, manual_labels
    from tiny_models import TINY_GRID

    run = region_run.parent / "run"
    assert main(["select", str(region_run), "--round", "0", "--budget", "10"]) == 2  # a frame count, refused
    assert "labelled voxels" in capsys.readouterr().err
    assert main(["select", str(region_run), "--round", "0"]) == 0
    manifest = json.loads((run / "round_0" / "select" / "manifest.json").read_text())
    assert manifest["unit"] == "region" and manifest["budget_unit"] == "voxels" and manifest["tiles_per_side"] == [4, 4]
    rows = manifest["selected"]
    assert len(rows) == 2 and sum(len(r["tiles"]) for r in rows) == 5  # 2 scenes, cap 1: 3 + 2 tiles
    assert manifest["voxels_total"] == manifest["spent"] == sum(r["voxels"] for r in rows) == 5 * 2048
    assert all(r["cost"] == r["voxels"] == 2048 * len(r["tiles"]) and r["tiles_labelled_before"] == [] for r in rows)
    regions = RegionGrid(TINY_GRID.shape, 16)
    assert all(t["bounds"] == regions.bounds(t["index"]) for r in rows for t in r["tiles"])
    assert "tiles to label" in (run / "round_0" / "select" / "index.html").read_text()

    recipe = load_recipe(region_run)
    ann = tmp_path / "ann"
    assert oracle_delivery(recipe, 0, pool_world, ann) == 2
    for r in rows:  # the oracle delivers the requested tiles only
        got = read_labels(labels_path(ann, r["scene"], r["token"]), TINY_GRID)
        want = bounds_mask(TINY_GRID.shape, [t["bounds"] for t in r["tiles"]])
        np.testing.assert_array_equal(got.mask_annotated.astype(bool), want)
        assert (got.semantics[~want] == IGNORE_ID).all() and not got.mask_camera[~want].any()

    # a delivery missing part of a requested tile is refused, naming the frame and the tile
    r0 = rows[0]
    path = labels_path(ann, r0["scene"], r0["token"])
    good = read_labels(path, TINY_GRID)
    (x0, _), (y0, _), _ = r0["tiles"][0]["bounds"]
    holed = good.semantics.copy()
    holed[x0, y0, 0] = IGNORE_ID
    write_labels(
        path, Occ3DLabels(holed, good.mask_lidar, good.mask_camera, mask_annotated=good.mask_annotated), TINY_GRID
    )
    with pytest.raises(DataError, match=f"frame {r0['token']} tile {r0['tiles'][0]['index']} .* 1 of 2048 voxels"):
        ingest(recipe, 0, ann)
    # a full-frame delivery with wrong classes outside the tiles: accepted, only the tiles are stored
    truth = read_labels(labels_path(pool_world, r0["scene"], r0["token"]), TINY_GRID)
    want = bounds_mask(TINY_GRID.shape, [t["bounds"] for t in r0["tiles"]])
    wrong = np.where(want, truth.semantics, 4).astype(np.uint8)
    write_labels(path, Occ3DLabels(wrong, truth.mask_lidar, truth.mask_camera), TINY_GRID)
    s = ingest(recipe, 0, ann)
    assert len(s["added"]) == 2 and s["voxels_added"] == s["manual_voxels"] == 5 * 2048
    manual = LabelStore.open(run / "labels.zarr").manual()
    i = manual.index(r0["token"])
    np.testing.assert_array_equal(manual.read(i, "confidence") == 255, want)
    np.testing.assert_array_equal(manual.read(i, "semantics"), np.where(want, truth.semantics, IGNORE_ID))
    assert not manual.read(i, "mask_camera")[~want].any()
    assert ingest(recipe, 0, ann)["unchanged"] == [r["token"] for r in rows]  # idempotent
    labels = manual_labels(run / "labels.zarr", TINY_GRID)
    np.testing.assert_array_equal(labels[r0["token"]].mask_annotated.astype(bool), want)
    assert labelled_voxels(labels, TINY_GRID.shape) == 5 * 2048

    # a later round asks for other tiles of the same frame: they merge into its label, the first tiles kept
    first = [t["index"] for t in r0["tiles"]]
    later = [t for t in range(regions.count) if t not in first][:2]
    m1 = dict(manifest, selected=[dict(r0, tiles=[dict(index=t, bounds=regions.bounds(t)) for t in later])])
    (run / "round_1" / "select").mkdir(parents=True)
    (run / "round_1" / "select" / "manifest.json").write_text(json.dumps(m1))
    ann1 = tmp_path / "ann1"
    assert oracle_delivery(recipe, 1, pool_world, ann1) == 1
    s = ingest(recipe, 1, ann1)
    assert s["added"] == [r0["token"]] and s["voxels_added"] == 2 * 2048 and s["manual_voxels"] == 7 * 2048
    both = want | bounds_mask(TINY_GRID.shape, [regions.bounds(t) for t in later])
    np.testing.assert_array_equal(manual.read(i, "confidence") == 255, both)
    np.testing.assert_array_equal(manual.read(i, "semantics"), np.where(both, truth.semantics, IGNORE_ID))
    assert ingest(recipe, 1, ann1)["unchanged"] == [r0["token"]]  # idempotent
    # a later delivery that disagrees with a voxel annotated before is refused, and nothing is changed
    m1["selected"][0]["tiles"] = [dict(index=first[0], bounds=regions.bounds(first[0]))]
    (run / "round_1" / "select" / "manifest.json").write_text(json.dumps(m1))
    path1 = labels_path(ann1, r0["scene"], r0["token"])
    write_labels(path1, Occ3DLabels(np.full_like(truth.semantics, 4), truth.mask_lidar, truth.mask_camera), TINY_GRID)
    with pytest.raises(DataError, match=f"frame {r0['token']} was already ingested with different labels"):
        ingest(recipe, 1, ann1)
    np.testing.assert_array_equal(manual.read(i, "semantics"), np.where(both, truth.semantics, IGNORE_ID))
    want = both

    # the export: annotated tiles over the round's pseudo-labels, label_source 'region'
    assert main(["export", str(run / "labels.zarr"), str(tmp_path / "export"), "--round", "0"]) == 0
    summary = json.loads((tmp_path / "export" / "export.json").read_text())
    assert set(summary["region_tokens"]) == {r["token"] for r in rows} and summary["frames_manual"] == 0
    got = read_labels(labels_path(tmp_path / "export", r0["scene"], r0["token"]), TINY_GRID)
    pseudo = LabelStore.open(run / "labels.zarr").round(0)
    assert got.source == "region" and (got.semantics != IGNORE_ID).all()
    np.testing.assert_array_equal(got.semantics[want], truth.semantics[want])
    np.testing.assert_array_equal(got.semantics[~want], pseudo.read(pseudo.index(r0["token"]), "semantics")[~want])


def test_a_region_frame_of_fused_labels_exports_valid_occ3d_ids(tmp_path):
    """Fused labels leave unobserved voxels 255; outside the annotated tiles the export writes them as the
    pseudo-label frames do (free, not confident), never as an id no Occ3D reader knows (bug: 255 was written)."""
    from autolabel.store.export import _export_frame
    from tiny_models import TINY_GRID

    shape = TINY_GRID.shape
    rng = np.random.default_rng(0)
    sem = rng.integers(0, 18, shape).astype(np.uint8)
    sem[: shape[0] // 2] = IGNORE_ID  # fusion saw nothing there
    f = {
        "semantics": sem,
        "confidence": np.full(shape, 200, np.uint8),
        "mask_camera": np.ones(shape, np.uint8),
        "mask_lidar": np.ones(shape, np.uint8),
    }
    tile = bounds_mask(shape, [RegionGrid(shape, 8).bounds(0)])
    truth = rng.integers(0, 18, shape).astype(np.uint8)
    m = {
        "semantics": np.where(tile, truth, IGNORE_ID).astype(np.uint8),
        "confidence": (tile * 255).astype(np.uint8),
        "mask_camera": tile.astype(np.uint8),
        "mask_lidar": tile.astype(np.uint8),
    }
    path = tmp_path / "labels.npz"
    assert _export_frame(f, m, None, TINY_GRID, path, "tok")[0] == "region"
    got = read_labels(path, TINY_GRID)
    assert got.semantics.max() <= FREE_ID
    np.testing.assert_array_equal(got.semantics[tile], truth[tile])
    unseen = (sem == IGNORE_ID) & ~tile
    assert (got.semantics[unseen] == FREE_ID).all() and not got.mask_confident[unseen].any()


# ---- selection by the fused labels' own uncertainty (selection.strategy fusion) ----------------------------------
class _Pool:
    """What fusion_pool reads of a NuScenesFrames: the pool's tokens in order and each one's scene."""

    def __init__(self, tokens, scenes):
        self.tokens, self._scene = tuple(tokens), dict(zip(tokens, scenes))

    def scene_of(self, token):
        return self._scene[token]


def _fused_store(path, frames: list[dict], tokens, scenes) -> LabelStore:
    from tiny_models import TINY_GRID

    store = LabelStore(path, TINY_GRID, create=True)
    arrays = store.create_round(0, tokens, scenes, {"checkpoint_sha256": "0" * 64})
    for i, f in enumerate(frames):
        arrays.write(i, **f)
    return store


def test_fusion_pool_ranks_unsure_rare_classes_first_and_needs_every_frame(tmp_path):
    """A voxel's uncertainty is 1 - its fused label's confidence, weighted by its class's rarity among the pool's
    fused labels: a tile of unsure barriers outranks one of equally unsure road and one of sure barriers; a frame's
    score is its weighted mean; unobserved voxels (255) count nothing; a pool frame without fused labels is refused."""
    from autolabel.active.pool import fusion_pool
    from tiny_models import TINY_GRID

    shape = TINY_GRID.shape
    regions = RegionGrid(shape, 16)
    tile = [bounds_mask(shape, [regions.bounds(t)]) for t in range(regions.count)]
    road, barrier = 11, 1

    def frame(unsure_tile, cls):
        sem = np.full(shape, FREE_ID, np.uint8)
        sem[:, :, 0] = road  # a pool mostly of road
        conf = np.full(shape, 255, np.uint8)
        sem[tile[unsure_tile] & (np.arange(shape[2]) == 1)] = cls
        conf[tile[unsure_tile] & (np.arange(shape[2]) <= 1)] = 100  # unsure there, road and barrier alike
        sem[tile[3] & (np.arange(shape[2]) == 2)] = barrier  # sure barriers
        sem[tile[2]] = np.where(sem[tile[2]] == FREE_ID, IGNORE_ID, sem[tile[2]])  # fusion saw nothing there
        return {"semantics": sem, "confidence": conf, "mask_camera": np.ones(shape, np.uint8), "mask_lidar": sem * 0}

    tokens, scenes = ["a", "b"], ["s0", "s1"]
    frames = [frame(0, barrier), frame(1, road)]
    store = _fused_store(tmp_path / "labels.zarr", frames, tokens, scenes)
    cfg = SelectionConfig(unit="region", region_size=16, budget=regions.voxels()[0], per_scene_cap=1)
    pool = fusion_pool(_Pool(tokens, scenes), store, 0, store, cfg)
    a, b = pool.candidates
    assert a.tile_scores.argmax() == 0 and b.tile_scores.argmax() == 1
    assert a.tile_scores[0] > b.tile_scores[1] > 0  # unsure barriers before unsure road
    assert a.tile_scores[3] == b.tile_scores[3] == 0  # sure barriers: nothing to gain
    assert a.scores["uncertainty"] > b.scores["uncertainty"]
    picks, strategy = select_regions(
        pool.candidates, pool.features, pool.features[:0], replace(cfg, strategy="fusion"), regions
    )
    assert strategy == "fusion" and [(p.candidate.token, p.tiles) for p in picks] == [("a", [0])]
    assert "fused-label uncertainty" in picks[0].reason
    # selection.fusion_class_power 0: every class weighs alike, so unsure road is worth unsure barriers
    flat = fusion_pool(_Pool(tokens, scenes), store, 0, store, replace(cfg, fusion_class_power=0.0))
    a0, b0 = flat.candidates
    assert a0.tile_scores[0] == pytest.approx(b0.tile_scores[1]) and a0.tile_scores[0] > 0
    with pytest.raises(ValueError, match="fusion_class_power must be in"):
        replace(cfg, fusion_class_power=-1.0)
    # the fused store lacks a pool frame
    with pytest.raises(DataError, match="no fused labels for 1 pool frames .*run the fuse stage"):
        fusion_pool(_Pool(tokens + ["c"], scenes + ["s2"]), store, 0, store, cfg)


def test_a_frame_labelled_by_tiles_offers_its_other_tiles_to_the_next_round(tmp_path, monkeypatch):
    """A frame annotated by tiles stays a candidate of a region round, without the tiles it has; a frame labelled
    whole leaves the pool; frame rounds leave out both. The candidates' diversity features are their own rows."""
    from autolabel.active.ingest import tile_arrays
    from autolabel.active.pool import fusion_pool, select_pool
    from tiny_models import TINY_GRID

    shape = TINY_GRID.shape
    regions = RegionGrid(shape, 16)
    sem = np.full(shape, FREE_ID, np.uint8)
    sem[:, :, 0] = 11
    f = {"semantics": sem, "confidence": np.full(shape, 100, np.uint8), "mask_camera": np.ones(shape, np.uint8)}
    f["mask_lidar"] = f["mask_camera"]
    tokens, scenes = ["a", "b", "c"], ["s0", "s1", "s2"]
    store = _fused_store(tmp_path / "labels.zarr", [f, f, f], tokens, scenes)
    manual = store.manual(tokens, scenes, create=True)
    manual.write(0, **tile_arrays(Occ3DLabels(sem, f["mask_lidar"], f["mask_camera"]), [regions.bounds(0)], shape))
    manual.write(1, semantics=sem, confidence=np.full(shape, 255, np.uint8), mask_camera=f["mask_camera"],
                 mask_lidar=f["mask_lidar"])  # fmt: skip
    budget = regions.voxels()[0] * 2 * regions.count  # room for every tile left
    cfg = SelectionConfig(unit="region", region_size=16, budget=budget, strategy="fusion", max_tiles_per_frame=64)
    pool = fusion_pool(_Pool(tokens, scenes), store, 0, store, cfg)
    assert [c.token for c in pool.candidates] == ["a", "c"] and pool.labelled.tolist() == [True, True, False]
    a = pool.candidates[0]
    assert a.tile_visible[0] == 0 and (a.tile_visible[1:] > 0).all() and (pool.candidates[1].tile_visible > 0).all()
    assert np.flatnonzero(a.tiles_before).tolist() == [0] and pool.candidates[1].tiles_before is None
    picks, _ = select_pool(pool, cfg)
    got = {p.candidate.token: sorted(p.tiles) for p in picks}
    assert got == {"a": list(range(1, regions.count)), "c": list(range(regions.count))}
    pool.features = np.arange(3, dtype=np.float32)[:, None]  # rows a, b, c
    cands = []
    monkeypatch.setattr(
        "autolabel.active.pool.select_regions", lambda c, feats, lab, *a, **k: cands.append((feats, lab)) or ([], "")
    )
    select_pool(pool, cfg)
    np.testing.assert_array_equal(cands[0][0][:, 0], [0, 2])  # a and c, not a and b
    np.testing.assert_array_equal(cands[0][1][:, 0], [0, 1])  # the annotated frames
    frame = fusion_pool(_Pool(tokens, scenes), store, 0, store, SelectionConfig(strategy="fusion"))
    assert [c.token for c in frame.candidates] == ["c"]


def test_auto_takes_fusion_for_tiles_of_a_run_that_fuses():
    from autolabel.active.select import fusion_default
    from autolabel.config_io import from_dict
    from autolabel.recipe import Recipe

    tiles = SelectionConfig(unit="region", budget=1e6)
    assert fusion_default(tiles, True).strategy == "fusion"
    assert fusion_default(tiles, False).strategy == "auto"  # resolves as before: stratified, then hybrid
    assert fusion_default(SelectionConfig(), True).strategy == "auto"  # whole frames: stratified random
    assert fusion_default(SelectionConfig(unit="region", budget=1e6, strategy="random"), True).strategy == "random"
    with pytest.raises(DataError, match="selection.strategy: fusion ranks by the fused labels: set fusion.enabled"):
        from_dict(Recipe, {"data": {"dataroot": "x"}, "selection": {"strategy": "fusion"}})
