"""`autolabel run`: the micro loop end to end (two rounds), and resuming after a kill."""

from __future__ import annotations

import contextlib
import html
import io
import json
import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import _made_once
from tiny_models import write_recipe

from autolabel.cli import main
from autolabel.provenance import machine
from autolabel.store.labels import LabelStore


def micro_recipe(folder: Path, world: Path) -> Path:
    """Two rounds on the pool world: scene 0 is the pool (3 frames), scene 1 the validation set."""
    path = write_recipe(folder, world)
    r = yaml.safe_load(path.read_text())
    scenes = sorted(p.name for p in (world / "gts").iterdir())
    r["data"]["val_scenes"] = [scenes[1]]
    r["selection"] = {"budget": 1}
    r["rounds"] = {"count": 2, "annotator": "oracle"}  # the simulation is named, never a default (issue 21)
    r["train"] = {"steps": 4, "warmup_steps": 1, "checkpoint_every": 1}
    path.write_text(yaml.safe_dump(r))
    return path


@pytest.fixture(scope="session")
def micro_run(pool_world, tmp_path_factory) -> tuple[Path, Path, str]:
    """The micro loop run once for all the xdist workers (it was once per worker, 33-40 s each on 2 cores):
    (recipe, run folder, what `run` printed). The tests only read it; test_micro_loop_two_rounds runs it again,
    which rewrites nothing but the run's recipe.yaml (atomically)."""

    def make(folder: Path) -> list[str]:
        recipe = micro_recipe(folder, pool_world)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["run", str(recipe)]) == 0
        return [str(recipe), str(folder / "run"), out.getvalue()]

    recipe, run, out = _made_once(tmp_path_factory, "micro", make)
    return Path(recipe), Path(run), out


def test_round_1_teacher_continues_round_0s(micro_run):
    """dts.carry_teacher: round 1's teacher is round 0's (4 updates, start_step 1), so its pseudo-labels reach the
    student from round 1's first step; round 0's young teacher waits for step 1, as a restarted one would."""
    from autolabel.checkpoint import read_checkpoint, teacher_state

    run = micro_run[1]
    first = {
        k: json.loads((run / f"round_{k}" / "train" / "history.jsonl").read_text().splitlines()[0]) for k in (0, 1)
    }
    assert "pseudo3d" not in first[0] and "pseudo3d" in first[1]
    assert teacher_state(read_checkpoint(run / "round_1" / "train" / "checkpoint.pt"))["updates"] == 8


def test_micro_loop_two_rounds(micro_run):
    recipe, run, out = micro_run
    assert "round 0: 0 frames with manual 3D labels" in out and "round 1: 1 frames with manual 3D labels" in out
    assert "(labeller " in out  # the DTS teacher's validation mIoU beside the student's
    stages = json.loads((run / "stages.json").read_text())
    expected = (
        ["data", "supervise"]
        + [f"round_0/{s}" for s in ("train", "label", "evaluate", "export", "select", "ingest", "report")]
        + [f"round_1/{s}" for s in ("train", "label", "evaluate", "export", "report")]
    )
    assert list(stages) == expected
    # each stage records the machine it ran on (the quickstart's numbers repeat on one machine only)
    assert all(s["machine"] == machine() and s["machine"]["cpu"] and s["machine"]["cores"] for s in stages.values())
    store = LabelStore.open(run / "labels.zarr")
    assert store.rounds() == [0, 1] and int(store.manual().done().sum()) == 1
    assert len(list((run / "export" / "round_1" / "gts").rglob("labels.npz"))) == 3
    assert (
        stages["round_1/evaluate"]["val"]["miou"] is not None
        and stages["round_1/evaluate"]["pseudo"]["miou"] is not None
    )
    for k in (0, 1):
        page = (run / "report" / f"round_{k}" / "index.html").read_text()
        for png in ("frame0_cameras.png", "frame0_occupancy.png", "budget.png"):
            assert png in page and (run / "report" / f"round_{k}" / png).stat().st_size > 2000
    assert (run / "recipe.yaml").is_file()
    # a second run does nothing and prints the same summary
    assert main(["run", str(recipe)]) == 0
    assert json.loads((run / "stages.json").read_text()) == stages
    # another recipe in the same folder is refused
    assert main(["run", str(recipe), "--set", "train.steps=5"]) == 2


