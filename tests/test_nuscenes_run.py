"""Issue 23: the real-data path. `autolabel run` with the nuScenes recipe on the real keyframe of
tests/data/nuscenes-sample (tiny random SAM / CLIP of the real architectures, a few steps, small images):
supervise, train, label, export, select, a hand-made delivery where the manifest says, ingest, round 1,
report; then `autolabel eval` against an Occ3D-nuScenes gts/ tree laid out as the official release."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from tiny_models import TINY_SAM, save_tiny_clip, save_tiny_sam

from autolabel.cli import main
from kernels.grid import GridSpec

ROOT = Path(__file__).resolve().parents[1]
NUSCENES_RECIPE = ROOT / "recipes" / "nuscenes_active_rounds.yaml"
SAMPLE_TOKEN = "ca9a282c9e77460f8360f564131a8af5"
SAMPLE_SCENE = "scene-0061"
# Occ3D-nuScenes voxels (0.4 m, z from -1 to 5.4 m) over a smaller square, to keep the CPU run short
GRID = GridSpec(range_min=(-16.0, -16.0, -1.0), range_max=(16.0, 16.0, 5.4), voxel_size=0.4)


def _flow(x) -> str:
    return json.dumps(x)  # JSON is YAML flow style: --set values the recipe loader parses


def tiny_overrides(models: Path, sample_root: Path) -> list[str]:
    """--set values that make the nuScenes recipe tiny; everything else is the recipe as users run it."""
    arch = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(TINY_SAM).items()}
    sets = {
        "device": "cpu",
        "data.dataroot": str(sample_root),
        "data.version": "v1.0-mini",
        "supervision.sam.checkpoint": str(models / "sam.pth"),
        "supervision.sam.arch": _flow(arch),
        "supervision.sam.points_per_side": 4,
        "supervision.sam.pred_iou_thresh": 0,
        "supervision.sam.stability_score_thresh": 0,
        "supervision.sam.min_mask_area": 4,
        "supervision.min_confidence": 0,
        "supervision.clip.model": str(models / "clip"),
        "network.grid": _flow(GRID.to_dict()),
        "network.image_size": "[64, 112]",
        "network.depth_bins": 16,
        "network.depth_max": 30.0,
        "network.context_channels": 8,
        "network.voxel_channels": 8,
        "render.rays_per_frame": 128,
        "train.steps": 1,
        "train.warmup_steps": 0,
        "train.checkpoint_every": 1,
        "train.batch_size": 1,
        "dts.start_step": 1,
        "dts.batch_size": 1,
        "selection.budget": int(np.prod(GRID.shape)),  # the recipe's tiles: one frame's worth of voxels
        "rounds.count": 2,
    }
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def hand_made_labels(grid: GridSpec) -> dict[str, np.ndarray]:
    """What an annotator delivers: road under the car, a parked truck, free space above, within 20 m."""
    X, Y, Z = grid.shape
    sem = np.full(grid.shape, 17, np.uint8)  # free
    ground = int((0.0 - grid.range_min[2]) / grid.voxel_size[2])  # the layer holding z = 0 (ego frame: ground ~ 0)
    sem[:, :, : ground + 1] = 11  # driveable_surface
    sem[X // 2 + 10 : X // 2 + 20, Y // 2 - 3 : Y // 2 + 3, ground + 1 : ground + 8] = 10  # truck ahead
    ix, iy = np.meshgrid(np.arange(X) - X / 2, np.arange(Y) - Y / 2, indexing="ij")
    near = (np.hypot(ix, iy) * grid.voxel_size[0] < 20)[:, :, None] & np.ones(Z, bool)
    return {"semantics": sem, "mask_lidar": near.astype(np.uint8), "mask_camera": near.astype(np.uint8)}


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def test_nuscenes_recipe_runs_on_the_real_sample(tmp_path, sample_root, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the recipe's relative paths (annotations/) resolve where a user runs it
    models = tmp_path / "models"
    models.mkdir()
    save_tiny_sam(models / "sam.pth")
    save_tiny_clip(models / "clip")
    backbone = models / "resnet18.pth"  # stands in for torchvision's ImageNet file (no downloads in tests)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), backbone)
    run = tmp_path / "run"
    argv = (
        "run",
        str(NUSCENES_RECIPE),
        "--out",
        str(run),
        *tiny_overrides(models, sample_root),
        "--set",
        f"network.backbone_weights={backbone}",
    )

    # round 0 stops after selection: the folder annotator (the recipe's) waits for a delivery
    code, _ = _run(*argv)
    err = capsys.readouterr().err
    assert code == 3, err
    manifest = json.loads((run / "round_0" / "select" / "manifest.json").read_text())
    assert [r["token"] for r in manifest["selected"]] == [SAMPLE_TOKEN]
    # the recipe's BEV tiles, ranked by the fused labels (auto for tiles of a run that fuses: issue 21)
    assert manifest["unit"] == "region" and manifest["strategy"] == "fusion" and manifest["selected"][0]["tiles"]
    deliver = Path(manifest["deliver_to"])
    assert deliver.is_absolute() and deliver == tmp_path / "annotations" / "round_0"
    assert str(deliver) in err  # the waiting message names the same folder
    assert str(deliver) in (run / "round_0" / "select" / "index.html").read_text()
    stages = json.loads((run / "stages.json").read_text())
    assert stages["supervise"]["coverage"] > 0  # the tiny SAM + CLIP labelled pixels of the real images
    assert stages["fuse"]["labelled"] == 1  # the recipe fuses the evidence (issue 20): one real frame, no neighbours

    # the annotators' delivery, written as the official Occ3D-nuScenes files are (plain np.savez_compressed)
    labels = hand_made_labels(GRID)
    target = deliver / "gts" / SAMPLE_SCENE / SAMPLE_TOKEN / "labels.npz"
    target.parent.mkdir(parents=True)
    np.savez_compressed(target, **labels)

    backbone.unlink()  # round 1 fine-tunes round 0's checkpoint: the backbone file is no longer read
    code, out = _run(*argv)
    assert code == 0, capsys.readouterr().err
    assert "round 1: 1 frames with manual 3D labels" in out
    stages = json.loads((run / "stages.json").read_text())
    ingest = stages["round_0/ingest"]
    assert (ingest["added"], ingest["manual_total"]) == (1, 1)
    assert ingest["voxels_added"] == ingest["manual_voxels"] == GRID.num_voxels  # a whole frame, every voxel labelled
    assert stages["round_1/train"]["manual_frames"] == 1
    exported = run / "export" / "round_1" / "gts" / SAMPLE_SCENE / SAMPLE_TOKEN / "labels.npz"
    with np.load(exported) as f:
        assert str(f["label_source"][0]) == "manual"
        np.testing.assert_array_equal(f["semantics"], labels["semantics"])
    assert stages["round_1/export"]["frames_pseudo"] == 0  # the report shows no kept share for it
    assert (run / "report" / "round_1" / "index.html").is_file()

    # `autolabel eval` against an Occ3D-nuScenes gts/ tree (gts/<scene_name>/<sample_token>/labels.npz)
    occ3d = tmp_path / "occ3d-nuscenes"
    gt = occ3d / "gts" / SAMPLE_SCENE / SAMPLE_TOKEN / "labels.npz"
    gt.parent.mkdir(parents=True)
    np.savez_compressed(gt, **labels)
    code, out = _run("eval", str(run / "labels.zarr"), "--round", "1", "--gts", str(occ3d))
    assert code == 0, capsys.readouterr().err
    scores = json.loads((run / "round_1" / "eval" / "pseudo_labels.json").read_text())
    assert scores["frames"] == 1 and scores["all"]["geometric_iou"] is not None and "mIoU" in out
    # and `autolabel export` of round 0 with other thresholds: the frame's manual label, ingested since (issue 21)
    code, out = _run(
        "export", str(run / "labels.zarr"), str(tmp_path / "labels_out"), "--round", "0", "--drop-quantile", "0.2"
    )
    assert code == 0, capsys.readouterr().err
    with np.load(tmp_path / "labels_out" / "gts" / SAMPLE_SCENE / SAMPLE_TOKEN / "labels.npz") as f:
        assert str(f["label_source"][0]) == "manual" and f["semantics"].shape == GRID.shape


def test_report_without_ground_truth_or_pseudo_labelled_exports(tmp_path):
    """Real data has no gts/: the budget curve has nothing to draw (it said so through a matplotlib warning
    about an empty legend), and a round whose every exported frame is a manual label has no kept share
    (the page showed 0.0 %)."""
    import warnings

    from autolabel.report.page import summary_table
    from autolabel.report.round_report import budget_figure

    history = [
        {"round": 0, "labelled": 0, "val_miou": None, "pseudo_miou": None},
        {"round": 1, "labelled": 1, "val_miou": None, "pseudo_miou": None},
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        budget_figure(history, tmp_path / "budget.png")
    assert (tmp_path / "budget.png").stat().st_size > 1000
    facts = summary_table(
        {"labelled": 1}, {"frames": 1, "frames_pseudo": 0, "kept_in_mask_camera": 0.0}, 0.3, 1, 0.5, None
    )
    assert "mask_camera (%)</td><td class='v'>-</td>" in facts
    facts = summary_table(
        {"labelled": 0}, {"frames": 2, "frames_pseudo": 2, "kept_in_mask_camera": 0.7}, 0.3, 0, 0.5, 1
    )
    assert "mask_camera (%)</td><td class='v'>70.0</td>" in facts


def test_a_delivery_ingested_by_hand_lets_the_run_go_on(tmp_path, sample_root, capsys):
    """The selection page offers `autolabel ingest RECIPE --round K DIR` for a delivery kept elsewhere; the
    run then went on waiting for deliver_to. Once every selected frame has a manual label, it continues."""
    import yaml
    from tiny_models import TINY_GRID, write_recipe

    from autolabel.errors import AwaitingAnnotations
    from autolabel.stages import ingest as _ingest
    from autolabel.recipe import load_recipe

    path = write_recipe(tmp_path, sample_root, rounds={"count": 2})
    r = yaml.safe_load(path.read_text())
    r["data"]["version"] = "v1.0-mini"
    path.write_text(yaml.safe_dump(r))
    recipe = load_recipe(path)
    select = recipe.round_dir(0) / "select"
    select.mkdir(parents=True)
    (select / "manifest.json").write_text(
        json.dumps({"round": 0, "selected": [{"token": SAMPLE_TOKEN, "scene": SAMPLE_SCENE}]})
    )
    with pytest.raises(AwaitingAnnotations, match=str(recipe.delivery_dir(0))):
        _ingest(recipe, 0)
    vendor = tmp_path / "vendor" / "gts" / SAMPLE_SCENE / SAMPLE_TOKEN / "labels.npz"
    vendor.parent.mkdir(parents=True)
    np.savez_compressed(vendor, **hand_made_labels(TINY_GRID))
    assert main(["ingest", str(path), "--round", "0", str(tmp_path / "vendor")]) == 0, capsys.readouterr().err
    assert _ingest(recipe, 0) == {"added": 0, "manual_total": 1, "ingested_by_hand": 1}
