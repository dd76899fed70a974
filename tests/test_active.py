"""Active selection: scores, diversity, budgets and caps, the select / ingest round protocol."""

from __future__ import annotations

from dataclasses import replace

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from autolabel.active.config import SelectionConfig
from autolabel.active.diversity import k_center_greedy, k_center_radius, kmeans_pp
from autolabel.active.scores import class_weights, disagreement, uncertainty, voxel_distribution
from autolabel.active.select import Candidate, select_frames
from autolabel.cli import main
from autolabel.data.occ3d import Occ3DLabels, labels_path, write_labels
from autolabel.errors import DataError
from autolabel.store.labels import LabelStore
from occnet.classes import FREE_ID


# ---- scores on hand-made predictions ----------------------------------------------------------------------
def _probs(shape, peak: float, cls: int) -> torch.Tensor:
    """(..., 18) distributions with `peak` on class `cls`, the rest spread evenly."""
    p = torch.full((*shape, 18), (1 - peak) / 17)
    p[..., cls] = peak
    return p


def test_uncertainty_ranks_confused_frames_first_and_weights_rare_classes():
    mask = torch.ones(4, 4, 2, dtype=torch.bool)
    w = torch.ones(18)
    sure, unsure = _probs((4, 4, 2), 0.95, 4), _probs((4, 4, 2), 0.4, 4)
    assert uncertainty(unsure, mask, w) > uncertainty(sure, mask, w)
    # two frames, equally uncertain voxels: one predicts a common class (car), the other a rare one (bicycle)
    hist = torch.zeros(18)
    hist[4], hist[2], hist[FREE_ID] = 1000, 10, 10000
    weights = class_weights(hist)
    assert weights[2] > weights[4] > weights[FREE_ID]
    assert float((weights * hist / hist.sum()).sum()) == pytest.approx(1.0, rel=1e-5)
    half = _probs((4, 4, 2), 0.95, FREE_ID)
    common, rare = half.clone(), half.clone()
    common[:, :, 1] = _probs((4, 4), 0.4, 4)
    rare[:, :, 1] = _probs((4, 4), 0.4, 2)
    assert uncertainty(rare, mask, weights) > uncertainty(common, mask, weights)
    assert uncertainty(rare, mask, w) == pytest.approx(uncertainty(common, mask, w))  # the weights make the difference
    # voxels outside mask_camera do not count
    assert uncertainty(rare, torch.zeros_like(mask), weights) == 0.0


def test_voxel_distribution_and_disagreement():
    density = torch.tensor([0.0, 1e4])
    logits = torch.zeros(2, 17)
    p = voxel_distribution(density, logits, 0.4)
    assert p[0, FREE_ID] == pytest.approx(1.0) and p[1, FREE_ID] == pytest.approx(0.0)
    torch.testing.assert_close(p.sum(-1), torch.ones(2))
    a = torch.tensor([1, 2, 3, 4])
    b = torch.tensor([1, 2, 0, 0])
    assert disagreement(a, b, torch.tensor([True, True, True, False])) == pytest.approx(1 / 3)


# ---- diversity -----------------------------------------------------------------------------------------
def test_k_center_greedy_is_within_twice_the_brute_force_optimum():
    rng = np.random.default_rng(0)
    for trial in range(20):
        x = rng.normal(size=(9, 2))
        k = 3
        best = min(k_center_radius(x, c) for c in itertools.combinations(range(9), k))
        greedy = k_center_greedy(x, k)
        assert len(set(greedy)) == k
        assert k_center_radius(x, greedy) <= 2 * best + 1e-9
    # with frames already labelled, the first pick is the point farthest from them
    x = np.array([[0.0, 0], [1, 0], [5, 0], [2, 0]])
    assert k_center_greedy(x, 1, selected=[0], candidates=[1, 2, 3]) == [2]
    assert sorted(kmeans_pp(x, 2, seed=0)) != [] and len(set(kmeans_pp(x, 3, seed=0))) == 3


