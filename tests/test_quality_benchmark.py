"""benchmarks/quality.py --micro: every variant trains and is scored twice (the network on the held-out scenes, its
pseudo-labels of the pool), seeds and the hard noise level included, and the table is printed; the benchmarks that
read a quality.py run's world and fused labels (carried_export.py, selection_export.py) run on the same run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tiny_models import run_micro_benchmark

from autolabel.data.occ3d import labels_path, read_labels
from autolabel.recipe import load_recipe
from autolabel.stages.inputs import open_frames
from autolabel.store.labels import LabelStore

VARIANTS = (
    "3d_supervised,render_noisy@1,render_hard,render_noisy_v1,noisy_dts,dts_active_5pct,dts_control,fusion,"
    "region_hybrid_5pct"
)


@pytest.mark.slow(168)
def test_quality_harness_runs_micro(tmp_path, monkeypatch):
    # two processes (one per GPU on a GPU machine; both on the CPU here): the round-1 variants wait for
    # noisy_dts's network in whichever process they land
    out = run_micro_benchmark("quality.py", tmp_path / "q", "--procs", "2", "--variants", VARIANTS)
    r = json.loads((tmp_path / "q" / "results.json").read_text())
    meta, variants = r["meta"], r["variants"]
    assert set(variants) == set(VARIANTS.split(","))
    assert meta["world"] == "development" and meta["world_seed"] == 31 and meta["test_world_seed"] == 131
    assert meta["split"]["held_out"] == ["synth-31-0002"] and "synth-31-0002" not in meta["split"]["pool"]
    assert meta["code_version"] != "unknown"
    for name, v in variants.items():
        assert (v["geometric_iou"] is None) == (name == "fusion")  # fusion labels the pool without a network
        pl = v["pseudo_labels"]
        assert pl["geometric_iou"] is not None and 0 < pl["kept_share"] <= 1 and pl["drop_quantile"] == 0.3
    assert r["summary"]["render_noisy"]["seeds"] == 1
    # a variant trained with the EMA teacher has the teacher scored on the same scenes too, in a row of its own
    assert variants["noisy_dts"]["teacher"]["geometric_iou"] is not None and "teacher" not in variants["3d_supervised"]
    assert r["summary"]["noisy_dts (teacher)"]["seeds"] == 1 and "noisy_dts (teacher)" in out.stdout
    assert len(variants["dts_active_5pct"]["selected"]) == 1 and variants["dts_active_5pct"]["strategy"] == "stratified"
    # the control round: the same round-1 steps with no labelled frame
    assert variants["dts_control"]["selected"] == [] and variants["dts_control"]["strategy"] == "none"
    control = (tmp_path / "q" / "dts_control" / "round_1" / "train" / "history.jsonl").read_text().splitlines()
    assert len(control) == len(
        (tmp_path / "q" / "dts_active_5pct" / "round_1" / "train" / "history.jsonl").read_text().splitlines()
    )
    first = json.loads(
        (tmp_path / "q" / "3d_supervised" / "round_0" / "train" / "history.jsonl").read_text().splitlines()[0]
    )
    assert first["labels3d"] > 0 and "sem2d" not in first  # the upper bound trains on 3D labels only
    seeded = (tmp_path / "q" / "render_noisy_s1.yaml").read_text()
    assert "seed: 1" in seeded and "variant: noisy" in seeded
    assert "variant: hard" in (tmp_path / "q" / "render_hard.yaml").read_text()
    assert "variant: v1" in (tmp_path / "q" / "render_noisy_v1.yaml").read_text()
    assert {f.name for f in (tmp_path / "q").glob("results.*.json")} == {"results.0.json", "results.1.json"}
    assert len(meta["world_digest"]) == 16 and len(meta["code_digest"]) == 16 and meta["seconds"] > 0
    assert f"sources {meta['code_digest']}" in out.stdout  # the table names the code that ran by its digest too
    assert "3d_supervised" in out.stdout and (tmp_path / "q" / "training_curves.png").stat().st_size > 1000
    # the table again from meta.json and the results, without the world (merging runs of another machine); the
    # world is moved aside and back rather than generated again for the invocation below
    (tmp_path / "q" / "world_31").rename(tmp_path / "world_31")
    again = run_micro_benchmark("quality.py", tmp_path / "q", "--report")
    (tmp_path / "world_31").rename(tmp_path / "q" / "world_31")

    def table(text: str) -> str:
        return text[text.index("development world (seed 31)") :]

    assert table(again.stdout) == table(out.stdout)

    # issue 21's budget curves: a region variant labels tiles of several frames within one frame's voxels (5% of
    # the 4-frame pool rounds up to one frame: 64 x 64 x 8); a second invocation (--tag) adds a budget to the same
    # run without touching the first one's files, and budget_curves.py draws both
    region = variants["region_hybrid_5pct"]
    assert region["strategy"] == "hybrid" and 0 < region["labelled_voxels"] <= 64 * 64 * 8
    assert all(n > 0 for n in region["tiles"]) and len(region["tiles"]) == len(region["selected"])
    first = {f.name: f.read_bytes() for f in (tmp_path / "q").glob("results.*.json")}
    run_micro_benchmark(
        "quality.py",
        tmp_path / "q",
        "--tag",
        "b",
        "--variants",
        "frame_random_10pct,share50,fused_3d,f_carried,f_fusion,f_oracle,fdx,f_fdx",
        "--ablation",  # the recipes' labeller (fused targets, the teacher on fusion's evidence) on exact 2D labels
        "fdx=fused_3d:labels=exact;dts.enabled=true;loss.pseudo_3d=1.0;dts.evidence=fusion",
        "--ablation",  # round 1 from that ablation's network
        "f_fdx=region_fusion_10pct:round0=fdx",
        "--relabel",  # its pool labelled again under another naming rule, from the same checkpoint
        "fdx_doubt=fdx:dts.label_fusion_doubt=0",
        "--ablation",
        "share50=frame_random_10pct:train.labelled_share=0.5",  # an ablation of round 1's training
        "--ablation",  # round 1 from another round-0 network, fused_3d's (trained in this invocation), with the
        # labels carried to the scene's other keyframes
        "f_carried=frame_random_10pct:round0=fused_3d;rounds.propagate=static_free",
        "--ablation",  # tiles ranked by the fused labels' own uncertainty: no network pass
        "f_fusion=region_fusion_10pct:round0=fused_3d",
        "--ablation",  # the oracle: tiles ranked by the fused labels' errors against the exact labels, on a
        # finer tile grid than the default's (16 cells: 4 x 4 tiles of 16 x 16 x 8 on the micro grid), 4 a frame
        "f_oracle=region_oracle_10pct:round0=fused_3d;selection.region_size=16;selection.max_tiles_per_frame=4",
    )
    assert all((tmp_path / "q" / name).read_bytes() == data for name, data in first.items() if name != "results.json")
    merged = json.loads((tmp_path / "q" / "results.json").read_text())["variants"]
    assert {"frame_random_10pct", "share50", "f_carried"} <= set(merged) and set(variants) <= set(merged)
    trained = {
        n: yaml.safe_load((tmp_path / "q" / n / "recipe.yaml").read_text())["train"]
        for n in merged
        if n in ("frame_random_10pct", "share50")
    }
    assert trained["share50"]["labelled_share"] == 0.5 and trained["frame_random_10pct"]["labelled_share"] == 0.25
    assert trained["share50"]["steps"] == trained["frame_random_10pct"]["steps"] == 2  # --round1-steps (micro)
    assert merged["share50"]["selected"] == merged["frame_random_10pct"]["selected"]  # the same picks
    assert (tmp_path / "q" / "meta.b.json").is_file() and (tmp_path / "q" / "pool_noisy_dts_r25.pkl").is_file()
    # fused_3d: 3D cross-entropy on the fused labels, nothing rendered; f_carried continues its network
    first = json.loads((tmp_path / "q" / "fused_3d" / "round_0" / "train" / "history.jsonl").read_text().split("\n")[0])
    assert first["fused3d"] > 0 and "sem2d" not in first and "depth" not in first
    own = yaml.safe_load((tmp_path / "q" / "f_carried" / "recipe.yaml").read_text())
    assert own["loss"]["fused_3d"] == 1.0 and own["loss"]["semantics_2d"] == 0.0 and own["dts"]["enabled"] is False
    assert own["rounds"]["propagate"] == "static_free" and merged["f_carried"]["miou"] is not None
    assert (tmp_path / "q" / "pool_fused_3d_r25.pkl").is_file()
    # an ablation on another level's 2D labels has its own cache and fused labels; a --relabel row scores the pool
    # labelled from its base's checkpoint under its rules, with no network row of its own
    fdx = yaml.safe_load((tmp_path / "q" / "fdx.yaml").read_text())
    assert fdx["supervision"]["precomputed"]["variant"] == "exact" and fdx["fusion"]["store"].endswith("exact.zarr")
    relabelled = merged["fdx_doubt"]
    assert relabelled["relabel_of"] == "fdx" and relabelled["miou"] is None and relabelled["pseudo_labels"]["miou"]
    attrs = {n: LabelStore.open(tmp_path / "q" / n / "labels.zarr").round(0).attrs for n in ("fdx", "fdx_doubt")}
    assert attrs["fdx"]["checkpoint_sha256"] == attrs["fdx_doubt"]["checkpoint_sha256"]
    assert [attrs[n]["dts"]["label_fusion_doubt"] for n in ("fdx", "fdx_doubt")] == [1.0, 0.0]
    own = yaml.safe_load((tmp_path / "q" / "f_fdx" / "recipe.yaml").read_text())  # round 1 continues fdx's recipe
    assert own["dts"]["enabled"] and own["supervision"]["precomputed"]["variant"] == "exact"
    assert merged["f_fdx"]["strategy"] == "fusion" and merged["f_fdx"]["miou"] is not None
    assert merged["f_carried"]["selected"] == merged["frame_random_10pct"]["selected"]  # same seed, same picks
    assert merged["f_fusion"]["strategy"] == "fusion" and all(n > 0 for n in merged["f_fusion"]["tiles"])
    assert merged["f_oracle"]["strategy"] == "oracle" and all(0 < n <= 4 for n in merged["f_oracle"]["tiles"])
    # the round's selection.region_size made the tiles: a whole number of 16 x 16 x 8 tiles, one frame's worth
    assert merged["f_oracle"]["labelled_voxels"] == 16 * 16 * 8 * sum(merged["f_oracle"]["tiles"]) == 64 * 64 * 8
    # the oracle scores a tile above 0 exactly where it holds a voxel of the exact mask_camera that the fused
    # labels name otherwise (counted here by the tiles' bounds, not the cell-to-tile map the pool uses)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from active import error_oracle_pool

    r0 = load_recipe(tmp_path / "q" / "fused_3d.yaml")
    frames = open_frames(r0, "train", load_images=False, load_gt=False)
    fused = LabelStore.open(r0.fusion_path)
    oracle = error_oracle_pool(frames, LabelStore.open(r0.store_path), fused, tmp_path / "q" / "world_31")
    arrays = fused.round(0)
    for c in oracle.candidates:
        exact = read_labels(labels_path(tmp_path / "q" / "world_31", c.scene, c.token), fused.grid)
        wrong = exact.mask_camera.astype(bool) & (arrays.read(arrays.index(c.token), "semantics") != exact.semantics)
        boxes = [tuple(slice(a, b) for a, b in oracle.regions.bounds(t)) for t in range(oracle.regions.count)]
        held = [wrong[box].any() for box in boxes]
        assert list(np.asarray(c.tile_scores) > 0) == held
    assert any(np.asarray(c.tile_scores).max() > 0 for c in oracle.candidates)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "budget_curves.py"
    curves = subprocess.run([sys.executable, str(script), str(tmp_path / "q")], capture_output=True, text=True)
    assert curves.returncode == 0, curves.stderr[-2000:]
    assert "| region_hybrid |" in curves.stdout and "| frame_random |" in curves.stdout
    # ablations are rows of their own kind, named by the network they continue and their other overrides
    assert "| region_fusion from fused_3d |" in curves.stdout
    assert "| frame_random [train.labelled_share=0.5] |" in curves.stdout
    assert (tmp_path / "q" / "budget_curves.png").stat().st_size > 1000
    # the export benchmarks read a run's world and fused labels (the fusion variant's): this run's, rather than
    # a world, supervision cache and fusion of their own (each about 40 s of the suite on 2 cores)
    check_carried_export(tmp_path / "q")
    check_selection_export(tmp_path / "q")


def test_round0_choice_is_for_round1_variants(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import quality

    ab = quality.parse_ablations(["f=frame_random_5pct:round0=fused_3d;rounds.propagate=static"])
    assert quality.round0_of("f@2", ab) == "fused_3d@2" and quality.round0_of("frame_random_5pct", ab) == "noisy_dts"
    assert quality.recipe_overrides("f", ab) == ["rounds.propagate=static"]
    with pytest.raises(SystemExit, match="round0"):
        quality.parse_ablations(["x=render_noisy:round0=fused_3d"])  # only a round-1 variant has a round 0
    with pytest.raises(SystemExit, match="round0"):
        quality.parse_ablations(["x=frame_random_5pct:round0=nonsense"])


def test_an_ablation_of_the_runner_ups_gets_its_own_cache_and_fused_labels(tmp_path, monkeypatch):
    """A variant whose cache keeps another number of runner-up names (supervision.runner_ups) cannot share the
    other variants' cache (it would be refused) nor their fused labels (fused from other votes)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import quality

    base = quality.base_recipe(tmp_path, tmp_path / "world", "s", 2, True)
    ab = quality.parse_ablations(["f0=fused_3d:supervision.runner_ups=0", "w=fused_3d:fusion.runner_up_weight=1"])
    plain, none, weighed = (quality.variant_recipe(tmp_path, base, v, ab) for v in ("fused_3d", "f0", "w"))
    assert plain["supervision"]["cache"] == str(tmp_path / "cache_noisy.zarr") == weighed["supervision"]["cache"]
    assert none["supervision"]["cache"] == str(tmp_path / "cache_noisy_r0.zarr")
    stores = {r["fusion"]["store"] for r in (plain, none, weighed)}
    assert len(stores) == 3 and plain["fusion"]["store"] == str(tmp_path / "fusion_noisy.zarr")


