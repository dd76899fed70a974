"""Issue 19, resume and reuse: a rerun of an unchanged recipe resumes, a corrected recipe continues a run
when only keys of unfinished stages changed, a finished run takes more rounds, the run folder records why
it stopped, and nothing is written before the recipe's paths and values are checked."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny_models import error_line, write_recipe

from autolabel.cli import main
from autolabel.errors import EXIT_AWAITING_ANNOTATIONS, EXIT_INTERRUPTED
from autolabel.recipe import forbidding_changes, load_recipe, save_recipe

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_digest_survives_save_and_load(path, tmp_path):
    recipe = load_recipe(path)
    save_recipe(recipe, tmp_path / "recipe.yaml")
    again = load_recipe(tmp_path / "recipe.yaml")
    assert again.digest() == recipe.digest()
    assert forbidding_changes(again, recipe, ["data", "supervise", "round_0/train", "round_0/report"]) == []


def test_only_keys_of_finished_stages_forbid_a_change(tmp_path):
    path = RECIPES[0].parent / "quickstart.yaml"
    old = load_recipe(path)
    new = load_recipe(
        path, ["train.steps=9", "rounds.count=3", "selection.budget=2", "device=auto"], out=str(tmp_path / "x")
    )
    assert forbidding_changes(old, new, ["data", "supervise"]) == []
    assert forbidding_changes(old, new, ["data", "supervise", "round_0/train"]) == [
        "train.steps (read by round_0/train)"
    ]
    assert forbidding_changes(old, new, ["round_0/select"]) == ["selection.budget (read by round_0/select)"]


def _capture(capsys) -> tuple[str, str]:
    c = capsys.readouterr()
    return c.out, c.err


def test_preflight_writes_nothing_and_names_every_problem(tmp_path, sample_root, capsys):
    out = tmp_path / "run"
    recipe = Path(__file__).parent.parent / "recipes" / "nuscenes_label_free.yaml"
    assert main(["run", str(recipe), "--out", str(out), "--set", f"data.dataroot={tmp_path / 'nowhere'}"]) == 2
    err = error_line(capsys, "run")
    assert "www.nuscenes.org" in err and "samples/" in err
    assert not out.exists()
    # a dataset that is there, but neither SAM nor CLIP: both named, nothing loaded, nothing written
    assert (
        main(
            [
                "run",
                str(recipe),
                "--out",
                str(out),
                "--set",
                f"data.dataroot={sample_root}",
                "--set",
                "data.version=v1.0-mini",
                "--set",
                "device=cpu",
                "--set",
                "supervision.device=cpu",
            ]
        )
        == 2
    )
    err = error_line(capsys, "run")
    assert "supervision.sam.checkpoint" in err and "supervision.clip.model" in err and "huggingface-cli download" in err
    assert not out.exists()
    for device in ("tpu", "gpu"):
        assert main(["run", str(recipe), "--out", str(out), "--set", f"device={device}"]) == 2
        err = error_line(capsys, "run")
        assert f"device must be auto, cpu, cuda or cuda:N, got '{device}'" in err
    assert not out.exists()


def test_train_and_label_check_before_writing(tmp_path, pool_world, capsys):
    recipe = write_recipe(tmp_path, pool_world)  # nothing supervised, nothing trained
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--round", "0"]) == 2
    assert "no 2D supervision cache" in error_line(capsys, "train")
    assert main(["label", str(recipe), "--round", "0"]) == 2
    assert "no 2D supervision cache" in error_line(capsys, "label")
    assert not run.exists()
    assert main(["supervise", str(recipe)]) == 0
    capsys.readouterr()
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    assert main(["label", str(recipe), "--round", "0"]) == 2
    assert "trained network" in error_line(capsys, "label")
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # no store, no round folder


def copy_trained(trained: Path, tmp_path: Path, **train) -> Path:
    """A writable copy of the session's trained run (supervised, round 0 trained and labelled); returns
    its recipe, which points at the copy (without the read-out calibration after training: not under test,
    and most of a few-step training's time)."""
    folder = tmp_path / "trained"
    shutil.copytree(trained, folder)
    path = folder / "recipe.yaml"
    r = yaml.safe_load(path.read_text())
    r["out"] = str(folder / "run")
    r["train"] = {**r["train"], **train}
    r["dts"] = {**r["dts"], "calibrate_threshold": False}
    path.write_text(yaml.safe_dump(r))
    return path


def test_a_run_stops_fails_resumes_and_takes_more_rounds(tmp_path, pool_world, capsys):
    """One run folder through the issue's cases: a stage fails (stopped.json names it) and a fixed input
    continues the run; --out naming the default folder and a later stage's key are accepted, a finished
    stage's key is refused; the finished run takes another round with a folder annotator, which stops with
    exit 3 (recorded) until the labels are delivered; retraining round 0 afterwards reports 0 manual frames."""
    world = tmp_path / "world"
    shutil.copytree(pool_world, world)
    maps = sorted((world / "labels2d").rglob("*.npz"))
    victim = maps[len(maps) // 2]
    good = victim.read_bytes()
    victim.write_bytes(good[:100])
    scenes = sorted(p.name for p in (world / "gts").iterdir())
    # one scene of 3 frames is the pool (the other is supervised and scored, not trained on): a quick loop
    path = write_recipe(
        tmp_path,
        world,
        train={"steps": 2, "warmup_steps": 1, "checkpoint_every": 1},
        selection={"budget": 1},
        dts={"start_step": 1, "batch_size": 1, "calibrate_threshold": False},
        data={"dataroot": str(world), "version": "v1.0-synth", "train_scenes": scenes[:1]},
    )
    r = yaml.safe_load(path.read_text())
    del r["out"]  # the default folder, runs/<name>, relative to the working directory
    path.write_text(yaml.safe_dump(r))
    run = tmp_path / "runs" / "t"
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["run", str(path)]) == 2
        assert str(victim) in error_line(capsys, "run")
        stopped = json.loads((run / "stopped.json").read_text())
        assert stopped["stage"] == "supervise" and stopped["status"] == "failed" and str(victim) in stopped["message"]
        assert list(json.loads((run / "stages.json").read_text())) == ["data"]
        victim.write_bytes(good)
        # --out naming the default folder, and a change only later stages read (train.steps): accepted
        assert main(["run", str(path), "--out", "runs/t", "--set", "train.steps=3"]) == 0
        assert not (run / "stopped.json").exists()
        stages = json.loads((run / "stages.json").read_text())
        assert stages["round_0/train"]["steps"] == 3 and "round_0/select" not in stages
        # round 0 trained with 3 steps: another value is refused, naming the key and the stage
        assert main(["run", str(path), "--set", "train.steps=4"]) == 2
        assert "train.steps (read by round_0/train)" in error_line(capsys, "run")
        assert json.loads((run / "stages.json").read_text()) == stages
        # one more round, annotated by people: waits (exit 3) until their labels are there
        annotations = tmp_path / "annotations"
        more = [
            "--set",
            "train.steps=3",
            "--set",
            "rounds.count=2",
            "--set",
            "rounds.annotator=folder",
            "--set",
            f"rounds.annotations_dir={annotations}",
        ]
        assert main(["run", str(path), *more]) == EXIT_AWAITING_ANNOTATIONS
        err = _capture(capsys)[1]
        assert "waiting for annotations" in err and str(annotations / "round_0") in err
        stopped = json.loads((run / "stopped.json").read_text())
        assert stopped["stage"] == "round_0/ingest" and stopped["status"] == "waiting"
        manifest = json.loads((run / "round_0" / "select" / "manifest.json").read_text())
        for row in manifest["selected"]:
            dst = annotations / "round_0" / "gts" / row["scene"] / row["token"] / "labels.npz"
            dst.parent.mkdir(parents=True)
            shutil.copyfile(world / "gts" / row["scene"] / row["token"] / "labels.npz", dst)
        assert main(["run", str(path), *more]) == 0
        out = _capture(capsys)[0]
        assert "round 0: 0 frames with manual 3D labels" in out and "round 1: 1 frames with manual 3D labels" in out
        assert {"round_0/select", "round_0/ingest", "round_1/train", "round_1/report"} <= set(
            json.loads((run / "stages.json").read_text())
        )
        assert not (run / "stopped.json").exists()
        # round 0 trained on no manual labels; retraining it on the finished run says so
        assert main(["train", str(path), "--round", "0", *more]) == 0
        assert "(0 with manual 3D labels)" in _capture(capsys)[0]
    finally:
        os.chdir(cwd)


def test_resumed_training_counts_on_from_its_checkpoint(tmp_path, trained, capsys):
    """A run killed at step 6 with its checkpoint at step 4 (history.jsonl holds steps 1-6, the last line
    cut mid-write): the resumed bar starts at 4/8 and the log holds each step once."""
    from autolabel.stages import train as train_round

    recipe = load_recipe(copy_trained(trained, tmp_path, steps=8))
    log = recipe.round_dir(0) / "train" / "history.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    with open(log, "a") as fh:  # what the killed process had logged past its last checkpoint
        fh.write(json.dumps({**rows[-1], "step": 5}) + "\n" + json.dumps({**rows[-1], "step": 6})[:20])
    _capture(capsys)
    train_round(recipe, 0, progress=True)
    err = _capture(capsys)[1]
    assert "4/8" in err and "8/8" in err and "0/4" not in err
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5, 6, 7, 8]


def test_ctrl_c_is_one_line_exit_130_and_recorded(tmp_path, trained):
    path = copy_trained(trained, tmp_path, steps=100000, checkpoint_every=1000)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "autolabel.cli", "run", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        text=True,
        # SIGINT at its default, as in a terminal: a test run started in the background by a script ignores
        # SIGINT, its children inherit that, and a command started so stays deaf to it (occnet.interrupt)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    stages = tmp_path / "trained" / "run" / "stages.json"
    deadline = time.time() + 300
    while (
        time.time() < deadline
        and proc.poll() is None
        and "supervise" not in (stages.read_text() if stages.is_file() else "")
    ):
        time.sleep(0.05)
    time.sleep(2.0)  # inside round 0's training
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].split("\r")[-1] == "autolabel run: interrupted; rerun to resume"
    stopped = json.loads((tmp_path / "trained" / "run" / "stopped.json").read_text())
    assert stopped["stage"] == "round_0/train" and stopped["status"] == "interrupted"