def _random_pools(rng, trials: int):
    """Small pools of every shape the selection meets: float32 / float64, normalised or not, duplicates."""
    for trial in range(trials):
        n, m, dim = int(rng.integers(1, 50)), int(rng.integers(0, 8)), int(rng.integers(1, 40))
        x = rng.normal(size=(n + m, dim)).astype(np.float32 if trial % 2 else np.float64)
        if trial % 3 == 0 and n > 3:
            x[1] = x[2] = x[0]
        if trial % 5 == 0:
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield x, list(range(n)), list(range(n, n + m))


@pytest.mark.parametrize("chunk_bytes", [64 << 20, 256])  # one chunk, and chunks of a row or two
def test_chunked_k_center_matches_the_original_formula(chunk_bytes, monkeypatch):
    """Issue 21: the same picks as the N x M x D code (tests/reference_selection.py), whatever the chunking."""
    import reference_selection as ref

    from autolabel.active import distances

    monkeypatch.setattr(distances, "CHUNK_BYTES", chunk_bytes)
    for x, cand, sel in _random_pools(np.random.default_rng(0), 120):
        assert k_center_greedy(x, len(cand), selected=sel, candidates=cand) == ref.k_center_greedy(
            x, len(cand), selected=sel, candidates=cand
        )
        if sel and x.dtype == np.float64:
            assert k_center_radius(x, sel, cand) == ref.k_center_radius(x, sel, cand)


def test_selection_matches_the_original_code_pick_for_pick():
    """Every strategy, with and without the cost model, under caps that stop the budget pass early."""
    import reference_selection as ref

    rng = np.random.default_rng(1)
    for trial in range(25):
        n_scenes, per, dim, m = (
            int(rng.integers(1, 6)),
            int(rng.integers(1, 8)),
            int(rng.integers(2, 16)),
            int(rng.integers(0, 4)),
        )
        cands = [
            Candidate(f"t{s}_{i}", f"s{s}", {"uncertainty": float(rng.random())}, cost=1 + float(rng.random()) * 3)
            for s in range(n_scenes)
            for i in range(per)
        ]
        feats, lab = rng.normal(size=(len(cands), dim)), rng.normal(size=(m, dim))
        for strategy in ("random", "stratified", "entropy", "coreset", "kmeans", "hybrid", "auto"):
            for cost_model in (False, True):
                cfg = SelectionConfig(
                    strategy=strategy,
                    budget=float(rng.integers(1, 12)),
                    per_scene_cap=int(rng.integers(1, 4)),
                    cost_model=cost_model,
                    seed=trial,
                )
                a, sa = ref.select_frames(cands, feats, lab, cfg, n_labelled=m, pool_size=len(cands) + m)
                b, sb = select_frames(cands, feats, lab, cfg, n_labelled=m, pool_size=len(cands) + m)
                assert sa == sb and [(p.candidate.token, p.reason) for p in a] == [
                    (p.candidate.token, p.reason) for p in b
                ]