def test_budget_curves_read_ablations_and_pair_each_row_with_its_own_control(monkeypatch):
    """Round-1 ablations (`f5=region_fusion_5pct:round0=fused_3d`) are curve points of their kind, and their gain is
    over the control round from the same round-0 network (they used to be left out of the curves)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import budget_curves

    net = budget_curves.METRICS[0][0]
    variants = {
        "noisy_dts": {"miou": 9.0},
        "dts_control": {"miou": 10.0},
        "frame_random_5pct": {"miou": 12.0},
        "fused_3d": {"miou": 20.0},
        "fc": {"miou": 21.0},
        "f5": {"miou": 23.0},
        "f5@1": {"miou": 25.0},
        "w5": {"miou": 30.0},
    }
    ablations = {
        "fc": ["dts_control", ["round0=fused_3d"]],
        "f5": ["region_fusion_5pct", ["round0=fused_3d"]],
        "w5": ["region_fusion_5pct", ["round0=fused_3d", "loss.labels_3d=3"]],
    }
    points, refs, origin = budget_curves.curves(variants, ablations)
    assert points[("region_fusion from fused_3d", 5)][net] == [23.0, 25.0]
    assert points[("region_fusion from fused_3d [loss.labels_3d=3]", 5)][net] == [30.0]
    assert origin["frame_random"] == "noisy_dts" and origin["region_fusion from fused_3d"] == "fused_3d"
    assert refs["fused_3d"]["control"][net] == [21.0] and refs["fused_3d"]["round0"][net] == [20.0]
    assert refs["noisy_dts"]["control"][net] == [10.0] and refs["noisy_dts"]["round0"][net] == [9.0]
    text = budget_curves.table(points, refs, origin)
    assert "24.00 +- 1.0 (+3.00) [2]" in text  # over fc (21), not over dts_control (10)
    assert "12.00 (+2.00) [1]" in text


def test_the_benchmarks_keep_the_callers_gpu_mask(monkeypatch):
    """A benchmark started with CUDA_VISIBLE_DEVICES=2,3 spreads its processes over GPUs 2 and 3 (it used to
    give them 0 and 1, the first of the machine's GPUs, whatever the mask said)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import active

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert active.visible_gpus() == ["2", "3"]
    monkeypatch.setattr(active.torch.cuda, "device_count", lambda: 0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert active.visible_gpus() == ["0"]


def test_test_world_is_another_seed(tmp_path):
    out = run_micro_benchmark("quality.py", tmp_path / "q", "--test", "--variants", "3d_supervised", "--skip-pseudo")
    r = json.loads((tmp_path / "q" / "results.json").read_text())
    assert r["meta"]["world"] == "test" and r["meta"]["world_seed"] == 131
    assert (tmp_path / "q" / "world_131").is_dir() and not (tmp_path / "q" / "world_31").exists()
    assert "pseudo_labels" not in r["variants"]["3d_supervised"] and "test world (seed 131)" in out.stdout


def test_round1_variants_share_one_pool_scoring_per_round0_network(tmp_path, monkeypatch):
    """The round-1 variants of a seed read one scoring of the pool per tile size; a round-0 network trained
    again (another checkpoint file) is scored again instead of reusing the old network's scores, and so is
    another tile grid (a round whose selection.region_size differs)."""
    import os
    from types import SimpleNamespace

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import quality

    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(b"network 1")
    calls = []
    monkeypatch.setattr(quality, "checkpoint_path", lambda recipe, k: ckpt)
    # the recipe stand-ins have no dataclass fields: replace() copies their attributes
    monkeypatch.setattr(
        quality, "replace", lambda obj, **kw: SimpleNamespace(**{**vars(obj or SimpleNamespace()), **kw})
    )

    def scored(recipe, k, progress):
        calls.append(recipe.selection.region_size)
        return f"scores {len(calls)}"

    monkeypatch.setattr(quality, "score_round", scored)
    dts = SimpleNamespace(network=SimpleNamespace(grid=SimpleNamespace(shape=(4, 4, 2))), selection=None)
    assert quality.shared_pool_scores(tmp_path, "noisy_dts", dts, 25) == "scores 1"
    assert quality.shared_pool_scores(tmp_path, "noisy_dts", dts, 25) == "scores 1" and len(calls) == 1
    ckpt.write_bytes(b"network 2, retrained")
    os.utime(ckpt, ns=(1, 1))
    assert quality.shared_pool_scores(tmp_path, "noisy_dts", dts, 25) == "scores 2" and len(calls) == 2
    assert quality.shared_pool_scores(tmp_path, "noisy_dts", dts, 10) == "scores 3" and calls == [25, 25, 10]
    assert quality.shared_pool_scores(tmp_path, "noisy_dts", dts, 25) == "scores 2"  # each size keeps its own
    assert not list(tmp_path.glob("*.lock"))


def test_world_digest_reads_what_npz_files_hold_not_their_bytes(tmp_path, monkeypatch):
    """The same arrays deflated by another writer (np.savez_compressed, the ISA-L writer) give the same
    world digest; another value gives another. Before, the digest hashed the files' bytes, so the ISA-L
    writer changed every world's digest without changing a world."""
    import numpy as np

    from autolabel.data.npz import save_npz

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import quality

    labels = np.arange(600, dtype=np.uint8).reshape(20, 30) % 17
    digests = []
    writers = (lambda path, **a: np.savez_compressed(path, **a), lambda path, **a: save_npz(path, a))
    for i, write in enumerate((*writers, writers[0])):
        world = tmp_path / f"w{i}"
        (world / "gts" / "scene" / "token").mkdir(parents=True)
        (world / "v1.0-synth").mkdir()
        (world / "v1.0-synth" / "scene.json").write_text("[]")
        arrays = {"semantics": labels if i < 2 else labels[::-1].copy(), "mask_camera": labels > 3}
        write(world / "gts" / "scene" / "token" / "labels.npz", **arrays)
        digests.append(quality.world_digest(world))
    assert (tmp_path / "w0" / "gts/scene/token/labels.npz").read_bytes() != (
        tmp_path / "w1" / "gts/scene/token/labels.npz"
    ).read_bytes()
    assert digests[0] == digests[1] != digests[2]


def fused_benchmark(script: str, run: Path, *args: str) -> subprocess.CompletedProcess:
    """benchmarks/<script> on a quality.py run's world and fused labels; its output (exit status 0 asserted)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / script
    done = subprocess.run([sys.executable, str(path), str(run), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def check_carried_export(run: Path) -> None:
    """benchmarks/carried_export.py on a quality.py micro run's world and fused labels: every way of using the
    annotated keyframes is exported and scored; the manual keyframes make the export better than the fused
    labels alone, and carrying never labels the annotated keyframes themselves."""
    done = fused_benchmark("carried_export.py", run, "--percent", "50", "--seeds", "0,1")
    r = json.loads((run / "carried_export_31.json").read_text())
    rows = {(row["way"], row["seed"]): row for row in r["rows"]}
    assert set(rows) == {("none", None)} | {(w, s) for w in ("manual", "static", "static_free") for s in (0, 1)}
    assert r["pool_frames"] == 4 and all(row["annotated"] == 2 for row in r["rows"] if row["way"] != "none")
    assert all(rows[("manual", s)]["miou"] > rows[("none", None)]["miou"] for s in (0, 1))
    assert all(rows[(w, s)]["frames_carried"] == 2 for w in ("static", "static_free") for s in (0, 1))
    assert "static_free" in done.stdout and "mIoU others" in done.stdout


def check_selection_export(run: Path) -> None:
    """benchmarks/selection_export.py on a quality.py micro run's world and fused labels: every way of choosing
    spends the same voxels, is annotated, exported and scored; the random ways once per draw, the fusion ways
    once."""
    done = fused_benchmark("selection_export.py", run, "--percent", "50", "--seeds", "0,1")
    r = json.loads((run / "selection_export_31.json").read_text())
    ways = [(row["way"], row["seed"]) for row in r["rows"]]
    assert ways == [("none", None)] + [
        (w, s)
        for w in ("frames_stratified", "frames_fusion", "tiles_random", "tiles_fusion")
        for s in ([0] if w.endswith("fusion") else [0, 1])
    ]
    spent = {row["voxels"] for row in r["rows"] if row["way"] != "none"}
    assert all(0 < v <= 2 * 64 * 64 * 8 for v in spent)  # 50% of the 4-frame pool: two frames' voxels at most
    assert all(row["miou"] >= r["rows"][0]["miou"] for row in r["rows"][1:])  # exact labels never hurt here
    assert "tiles_fusion" in done.stdout and (run / "selection_export_31.png").stat().st_size > 1000
    # another budget joins the same file; the rows already there are kept, not computed again
    fused_benchmark("selection_export.py", run, "--percent", "25", "--ways", "tiles_fusion")
    merged = json.loads((run / "selection_export_31.json").read_text())["rows"]
    assert merged[: len(r["rows"])] == r["rows"] and [(x["percent"], x["way"]) for x in merged[len(r["rows"]) :]] == [
        (25.0, "tiles_fusion")
    ]


def test_world_digest_covers_the_maps(tmp_path, monkeypatch):
    """fusion.map_prior reads maps/*.png: two worlds that differ only there must not share a digest."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import quality

    digests = []
    for i in range(2):
        world = tmp_path / f"w{i}"
        (world / "v1.0-synth").mkdir(parents=True)
        (world / "v1.0-synth" / "scene.json").write_text("[]")
        (world / "maps").mkdir()
        (world / "maps" / "m.png").write_bytes(bytes([i]))
        digests.append(quality.world_digest(world))
    assert digests[0] != digests[1]


def test_the_benchmark_selection_takes_the_round_s_per_scene_cap(monkeypatch):
    """`select_share` caps the frames a scene gives at selection.per_scene_cap where a round sets it (an ablation
    `selection.per_scene_cap=1` was once ignored: the benchmark's own cap of 2 applied whatever the recipe said)."""
    from types import SimpleNamespace

    from autolabel.active.regions import RegionGrid
    from autolabel.active.select import Candidate

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from active import select_share

    regions = RegionGrid((8, 8, 2), 4)  # 4 tiles of 32 voxels a frame
    rng = np.random.default_rng(0)
    cands = [
        Candidate(f"t{s}{i}", f"s{s}", tile_scores=rng.random(4), tile_visible=np.full(4, 32))
        for s in range(4)
        for i in range(4)
    ]
    pool = SimpleNamespace(
        candidates=cands, features=np.zeros((16, 4), np.float32), regions=regions, tokens=[c.token for c in cands]
    )

    def frames_per_scene(cap):  # 16 tiles' worth (4 frames of 128 voxels), 2 tiles a frame: 8 frames if the caps allow
        picks, _, voxels = select_share(pool, "region", "random", 4, 128, 0, 2, cap)
        return sorted(np.unique([p.candidate.scene for p in picks], return_counts=True)[1].tolist()), voxels

    assert frames_per_scene(None) == ([2, 2, 2, 2], 512)  # the benchmark's default: 2 frames a scene
    assert frames_per_scene(1) == ([1, 1, 1, 1], 256)  # 4 frames of 2 tiles: the budget cannot be spent
    counts, voxels = frames_per_scene(4)
    assert max(counts) > 2 and voxels == 512  # random tiles over more frames of a scene
    # an ablation's selection.random_share reaches the selection: half the tiles ranked, half at random
    picks, used, voxels = select_share(pool, "region", "entropy", 4, 128, 0, 2, 4, random_share=0.5)
    ranked = sorted(((c.tile_scores[t], c.token, t) for c in cands for t in range(4)), reverse=True)
    taken = {(p.candidate.token, t) for p in picks for t in p.tiles}
    assert used == "entropy" and voxels == 512 and {(k, t) for _, k, t in ranked[:8]} != taken
    assert {(k, t) for _, k, t in ranked[:8]} & taken and any("random share" in p.reason for p in picks)