def _img_sources(page: str) -> list[str]:
    class Imgs(HTMLParser):
        def __init__(self):
            super().__init__()
            self.src: list[str] = []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.src.append(dict(attrs)["src"])

    p = Imgs()
    p.feed(page)
    return p.src


def test_report_page_reads_without_the_images(micro_run):
    """The page states the round's numbers in tables (not a JSON dump, not only inside figures): the
    summary, per-class IoU in the class colours, the legend, the selected frames with their scores, and
    3D views of predicted and true occupancy; every image it shows is a file beside it."""
    _, run, _ = micro_run
    stages = json.loads((run / "stages.json").read_text())
    for k in (0, 1):
        folder = run / "report" / f"round_{k}"
        page = (folder / "index.html").read_text()
        ev = stages[f"round_{k}/evaluate"]
        assert "<pre>" not in page and '"seconds"' not in page
        summary = page[page.index("id='summary'") : page.index("</table>", page.index("id='summary'"))]
        for v in (
            ev["val"]["miou"],
            ev["val"]["geometric_iou"],
            ev["val_teacher"]["miou"],  # the DTS teacher that labels, on the same frames
            ev["val_teacher"]["geometric_iou"],
            ev["pseudo"]["miou"],
            ev["pseudo_thresholded"]["miou"],
        ):
            assert f"<td class='v'>{v:.1f}</td>" in summary
        kept = 100 * stages[f"round_{k}/export"]["kept_in_mask_camera"]
        assert f"kept share of the exported mask_camera (%)</td><td class='v'>{kept:.1f}<" in page
        assert f"frames with manual 3D labels</td><td class='v'>{ev['labelled']}<" in page
        per_class = page[page.index("id='per-class'") :]
        car = ev["val"]["per_class_iou"]["car"]
        assert "background:rgb(0,150,245)'></span>car</td><td>" + ("-" if car is None else f"{car:.1f}") in per_class
        assert "labeller (DTS teacher)" in per_class
        assert page.count("<span class='sw'") >= 17 + 18  # the legend and the per-class table
        for src in _img_sources(page):
            assert (folder / src).is_file(), src
        assert any(s.startswith("frame0_occupancy") for s in _img_sources(page))
    manifest = json.loads((run / "round_0" / "select" / "manifest.json").read_text())
    page0 = (run / "report" / "round_0" / "index.html").read_text()
    selected = page0[page0.index("id='selected'") :]
    assert manifest["strategy"] == "stratified"  # auto at this budget: it reads no score, so the pool is not scored
    for row in manifest["selected"]:
        assert row["token"] in selected and html.escape(row["reason"]) in selected
        assert "uncertainty" not in row and f"<td>{row['cost']:.3f}</td>" in selected
    assert "selected_000_cameras.png" in page0 and "selected_000_bev.png" in page0
    assert "the last round selects nothing" in (run / "report" / "round_1" / "index.html").read_text()


CHROMIUM = Path("/usr/bin/chromium")


def screenshot(page: Path, png: Path, profile: Path, size: tuple[int, int] = (1400, 2400)) -> None:
    """Chromium, headless, renders the page and writes a screenshot of its top `size` pixels."""
    args = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        f"--window-size={size[0]},{size[1]}",
        page.as_uri(),
    ]
    r = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and png.is_file(), r.stderr[-3000:]


@pytest.mark.skipif(
    not CHROMIUM.is_file(),
    reason="Chromium is not installed (/usr/bin/chromium; Debian: apt-get install "
    "chromium): the report page is checked in a real browser",
)
def test_report_page_in_a_headless_browser(micro_run, tmp_path):
    """A real browser renders the page: the class colours of the legend and per-class table show, and the
    figures load (a broken <img> leaves a few grey pixels, a loaded occupancy figure thousands of
    coloured ones)."""
    from PIL import Image

    from occnet.classes import FREE_ID, OCC3D_COLORS

    _, run, _ = micro_run
    shot = tmp_path / "report.png"
    screenshot(run / "report" / "round_0" / "index.html", shot, tmp_path / "profile")
    img = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert img.shape == (2400, 1400, 3)
    for c in range(FREE_ID):  # each swatch is 14 x 14 pixels, drawn twice (legend, per-class table)
        assert (np.abs(img - OCC3D_COLORS[c]).max(-1) <= 2).sum() >= 2 * 12 * 12, OCC3D_COLORS[c]
    saturated = (img.max(-1) - img.min(-1)) > 80
    assert saturated.sum() > 40000  # the figures' coloured voxels, not just the swatches (17 x 2 x 196 pixels)


