"""Several processes (torchrun, gloo on the CPU): training equals one process, sharded supervision and
labelling give the same cache and store."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny_models import write_recipe

from autolabel.cli import main
from autolabel.store.labels import LabelStore
from autolabel.supervision.cache import SupervisionCache


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_port()),
        "-m",
        "autolabel.cli",
        *args,
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def _recipe(folder: Path, world: Path, accumulate: int) -> Path:
    path = write_recipe(folder, world)
    r = yaml.safe_load(path.read_text())
    r["train"] = {"steps": 3, "warmup_steps": 1, "checkpoint_every": 1, "batch_size": 1, "accumulate": accumulate}
    # no pseudo-label loss in these 3 steps: the teacher's BatchNorm statistics (eval mode) come from rank 0's
    # frames under DDP but from both micro-batches in one process, so its pseudo-labels would differ by design
    r["dts"] = {"start_step": 10, "batch_size": 1}
    path.write_text(yaml.safe_dump(r))
    return path


@pytest.fixture(scope="module")
def single(pool_world, tmp_path_factory) -> Path:
    """One process: supervise, train 3 steps of 2 frames (2 micro-batches of 1), label."""
    folder = tmp_path_factory.mktemp("single")
    recipe = _recipe(folder, pool_world, accumulate=2)
    for cmd in ("supervise", "train", "label"):
        assert main([cmd, str(recipe)]) == 0
    return folder


def test_two_processes_train_like_one_with_the_same_global_batch(single, pool_world, tmp_path):
    recipe = _recipe(tmp_path, pool_world, accumulate=1)  # 2 ranks x 1 frame = the same 2 frames per step
    torchrun("supervise", str(recipe))
    a = SupervisionCache.open(single / "run" / "supervision.zarr")
    b = SupervisionCache.open(tmp_path / "run" / "supervision.zarr")
    assert b.arrays.done().all()
    for t in a.arrays.tokens:
        for x, y in zip(a.read(t), b.read(t)):
            np.testing.assert_array_equal(x, y)
    torchrun("train", str(recipe))
    sa = torch.load(single / "run" / "round_0" / "train" / "checkpoint.pt", weights_only=True)
    sb = torch.load(tmp_path / "run" / "round_0" / "train" / "checkpoint.pt", weights_only=True)
    assert sa["step"] == sb["step"] == 3
    from occnet.network import OccupancyNetwork
    from autolabel.recipe import load_recipe

    names = {n for n, _ in OccupancyNetwork(load_recipe(recipe).network).named_parameters()}
    # Parameters agree up to float summation order (DDP's all-reduce vs accumulation). AdamW turns a gradient
    # at the noise floor into a step of about lr either way, so a weight can differ by up to steps x lr
    # (measured: 1.3e-4 after 3 steps at lr 2e-4); BatchNorm running statistics are buffers and differ by
    # design (each rank normalises its own frames; DDP keeps rank 0's).
    tol = 3 * load_recipe(recipe).train.lr
    for name in names:
        for got, want in (
            (sb["model"][name], sa["model"][name]),
            (sb["hooks"][0]["model"][name], sa["hooks"][0]["model"][name]),
        ):
            torch.testing.assert_close(got, want, rtol=0, atol=tol, msg=name)


def test_two_processes_label_the_same_store(single, pool_world, tmp_path):
    recipe = _recipe(tmp_path, pool_world, accumulate=2)
    r = yaml.safe_load(recipe.read_text())
    r["supervision"] = {"cache": str(single / "run" / "supervision.zarr")}
    recipe.write_text(yaml.safe_dump(r))
    (tmp_path / "run" / "round_0" / "train").mkdir(parents=True)
    shutil.copyfile(
        single / "run" / "round_0" / "train" / "checkpoint.pt", tmp_path / "run" / "round_0" / "train" / "checkpoint.pt"
    )
    torchrun("label", str(recipe))
    a = LabelStore.open(single / "run" / "labels.zarr").round(0)
    b = LabelStore.open(tmp_path / "run" / "labels.zarr").round(0)
    assert b.done().all()
    for name in ("semantics", "confidence", "mask_camera", "mask_lidar"):
        np.testing.assert_array_equal(np.asarray(a.group[name][:]), np.asarray(b.group[name][:]))


@pytest.mark.slow(48)
def test_the_whole_loop_under_torchrun(pool_world, tmp_path):
    """`autolabel run` in two processes: every stage recorded once, the store and exports complete."""
    from test_pipeline import micro_recipe

    recipe = micro_recipe(tmp_path, pool_world)
    torchrun("run", str(recipe))
    run = tmp_path / "run"
    stages = json.loads((run / "stages.json").read_text())
    assert list(stages) == ["data", "supervise"] + [
        f"round_0/{s}" for s in ("train", "label", "evaluate", "export", "select", "ingest", "report")
    ] + [f"round_1/{s}" for s in ("train", "label", "evaluate", "export", "report")]
    store = LabelStore.open(run / "labels.zarr")
    assert store.rounds() == [0, 1] and store.round(1).done().all() and int(store.manual().done().sum()) == 1
    assert len(list((run / "export" / "round_1" / "gts").rglob("labels.npz"))) == 3
    assert stages["round_1/evaluate"]["val"]["miou"] is not None


def _one_and_two(trained: Path, tmp_path: Path, **sections) -> list[Path]:
    """Two copies of the trained run ("one" for one process, "two" for torchrun), their recipes with `sections`
    set; the recipes' paths."""
    runs = []
    for name in ("one", "two"):
        shutil.copytree(trained, tmp_path / name)
        recipe = tmp_path / name / "recipe.yaml"
        r = yaml.safe_load(recipe.read_text()) | {"out": str(tmp_path / name / "run")} | sections
        recipe.write_text(yaml.safe_dump(r))
        runs.append(recipe)
    return runs