def test_distances_never_build_a_points_x_centers_x_dims_array():
    """3,000 candidates x 300 labelled x 256 numbers would be 1.8 GB as one float64 array."""
    import tracemalloc

    rng = np.random.default_rng(2)
    x = rng.normal(size=(3300, 256)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    tracemalloc.start()
    picks = k_center_greedy(x, 20, selected=range(3000, 3300), candidates=range(3000))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(set(picks)) == 20 and peak < 80 << 20


# ---- budgets and caps ----------------------------------------------------------------------------------------
def _pool(n_scenes=4, per_scene=5, seed=0):
    rng = np.random.default_rng(seed)
    cands = [
        Candidate(f"t{s}{i}", f"scene{s}", {"uncertainty": float(rng.random())}, cost=1.0 + float(rng.random()) * 3)
        for s in range(n_scenes)
        for i in range(per_scene)
    ]
    return cands, rng.normal(size=(len(cands), 8))


@pytest.mark.parametrize("strategy", ["random", "stratified", "entropy", "coreset", "kmeans", "hybrid"])
def test_budget_and_per_scene_cap_hold_exactly(strategy):
    cands, feats = _pool()
    cfg = SelectionConfig(strategy=strategy, budget=6, per_scene_cap=2)
    picks, used = select_frames(cands, feats, np.zeros((0, 8)), cfg)
    assert used == strategy and len(picks) == 6
    scenes = [p.candidate.scene for p in picks]
    assert max(scenes.count(s) for s in set(scenes)) <= 2
    assert len({p.candidate.token for p in picks}) == 6
    cost_cfg = SelectionConfig(strategy=strategy, budget=7.5, per_scene_cap=2, cost_model=True)
    picks, _ = select_frames(cands, feats, np.zeros((0, 8)), cost_cfg)
    assert 0 < sum(p.candidate.cost for p in picks) <= 7.5


def test_strategies_pick_what_they_promise():
    cands, feats = _pool()
    picks, _ = select_frames(
        cands, feats, np.zeros((0, 8)), SelectionConfig(strategy="entropy", budget=3, per_scene_cap=5)
    )
    top = sorted(cands, key=lambda c: -c.scores["uncertainty"])[:3]
    assert [p.candidate.token for p in picks] == [c.token for c in top]
    picks, _ = select_frames(
        cands, feats, np.zeros((0, 8)), SelectionConfig(strategy="stratified", budget=4, per_scene_cap=5)
    )
    assert len({p.candidate.scene for p in picks}) == 4  # one per scene before any scene gets a second
    # auto: scene-stratified random while few frames are labelled (issue 21's measurement), the hybrid afterwards
    assert select_frames(cands, feats, np.zeros((0, 8)), SelectionConfig(budget=2))[1] == "stratified"
    assert select_frames(cands, feats, feats[:5], SelectionConfig(budget=2), n_labelled=5, pool_size=25)[1] == "hybrid"


def test_a_random_share_of_frames_follows_the_ranked_ones():
    cands, feats = _pool()
    cfg = SelectionConfig(strategy="entropy", budget=8, per_scene_cap=5, random_share=0.5)
    picks, used = select_frames(cands, feats, np.zeros((0, 8)), cfg)
    top = [c.token for c in sorted(cands, key=lambda c: -c.scores["uncertainty"])]
    tokens = [p.candidate.token for p in picks]
    assert used == "entropy" and len(set(tokens)) == 8 and tokens[:4] == top[:4]  # half the budget by rank
    assert set(tokens[4:]) != set(top[4:8]) and all(p.reason.startswith("random share") for p in picks[4:])
    assert tokens == [p.candidate.token for p in select_frames(cands, feats, np.zeros((0, 8)), cfg)[0]]
    # the caps hold over both passes
    capped, _ = select_frames(cands, feats, np.zeros((0, 8)), replace(cfg, per_scene_cap=2))
    scenes = [p.candidate.scene for p in capped]
    assert len(capped) == 8 and max(scenes.count(s) for s in set(scenes)) == 2


# ---- the round protocol -------------------------------------------------------------------------------------
@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    shutil.copytree(trained, tmp_path / "t")
    recipe = tmp_path / "t" / "recipe.yaml"
    r = yaml.safe_load(recipe.read_text())
    r["out"] = str(tmp_path / "t" / "run")
    r["selection"] = {"budget": 2, "per_scene_cap": 1}
    recipe.write_text(yaml.safe_dump(r))
    return recipe


def _deliver(recipe: Path, pool_world: Path, out: Path) -> list[dict]:
    from autolabel.stages import oracle_delivery
    from autolabel.recipe import load_recipe

    assert oracle_delivery(load_recipe(recipe), 0, pool_world, out) == 2
    return json.loads((recipe.parent / "run" / "round_0" / "select" / "manifest.json").read_text())["selected"]


def test_a_strategy_that_reads_scores_scores_the_pool(run_copy, capsys):
    assert main(["select", str(run_copy), "--round", "0", "--set", "selection.strategy=entropy"]) == 0
    assert "pool scored by 1 process(es)" in capsys.readouterr().out
    manifest = json.loads((run_copy.parent / "run" / "round_0" / "select" / "manifest.json").read_text())
    assert manifest["strategy"] == "entropy" and all(
        {"token", "scene", "uncertainty", "disagreement", "residual", "cost", "reason"} <= set(r)
        for r in manifest["selected"]
    )


def test_select_then_ingest_round_trip_and_idempotence(run_copy, pool_world, tmp_path, capsys, monkeypatch):
    import autolabel.stages.steps as steps

    def no_scoring(*args, **kw):
        raise AssertionError("the default selection (stratified at this budget) scored the pool")

    monkeypatch.setattr(steps, "score_round", no_scoring)  # auto -> stratified reads no score: no network pass
    assert main(["select", str(run_copy), "--round", "0"]) == 0
    assert "pool not scored (stratified reads no score)" in capsys.readouterr().out
    monkeypatch.undo()
    folder = run_copy.parent / "run" / "round_0" / "select"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["strategy"] == "stratified" and len(manifest["selected"]) == 2
    assert len({r["scene"] for r in manifest["selected"]}) == 2  # per-scene cap 1
    assert all(set(r) == {"token", "scene", "cost", "reason"} for r in manifest["selected"])
    assert (folder / "manifest.csv").read_text().count("\n") == 3
    page = (folder / "index.html").read_text()
    assert "000_cameras.png" in page and "000_bev.png" in page and (folder / "001_bev.png").is_file()
    rows = _deliver(run_copy, pool_world, tmp_path / "ann")
    assert main(["ingest", str(run_copy), "--round", "0", str(tmp_path / "ann")]) == 0
    manual = LabelStore.open(run_copy.parent / "run" / "labels.zarr").manual()
    assert int(manual.done().sum()) == 2
    from autolabel.data.occ3d import read_labels
    from tiny_models import TINY_GRID

    gt = read_labels(labels_path(pool_world, rows[0]["scene"], rows[0]["token"]), TINY_GRID)
    np.testing.assert_array_equal(manual.read(manual.index(rows[0]["token"]), "semantics"), gt.semantics)
    assert main(["ingest", str(run_copy), "--round", "0", str(tmp_path / "ann")]) == 0  # again: a no-op
    assert "0 frames ingested, 2 already there unchanged" in capsys.readouterr().out
    # the next round trains with 3D labels on those frames, and selection skips them
    from autolabel.store.manual import manual_labels

    assert set(manual_labels(run_copy.parent / "run" / "labels.zarr", TINY_GRID)) == {r["token"] for r in rows}


def test_every_ingest_validation_error(run_copy, pool_world, tmp_path):
    from tiny_models import TINY_GRID

    assert main(["select", str(run_copy), "--round", "0"]) == 0
    rows = _deliver(run_copy, pool_world, tmp_path / "ann")
    path = labels_path(tmp_path / "ann", rows[0]["scene"], rows[0]["token"])
    good = np.load(path)
    sem, cam, lid = good["semantics"], good["mask_camera"], good["mask_lidar"]

    def attempt(match: str, **arrays) -> None:
        np.savez(path, **{"semantics": sem, "mask_camera": cam, "mask_lidar": lid, **arrays})
        with pytest.raises(DataError, match=match):
            from autolabel.stages import ingest_folder as ingest
            from autolabel.recipe import load_recipe

            ingest(load_recipe(run_copy), 0, tmp_path / "ann")

    attempt("field 'semantics' has shape", semantics=sem[:10])
    attempt("field 'semantics' has dtype int64", semantics=sem.astype(np.int64))
    attempt(r"holds ids \[40\]", semantics=np.where(sem == FREE_ID, 40, sem).astype(np.uint8))
    attempt("mask_camera is empty", mask_camera=np.zeros_like(cam))
    np.savez(path, semantics=sem, mask_lidar=lid)
    with pytest.raises(DataError, match=r"missing key\(s\) \['mask_camera'\]"):
        from autolabel.stages import ingest_folder as ingest
        from autolabel.recipe import load_recipe

        ingest(load_recipe(run_copy), 0, tmp_path / "ann")
    write_labels(path, Occ3DLabels(sem, lid, cam), TINY_GRID)
    stray = labels_path(tmp_path / "ann", "scene-x", "f" * 32)
    write_labels(stray, Occ3DLabels(sem, lid, cam), TINY_GRID)
    assert main(["ingest", str(run_copy), "--round", "0", str(tmp_path / "ann")]) == 2  # token not in the manifest
    stray.unlink()
    assert main(["ingest", str(run_copy), "--round", "0", str(tmp_path / "ann")]) == 0
    changed = sem.copy()
    changed[0, 0, 0] = 4 if sem[0, 0, 0] != 4 else 5
    write_labels(path, Occ3DLabels(changed, lid, cam), TINY_GRID)
    with pytest.raises(DataError, match="already ingested with different labels"):
        from autolabel.stages import ingest_folder as ingest
        from autolabel.recipe import load_recipe

        ingest(load_recipe(run_copy), 0, tmp_path / "ann")
    assert main(["ingest", str(run_copy), "--round", "1", str(tmp_path / "ann")]) == 2  # no manifest for round 1


def test_exported_pseudo_labels_ingest_with_dropped_voxels_left_out(run_copy, tmp_path):
    """An export fed back as annotations (e.g. corrected pseudo-labels): the manual group gets classes
    0..17 and mask_camera without the voxels the thresholds dropped, so the 3D loss skips them."""
    from autolabel.data.occ3d import read_labels
    from tiny_models import TINY_GRID

    store = run_copy.parent / "run" / "labels.zarr"
    assert main(["select", str(run_copy), "--round", "0"]) == 0
    rows = json.loads((run_copy.parent / "run" / "round_0" / "select" / "manifest.json").read_text())["selected"]
    # A tiny teacher's confidences pile up at a few levels, so a quantile may drop nothing in a given frame;
    # spread the selected frames' confidences so that the thresholds certainly drop some of their voxels.
    pseudo = LabelStore(store, TINY_GRID, create=True).round(0)  # opened for writing
    rng = np.random.default_rng(0)
    for r in rows:
        i = pseudo.index(r["token"])
        f = {name: pseudo.read(i, name) for name in ("semantics", "mask_camera", "mask_lidar")}
        pseudo.write(i, confidence=rng.integers(0, 256, TINY_GRID.shape).astype(np.uint8), **f)
    assert main(["export", str(store), str(tmp_path / "export"), "--round", "0", "--drop-quantile", "0.3"]) == 0
    for r in rows:  # deliver the manifest's frames only (a token outside it is refused)
        src = labels_path(tmp_path / "export", r["scene"], r["token"])
        dst = labels_path(tmp_path / "ann", r["scene"], r["token"])
        dst.parent.mkdir(parents=True)
        shutil.copyfile(src, dst)
    assert main(["ingest", str(run_copy), "--round", "0", str(tmp_path / "ann")]) == 0
    manual = LabelStore.open(store).manual()
    for r in rows:
        exported = read_labels(labels_path(tmp_path / "export", r["scene"], r["token"]), TINY_GRID)
        i = manual.index(r["token"])
        sem, cam = manual.read(i, "semantics"), manual.read(i, "mask_camera")
        assert sem.max() <= FREE_ID
        np.testing.assert_array_equal(sem, pseudo.read(pseudo.index(r["token"]), "semantics"))
        np.testing.assert_array_equal(cam, exported.mask_camera)
        dropped = pseudo.read(pseudo.index(r["token"]), "mask_camera").astype(bool) & ~exported.mask_confident.astype(
            bool
        )
        assert dropped.any() and not cam[dropped].any()


def test_selection_scale_benchmark_smoke():
    """benchmarks/selection_scale.py --smoke: every strategy runs in its own process and fills the budget."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "selection_scale.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [
        line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| ") and "strategy" not in line
    ]
    assert [r[0].strip() for r in rows] == ["random", "stratified", "entropy", "coreset", "kmeans", "hybrid"]
    assert all(int(r[2]) == 20 and float(r[1]) < 60 for r in rows)


def test_export_holds_the_manual_labels_with_their_source(run_copy, pool_world, tmp_path):
    """Issue 21: frames with ingested manual labels are exported from those (label_source 'manual', the
    annotator's masks, mask_confident all 1); the rest hold pseudo-labels; export.json says which is which."""
    from autolabel.data.occ3d import read_labels
    from tiny_models import TINY_GRID

    assert main(["select", str(run_copy), "--round", "0"]) == 0
    rows = _deliver(run_copy, pool_world, tmp_path / "ann")
    assert main(["ingest", str(run_copy), "--round", "0", str(tmp_path / "ann")]) == 0
    store = run_copy.parent / "run" / "labels.zarr"
    assert main(["export", str(store), str(tmp_path / "export"), "--round", "0", "--drop-quantile", "0.3"]) == 0
    summary = json.loads((tmp_path / "export" / "export.json").read_text())
    manual = {r["token"] for r in rows}
    assert set(summary["manual_tokens"]) == manual and summary["frames_manual"] == 2 and summary["frames_pseudo"] == 4
    pseudo = LabelStore.open(store).round(0)
    for token, scene in LabelStore.open(store).scene_of(pseudo).items():
        got = read_labels(labels_path(tmp_path / "export", scene, token), TINY_GRID)
        if token in manual:
            gt = read_labels(labels_path(pool_world, scene, token), TINY_GRID)
            assert got.source == "manual" and got.mask_confident.all()
            for key in ("semantics", "mask_camera", "mask_lidar"):
                np.testing.assert_array_equal(getattr(got, key), getattr(gt, key))
        else:
            assert got.source == "pseudo"
            np.testing.assert_array_equal(got.semantics, pseudo.read(pseudo.index(token), "semantics"))


def test_manual_labels_are_read_from_the_store_when_asked_for(tmp_path, monkeypatch):
    """`manual_labels` holds no frame's arrays (a round at nuScenes scale holds thousands): it reads a frame when
    training asks for it, and gives what ingest wrote."""
    import autolabel.store.manual as manual_module
    from autolabel.store.labels import LabelStore
    from autolabel.store.manual import labelled_voxels, manual_labels
    from tiny_models import TINY_GRID

    path = tmp_path / "labels.zarr"
    store = LabelStore(path, TINY_GRID, create=True)
    tokens = ["a", "b", "c"]
    arrays = store.manual(tokens, ["s"] * 3, create=True)
    sem = np.full(TINY_GRID.shape, 17, np.uint8)
    sem[0, 0, 0] = 4
    conf = np.full(TINY_GRID.shape, 255, np.uint8)
    conf[1] = 0  # frame c: a region-level label
    ones = np.ones(TINY_GRID.shape, np.uint8)
    for i, c in ((0, np.full_like(conf, 255)), (2, conf)):
        arrays.write_frames([i], semantics=sem[None], confidence=c[None], mask_camera=ones[None], mask_lidar=ones[None])
    reads = []
    monkeypatch.setattr(manual_module, "read_frame", lambda a, i: reads.append(i))
    labels = manual_labels(path, TINY_GRID, exclude={"a"})
    assert list(labels) == ["c"] and len(labels) == 1 and "b" not in labels and reads == []  # nothing read yet
    monkeypatch.undo()
    c = labels["c"]
    assert c.semantics[0, 0, 0] == 4 and c.mask_annotated.sum() == conf.size - conf[1].size
    assert labelled_voxels(labels, TINY_GRID.shape) == conf.size - conf[1].size
    assert manual_labels(tmp_path / "absent.zarr", TINY_GRID) == {}
