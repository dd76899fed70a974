"""`autolabel run`: the micro loop end to end (two rounds), and resuming after a kill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny_models import write_recipe

from autolabel.cli import main
from autolabel.store.labels import LabelStore


def micro_recipe(folder: Path, world: Path) -> Path:
    """Two rounds on the pool world: scene 0 is the pool (3 frames), scene 1 the validation set."""
    path = write_recipe(folder, world)
    r = yaml.safe_load(path.read_text())
    scenes = sorted(p.name for p in (world / "gts").iterdir())
    r["data"]["val_scenes"] = [scenes[1]]
    r["selection"] = {"budget": 1}
    r["rounds"] = {"count": 2}
    r["train"] = {"steps": 4, "warmup_steps": 1, "checkpoint_every": 1}
    path.write_text(yaml.safe_dump(r))
    return path


def test_micro_loop_two_rounds(pool_world, tmp_path, capsys):
    recipe = micro_recipe(tmp_path, pool_world)
    assert main(["run", str(recipe)]) == 0
    run = tmp_path / "run"
    out = capsys.readouterr().out
    assert "round 0: 0 frames with manual 3D labels" in out and "round 1: 1 frames with manual 3D labels" in out
    stages = json.loads((run / "stages.json").read_text())
    expected = ["data", "supervise"] + [f"round_0/{s}" for s in ("train", "label", "evaluate", "export", "select", "ingest",
                                                                 "report")] + [f"round_1/{s}" for s in ("train", "label",
                                                                                                         "evaluate", "export", "report")]
    assert list(stages) == expected
    store = LabelStore.open(run / "labels.zarr")
    assert store.rounds() == [0, 1] and int(store.manual().done().sum()) == 1
    assert len(list((run / "export" / "round_1" / "gts").rglob("labels.npz"))) == 3
    assert stages["round_1/evaluate"]["val"]["miou"] is not None and stages["round_1/evaluate"]["pseudo"]["miou"] is not None
    for k in (0, 1):
        page = (run / "report" / f"round_{k}" / "index.html").read_text()
        for png in ("frame0_cameras.png", "frame0_occupancy.png", "iou_val.png", "iou_pseudo.png", "budget.png"):
            assert png in page and (run / "report" / f"round_{k}" / png).stat().st_size > 2000
    assert (run / "recipe.yaml").is_file()
    # a second run does nothing and prints the same summary
    assert main(["run", str(recipe)]) == 0
    assert json.loads((run / "stages.json").read_text()) == stages
    # another recipe in the same folder is refused
    assert main(["run", str(recipe), "--set", "train.steps=5"]) == 2


def test_killed_run_resumes_to_the_same_outputs(pool_world, tmp_path):
    reference = micro_recipe(tmp_path / "a", pool_world)
    assert main(["run", str(reference)]) == 0
    recipe = micro_recipe(tmp_path / "b", pool_world)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "autolabel.cli", "run", str(recipe)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "b" / "run" / "round_1" / "train" / "checkpoint.pt"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not ckpt.exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    stages = json.loads((tmp_path / "b" / "run" / "stages.json").read_text())
    assert "round_1/train" not in stages  # killed in the middle of round 1's training
    assert main(["run", str(recipe)]) == 0
    a = LabelStore.open(tmp_path / "a" / "run" / "labels.zarr")
    b = LabelStore.open(tmp_path / "b" / "run" / "labels.zarr")
    for k in (0, 1):
        for name in ("semantics", "confidence", "mask_camera", "mask_lidar"):
            np.testing.assert_array_equal(np.asarray(a.round(k).group[name][:]), np.asarray(b.round(k).group[name][:]))
    files = sorted(p.relative_to(tmp_path / "a" / "run" / "export") for p in (tmp_path / "a" / "run" / "export").rglob("labels.npz"))
    assert files and all((tmp_path / "a" / "run" / "export" / f).read_bytes() == (tmp_path / "b" / "run" / "export" / f).read_bytes()
                         for f in files)


@pytest.mark.parametrize("bad, match", [({"rounds": {"count": 0}}, "rounds.count must be >= 1"),
                                        ({"selection": {"strategy": "best"}}, "selection.strategy must be one of"),
                                        ({"rounds": {"annotator": "folder"}}, "needs rounds.annotations_dir")])
def test_recipe_errors_name_the_key(tmp_path, pool_world, bad, match):
    path = write_recipe(tmp_path, pool_world)
    r = yaml.safe_load(path.read_text())
    r.update(bad)
    path.write_text(yaml.safe_dump(r))
    from autolabel.errors import DataError
    from autolabel.recipe import load_recipe

    with pytest.raises(DataError, match=match):
        load_recipe(path)