def _manifest(recipe: Path) -> dict:
    return json.loads((recipe.parent / "run" / "round_0" / "select" / "manifest.json").read_text())


def test_two_processes_score_the_pool_like_one(trained, tmp_path):
    """Issue 21: `autolabel select` under torchrun: each rank scores its share of the frames (DataLoader
    workers), rank 0 gathers them and selects; the manifest equals one process's, scores included."""
    runs = _one_and_two(trained, tmp_path, selection={"strategy": "hybrid", "budget": 3, "per_scene_cap": 2})
    assert main(["select", str(runs[0]), "--round", "0"]) == 0
    out = torchrun("select", str(runs[1]), "--round", "0")
    assert "pool scored by 2 process(es) (3, 3 frames)" in out.stdout  # each rank scored its share
    a, b = (_manifest(r) for r in runs)
    assert len(a["selected"]) == 3 and a["selected"] == b["selected"]
    assert a["pool_size"] == b["pool_size"] == 6


def test_two_processes_score_the_pool_by_its_fused_labels_like_one(trained, tmp_path):
    """`selection.strategy: fusion` under torchrun: each rank reads its share of the fused labels (DataLoader
    workers), rank 0 gathers and selects tiles; the manifest equals one process's."""
    runs = _one_and_two(
        trained,
        tmp_path,
        fusion={"enabled": True, "window": 1},
        selection={"unit": "region", "region_size": 16, "budget": 2048 * 4, "per_scene_cap": 1},  # auto
    )
    assert main(["fuse", str(runs[0])]) == 0
    shutil.copytree(tmp_path / "one" / "run" / "fusion.zarr", tmp_path / "two" / "run" / "fusion.zarr")
    assert main(["select", str(runs[0]), "--round", "0"]) == 0
    out = torchrun("select", str(runs[1]), "--round", "0")
    assert "pool scored by its fused labels, no network, in 2 process(es) (3, 3 frames)" in out.stdout
    a, b = (_manifest(r) for r in runs)
    assert a["strategy"] == b["strategy"] == "fusion" and a["unit"] == "region"
    assert sum(len(row["tiles"]) for row in a["selected"]) == 4 and a["selected"] == b["selected"]
