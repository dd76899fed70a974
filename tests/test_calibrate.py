"""The LiDAR-calibrated occupancy threshold (autolabel.training.calibrate) and where it is used."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from autolabel.checkpoint import THRESHOLD_FILE, load_threshold, readout
from autolabel.dts.config import DTSConfig
from autolabel.training.calibrate import calibrate_threshold
from kernels.grid import GridSpec

GRID = GridSpec(range_min=(-6.4, -6.4, -1.0), range_max=(6.4, 6.4, 2.2), voxel_size=0.4)


class HalfTransparentWall(torch.nn.Module):
    """A trained network's stand-in: a wall at x = 4 m with occupancy 0.15 (what rendering leaves on
    grazing surfaces), faint fog of occupancy 0.01 elsewhere."""

    def __init__(self):
        super().__init__()
        self.cfg = SimpleNamespace(grid=GRID)

    def forward(self, images, intrinsics, cam2ego):
        x = torch.arange(GRID.shape[0]) * 0.4 - 6.4 + 0.2
        occ = torch.full(GRID.shape, 0.01)
        occ[(x - 4.0).abs() < 0.25] = 0.15
        density = -torch.log1p(-occ) / 0.4
        return SimpleNamespace(density=density[None], logits=torch.zeros(1, *GRID.shape, 17))


def _item():
    """One camera at the origin looking along +x; every pixel's LiDAR depth is the wall at 4 m, labelled
    manmade."""
    K = torch.tensor([[8.0, 0, 8], [0, 8.0, 8], [0, 0, 1]])
    cam2ego = torch.tensor([[0.0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
    return {
        "images": torch.zeros(1, 3, 16, 16),
        "intrinsics": K[None],
        "cam2ego": cam2ego[None],
        "depth": torch.full((1, 16, 16), 4.0),
        "semantics": torch.full((1, 16, 16), 15, dtype=torch.uint8),
    }


def test_threshold_separates_the_half_transparent_surface_from_fog():
    r = calibrate_threshold(HalfTransparentWall(), [_item(), _item()], torch.device("cpu"), frames=2)
    assert 0.01 < r["threshold"] <= 0.15
    assert r["lidar_iou"] > 0.3 > r["candidates"]["0.5"]  # the fixed 0.5 finds no occupied voxel at all
    assert r["candidates"]["0.5"] == 0


def test_readout_uses_the_saved_threshold_unless_turned_off(tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    assert load_threshold(ckpt, 0.5) == 0.5  # nothing saved: the configured threshold
    (tmp_path / THRESHOLD_FILE).write_text(json.dumps({"threshold": 0.07}))
    assert readout(DTSConfig(), ckpt).occupied_threshold == pytest.approx(0.07)
    assert readout(DTSConfig(calibrate_threshold=False), ckpt).occupied_threshold == 0.5


def test_training_saves_the_calibrated_threshold(trained):
    """`autolabel train` (the conftest run) leaves the calibration beside its checkpoint."""
    saved = json.loads((trained / "run" / "round_0" / "train" / THRESHOLD_FILE).read_text())
    assert set(saved) >= {"threshold", "lidar_iou", "candidates"} and 0 < saved["threshold"] < 1