@pytest.mark.slow(56)
def test_killed_run_resumes_to_the_same_outputs(micro_run, pool_world, tmp_path):
    """The micro loop killed in round 1's training and run again gives micro_run's labels and export (the same
    recipe in another folder, run once without a kill)."""
    reference = micro_run[1]
    recipe = micro_recipe(tmp_path / "b", pool_world)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "autolabel.cli", "run", str(recipe)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
    a = LabelStore.open(reference / "labels.zarr")
    b = LabelStore.open(tmp_path / "b" / "run" / "labels.zarr")
    for k in (0, 1):
        for name in ("semantics", "confidence", "mask_camera", "mask_lidar"):
            np.testing.assert_array_equal(np.asarray(a.round(k).group[name][:]), np.asarray(b.round(k).group[name][:]))
    files = sorted(p.relative_to(reference / "export") for p in (reference / "export").rglob("labels.npz"))
    assert files and all(
        (reference / "export" / f).read_bytes() == (tmp_path / "b" / "run" / "export" / f).read_bytes() for f in files
    )


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"rounds": {"count": 0}}, "rounds.count must be >= 1"),
        ({"selection": {"strategy": "best"}}, "selection.strategy must be one of"),
        ({"rounds": {"annotator": "vendor"}}, "rounds.annotator must be one of"),
        ({"dts": {"label_fusion_doubt": 1.5}}, "dts.label_fusion_doubt must lie in"),
        ({"dts": {"doubt_classes": "things"}}, "dts.doubt_classes must be one of"),
    ],
)
def test_recipe_errors_name_the_key(tmp_path, pool_world, bad, match):
    path = write_recipe(tmp_path, pool_world)
    r = yaml.safe_load(path.read_text())
    r.update(bad)
    path.write_text(yaml.safe_dump(r))
    from autolabel.errors import DataError
    from autolabel.recipe import load_recipe

    with pytest.raises(DataError, match=match):
        load_recipe(path)


def test_real_annotations_are_the_default_and_wait_in_the_run_folder(tmp_path, pool_world):
    """Issue 21: a recipe that names no annotator waits for real annotations (<run>/annotations/round_K)
    instead of copying the dataset's gts/ as manual labels."""
    from autolabel.errors import AwaitingAnnotations
    from autolabel.stages import ingest as _ingest
    from autolabel.recipe import RoundsConfig, load_recipe

    assert RoundsConfig().annotator == "folder"
    recipe = load_recipe(write_recipe(tmp_path, pool_world, rounds={"count": 2}))
    with pytest.raises(AwaitingAnnotations, match=str(tmp_path / "run" / "annotations" / "round_0")):
        _ingest(recipe, 0)


def test_the_oracle_on_a_dataset_that_is_not_synthetic_is_refused(tmp_path, pool_world, sample_root, capsys):
    """The oracle copies gts/; on real data that passes the ground truth off as manual labels: refused before
    the run folder is written, unless the recipe asks for a simulation study by name."""
    from autolabel.stages.checks import check_annotator
    from autolabel.recipe import load_recipe

    real = write_recipe(tmp_path / "real", sample_root, rounds={"count": 2, "annotator": "oracle"})
    r = yaml.safe_load(real.read_text())
    r["data"]["version"] = "v1.0-mini"
    real.write_text(yaml.safe_dump(r))
    assert main(["run", str(real)]) == 2
    assert "not a synthetic world" in capsys.readouterr().err and not (tmp_path / "real" / "run").exists()
    check_annotator(load_recipe(real, ["rounds.oracle_on_real_data=true"]))  # asked for by name
    check_annotator(
        load_recipe(write_recipe(tmp_path / "synth", pool_world, rounds={"count": 2, "annotator": "oracle"}))
    )
