"""Fault injection (issue 19): each kind of file the project reads and writes is corrupted, truncated or
deleted, and the command that reads it must answer with one line naming the file, frame or array, exit
status 2, and leave everything already written as it was.

The run is a copy of the session's `trained` run (2D supervision, round 0 trained and labelled) over a copy
of its world, so that the damage stays in this test's folder."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from tiny_models import error_line

from autolabel.cli import main
from autolabel.recipe import load_recipe, save_recipe
from autolabel.store.labels import LabelStore


@pytest.fixture
def run(trained, pool_world, tmp_path) -> dict:
    """Writable copies: the world, the run folder, and a recipe pointing at both."""
    world = tmp_path / "world"
    shutil.copytree(pool_world, world)
    folder = tmp_path / "trained"
    shutil.copytree(trained, folder)
    path = folder / "recipe.yaml"
    r = yaml.safe_load(path.read_text())
    r["out"] = str(folder / "run")
    r["data"]["dataroot"] = str(world)
    path.write_text(yaml.safe_dump(r))
    return {"world": world, "dir": folder / "run", "recipe": path}


def snapshot(*folders: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for f in folders for p in sorted(f.rglob("*")) if p.is_file()
    }


def unchanged(before: dict[str, str], after: dict[str, str], damaged: Path | None = None) -> None:
    """Every file of `before` is still there with the same bytes, but the damaged one and the commands'
    records of the recipe they were called with (``recipe.yaml``: this copy's recipe names the copied world,
    so those records legitimately change to it)."""
    before = {
        k: v for k, v in before.items() if (damaged is None or k != str(damaged)) and not k.endswith("/recipe.yaml")
    }
    assert {k: after.get(k) for k in before} == before


def first(folder: Path, pattern: str) -> Path:
    return sorted(folder.rglob(pattern))[0]


def frames_per_shard(store: Path, group: str) -> int:
    import zarr

    shards = zarr.open_group(str(store), mode="r")[group]["done"].shards
    return shards[0] if shards else 1


def chunk_path(store: Path, group: str, array: str, i: int) -> Path:
    """The file holding frame i's chunk: its shard, c/(i // S)/0/0/0 (issue 23: S frames per shard file)."""
    p = store / group / array / "c" / str(i // frames_per_shard(store, group))
    while p.is_dir():
        p = p / "0"
    assert p.is_file(), p
    return p


# ---- dataset files -------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_info_names_a_bad_camera_image(run, capsys, damage):
    jpg = first(run["world"] / "samples" / "CAM_FRONT", "*.jpg")
    jpg.write_bytes(b"not a jpeg at all" if damage == "garbage" else jpg.read_bytes()[:10])
    assert main(["info", str(run["world"]), "--version", "v1.0-synth"]) == 2
    assert str(jpg) in error_line(capsys, "info")


def test_info_names_a_truncated_lidar_file(run, capsys):
    pcd = first(run["world"] / "samples" / "LIDAR_TOP", "*.bin")
    pcd.write_bytes(pcd.read_bytes()[:7])
    assert main(["info", str(run["world"]), "--version", "v1.0-synth"]) == 2
    line = error_line(capsys, "info")
    assert str(pcd) in line and "7 bytes" in line


@pytest.mark.parametrize("table", ["sample", "sample_data"])
def test_a_truncated_table_is_named(run, capsys, table):
    path = run["world"] / "v1.0-synth" / f"{table}.json"
    path.write_bytes(path.read_bytes()[:50])
    assert main(["info", str(run["world"]), "--version", "v1.0-synth"]) == 2
    assert str(run["world"] / "v1.0-synth") in error_line(capsys, "info")


def test_a_bad_image_in_a_dataloader_worker_is_one_line(run, capsys, monkeypatch):
    """Training decodes images in DataLoader workers (with a cache made before issue 23, which holds no
    images); the worker's traceback must not bury the message,
    and the checkpoint and history stay as they were."""
    monkeypatch.setenv("AUTOLABEL_WORKERS", "1")
    # issue 23: training reads images from the cache; a cache made before then has none, so training decodes
    shutil.rmtree(run["dir"] / "supervision.zarr" / "supervision" / "images")
    for jpg in (run["world"] / "samples").rglob("*.jpg"):
        jpg.write_bytes(jpg.read_bytes()[:400])  # every image, so whichever frame comes first fails
    before = snapshot(run["dir"])
    assert main(["train", str(run["recipe"]), "--round", "0", "--set", "train.steps=6"]) == 2
    line = error_line(capsys, "train")
    assert "image file" in line and str(run["world"] / "samples") in line and "cannot be decoded" in line
    unchanged(before, snapshot(run["dir"]))


def test_a_truncated_lidar_file_read_ahead_by_fusion_is_one_line(run, capsys, monkeypatch):
    """Fusion reads keyframes in DataLoader workers and runs its volume rules in a process pool: a bad LiDAR
    file still stops it with one line naming the file (exit status 2)."""
    monkeypatch.setenv("AUTOLABEL_WORKERS", "2")  # one reader, one process for the volume rules
    pcd = sorted((run["world"] / "samples" / "LIDAR_TOP").glob("*.bin"))[-1]  # a keyframe of the last scene
    pcd.write_bytes(pcd.read_bytes()[:7])
    assert main(["fuse", str(run["recipe"]), "--set", "fusion.enabled=true"]) == 2
    line = error_line(capsys, "fuse")
    assert str(pcd) in line and "7 bytes" in line


def test_a_bad_label_map_is_named_and_the_cache_kept(run, capsys, tmp_path):
    npz = first(run["world"] / "labels2d", "*.npz")
    npz.write_bytes(npz.read_bytes()[:100])
    before = snapshot(run["dir"])
    assert main(["supervise", str(run["recipe"]), "--set", f"supervision.cache={tmp_path / 'new.zarr'}"]) == 2
    assert str(npz) in error_line(capsys, "supervise")
    unchanged(before, snapshot(run["dir"]))


def test_a_truncated_ground_truth_file_is_named(run, capsys, tmp_path):
    npz = first(run["world"] / "gts", "labels.npz")
    npz.write_bytes(npz.read_bytes()[:64])
    before = snapshot(run["dir"])
    assert (
        main(
            [
                "eval",
                str(run["dir"] / "labels.zarr"),
                "--round",
                "0",
                "--gts",
                str(run["world"]),
                "--out",
                str(tmp_path / "eval"),
            ]
        )
        == 2
    )
    assert str(npz) in error_line(capsys, "eval")
    unchanged(before, snapshot(run["dir"]))


# ---- cache and store chunks -----------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["deleted", "corrupted"])
def test_a_damaged_cache_chunk_names_array_and_frame(run, capsys, damage):
    cache = run["dir"] / "supervision.zarr"
    chunk = chunk_path(cache, "supervision", "semantics", 1)
    chunk.unlink() if damage == "deleted" else chunk.write_bytes(b"\x00garbage" * 8)
    tokens = shard_tokens(cache, "supervision", 1)
    before = snapshot(run["dir"])
    assert main(["eval-2d", str(run["recipe"])]) == 2
    line = error_line(capsys, "eval-2d")
    assert "'semantics'" in line and any(t in line for t in tokens) and "'supervision'" in line
    unchanged(before, snapshot(run["dir"]), chunk)


def _tokens(store: Path, group: str) -> list[str]:
    import zarr

    return [str(t) for t in zarr.open_group(str(store), mode="r")[group]["tokens"][:]]


def shard_tokens(store: Path, group: str, i: int) -> list[str]:
    """The frames that share frame i's shard file: damage to it names one of them (the first one read)."""
    s = frames_per_shard(store, group)
    return _tokens(store, group)[i // s * s : (i // s + 1) * s]


@pytest.mark.parametrize("array", ["semantics", "mask_camera"])
def test_a_deleted_store_chunk_is_not_exported_as_fill(run, capsys, tmp_path, array):
    """Zarr reads a missing chunk as its fill value: export would write an all-255 frame and exit 0."""
    store = run["dir"] / "labels.zarr"
    chunk_path(store, "round_0", array, 2).unlink()
    tokens = shard_tokens(store, "round_0", 2)
    out = tmp_path / "export"
    (out / "gts").mkdir(parents=True)
    (out / "gts" / "keep.txt").write_text("an earlier export's file")
    before = snapshot(run["dir"], out)
    assert main(["export", str(store), str(out), "--round", "0"]) == 2
    line = error_line(capsys, "export")
    assert f"'{array}'" in line and "'round_0'" in line and any(t in line for t in tokens) and "missing" in line
    after = snapshot(run["dir"], out)
    unchanged(before, after)
    assert not any(p.endswith("labels.npz") and p not in before for p in after)  # nothing partial from this export


def test_a_corrupted_store_chunk_names_array_and_frame(run, capsys):
    store = run["dir"] / "labels.zarr"
    chunk = chunk_path(store, "round_0", "confidence", 0)
    chunk.write_bytes(chunk.read_bytes()[: len(chunk.read_bytes()) // 2])
    before = snapshot(run["dir"])
    assert main(["inspect", str(store)]) == 2
    line = error_line(capsys, "inspect")
    assert "'confidence'" in line and _tokens(store, "round_0")[0] in line
    unchanged(before, snapshot(run["dir"]), chunk)


# ---- export arguments and folders -------------------------------------------------------------------
@pytest.mark.parametrize("q", ["1.5", "-0.2", "1"])
def test_export_refuses_a_drop_quantile_outside_0_1(run, capsys, tmp_path, q):
    out = tmp_path / "export"
    assert main(["export", str(run["dir"] / "labels.zarr"), str(out), "--round", "0", f"--drop-quantile={q}"]) == 2
    assert "drop quantile must be in [0, 1)" in error_line(capsys, "export")
    assert not out.exists()


def test_an_unwritable_export_folder_is_one_line(run, capsys, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "gts").write_text("a file where the gts/ folder should go")
    assert main(["export", str(run["dir"] / "labels.zarr"), str(out), "--round", "0"]) == 2
    assert str(out / "gts") in error_line(capsys, "export")
    assert (out / "gts").read_text() == "a file where the gts/ folder should go"


# ---- checkpoints, manifests, run records --------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_checkpoint_is_named(run, capsys, damage):
    ckpt = run["dir"] / "round_0" / "train" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000] if damage == "truncated" else b"PK\x03\x04" + b"\x00" * 100)
    before = snapshot(run["dir"])
    assert main(["label", str(run["recipe"]), "--round", "0"]) == 2
    assert f"checkpoint {ckpt} cannot be read" in error_line(capsys, "label")
    assert main(["train", str(run["recipe"]), "--round", "0", "--set", "train.steps=6"]) == 2
    assert f"checkpoint {ckpt} cannot be read" in error_line(capsys, "train")
    unchanged(before, snapshot(run["dir"]))


def test_a_damaged_manifest_is_named(run, capsys, tmp_path):
    manifest = run["dir"] / "round_0" / "select" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text('{"round": 0, "selected": [{"tok')
    before = snapshot(run["dir"])
    assert main(["ingest", str(run["recipe"]), "--round", "0", str(tmp_path)]) == 2
    assert f"selection manifest {manifest} is damaged" in error_line(capsys, "ingest")
    unchanged(before, snapshot(run["dir"]))


@pytest.mark.parametrize("record", ["stages.json", "recipe.yaml"])
def test_damaged_run_records_are_named_before_any_work(run, capsys, record):
    save_recipe(load_recipe(run["recipe"]), run["dir"] / "recipe.yaml")
    (run["dir"] / "stages.json").write_text(json.dumps({"data": {"dataroot": str(run["world"])}}))
    path = run["dir"] / record
    path.write_text(path.read_text()[:30] + "\n  : ][")
    before = snapshot(run["dir"])
    assert main(["run", str(run["recipe"])]) == 2
    assert str(path) in error_line(capsys, "run")
    unchanged(before, snapshot(run["dir"]))


def test_synth_refuses_a_folder_holding_another_world(run, capsys):
    before = snapshot(run["world"])
    assert main(["synth", str(run["world"]), "--scenes", "1", "--frames-per-scene", "1", "--image-size", "32x64"]) == 2
    assert f"{run['world']} already exists" in error_line(capsys, "synth")
    unchanged(before, snapshot(run["world"]))


def test_store_reads_of_unfinished_frames_still_give_the_fill(run):
    """The missing-chunk check must not fire for frames never written (they are legitimately fill)."""
    import zarr

    zarr.open_group(str(run["dir"] / "labels.zarr"), mode="a")["round_0"]["done"][0] = False
    chunk_path(run["dir"] / "labels.zarr", "round_0", "semantics", 0).unlink()
    arrays = LabelStore.open(run["dir"] / "labels.zarr").round(0)
    assert not arrays.is_done(0) and arrays.done()[1:].all()
    assert (arrays.read(0, "semantics") == 255).all()


# ---- deleted files ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lidar", "label map", "table", "checkpoint", "image"])
def test_a_deleted_file_is_named(run, capsys, tmp_path, kind):
    world, recipe = run["world"], str(run["recipe"])
    fresh_cache = ["--set", f"supervision.cache={tmp_path / 'new.zarr'}"]
    path, command = {
        "lidar": (first(world / "samples" / "LIDAR_TOP", "*.bin"), ["supervise", recipe, *fresh_cache]),
        "label map": (first(world / "labels2d", "*.npz"), ["supervise", recipe, *fresh_cache]),
        "table": (world / "v1.0-synth" / "calibrated_sensor.json", ["info", str(world), "--version", "v1.0-synth"]),
        "checkpoint": (run["dir"] / "round_0" / "train" / "checkpoint.pt", ["label", recipe, "--round", "0"]),
        # issue 23: training reads the cached images (tests/test_cache_input.py); supervise decodes the JPEGs
        "image": (first(world / "samples" / "CAM_BACK", "*.jpg"), ["supervise", recipe, *fresh_cache]),
    }[kind]
    if kind == "image":  # every frame's, so that whichever frame a worker reads first is missing one
        for jpg in (world / "samples" / "CAM_BACK").glob("*.jpg"):
            jpg.unlink()
    path.unlink(missing_ok=True)
    before = snapshot(run["dir"])
    assert main(command) == 2
    line = error_line(capsys, command[0])
    assert (path.stem if kind in ("table", "label map") else str(path.parent if kind == "image" else path)) in line
    assert any(word in line for word in ("not found", "missing", ": no "))
    unchanged(before, snapshot(run["dir"]))
