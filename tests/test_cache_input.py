"""Issue 23, fast input at scale: training items come from the supervision cache (network-size images,
depth, 2D labels), not from the full-resolution JPEGs and the LiDAR sweeps."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tiny_models import TINY_GRID, write_recipe

from autolabel.cli import main
from autolabel.data import nuscenes as nus
from autolabel.data.nuscenes import NuScenesFrames
from autolabel.supervision.cache import SupervisionCache
from autolabel.network_input import FrameDataset
from occnet.fractions import batch_fractions, to_fraction

HW = (64, 112)


@pytest.fixture(scope="module")
def supervised(tiny_world, tmp_path_factory) -> dict:
    """tiny_world supervised at HW (exact labels), the cache's path and the recipe."""
    folder = tmp_path_factory.mktemp("cache_input")
    recipe = write_recipe(
        folder, tiny_world, supervision={"provider": "precomputed", "precomputed": {"variant": "noisy"}}
    )
    assert main(["supervise", str(recipe)]) == 0
    return {"recipe": recipe, "cache": folder / "run" / "supervision.zarr", "folder": folder}


def _items(frames, cache, **kw):
    direct = FrameDataset(frames, HW, labels="noisy", **kw)
    cached = FrameDataset(frames, HW, labels="cache", cache=cache, **kw)
    return [(direct[i], cached[i]) for i in range(len(frames))]


def test_a_cached_item_equals_the_item_built_from_the_raw_files(supervised, tiny_world):
    """The cache stores the resized uint8 pixels losslessly (zstd), so the images are equal bit for bit:
    tolerance 0, measured. Confidence is stored as uint8 (1/255)."""
    frames = NuScenesFrames(tiny_world, "v1.0-synth", grid=TINY_GRID)
    cache = SupervisionCache.open(supervised["cache"])
    assert cache.has_images
    for direct, cached in _items(frames, cache, aux_frames=1):
        assert float((cached["images"] - direct["images"]).abs().max()) == 0.0
        for key in (
            "images",
            "depth",
            "semantics",
            "intrinsics",
            "cam2ego",
            "aux_depth",
            "aux_semantics",
            "aux_intrinsics",
            "aux_cam2ego",
            "aux_valid",
        ):
            torch.testing.assert_close(cached[key], direct[key], rtol=0, atol=0, msg=key)
        for key in ("confidence", "aux_confidence"):  # uint8 levels from the cache, decoded on the device
            assert cached[key].dtype == torch.uint8 and direct[key].dtype == torch.float32
            torch.testing.assert_close(to_fraction(cached[key]), direct[key], atol=1 / 255, rtol=0, msg=key)


def test_confidence_levels_decode_to_the_cache_readers_fractions_bit_for_bit(supervised, tiny_world):
    """Items carry the cache's uint8 confidence levels (a quarter of float32's bytes through pinned memory and
    onto the GPU); decoded by occnet.fractions they equal what the host decoding gave, for every level."""
    levels = torch.arange(256, dtype=torch.uint8)
    host = torch.from_numpy(np.arange(256, dtype=np.uint8).astype(np.float32) / 255)  # the loaders' former code
    assert torch.equal(to_fraction(levels), host)
    if torch.cuda.is_available():  # a CUDA division by 255 would multiply by its reciprocal: the table does not
        assert torch.equal(to_fraction(levels.cuda()).cpu(), host)
    frames = NuScenesFrames(tiny_world, "v1.0-synth", grid=TINY_GRID)
    cache = SupervisionCache.open(supervised["cache"])
    item = FrameDataset(frames, HW, labels="cache", cache=cache)[0]
    assert torch.equal(to_fraction(item["confidence"]), torch.from_numpy(cache.read(item["token"])[1]))
    batch = batch_fractions({"confidence": item["confidence"], "semantics": item["semantics"], "token": "t"})
    assert batch["confidence"].dtype == torch.float32 and batch["semantics"] is item["semantics"]
    assert batch_fractions(batch)["confidence"] is batch["confidence"]  # fractions are left as they are


def test_a_cached_item_reads_no_image_and_no_lidar_file(supervised, tiny_world, monkeypatch):
    frames = NuScenesFrames(tiny_world, "v1.0-synth", grid=TINY_GRID)
    cache = SupervisionCache.open(supervised["cache"])

    def no_read(path, where):
        raise AssertionError(f"read {path}")

    monkeypatch.setattr(nus, "load_image", no_read)
    monkeypatch.setattr(nus, "load_lidar_file", no_read)
    item = FrameDataset(frames, HW, labels="cache", cache=cache, aux_frames=1)[1]
    assert item["images"].shape == (6, 3, *HW)


def test_labelling_items_read_the_keyframe_sweep_alone(supervised, tiny_world, monkeypatch):
    """lidar=True (labelling) needs the keyframe sweep's own points: the earlier sweeps are not read."""
    frames = NuScenesFrames(tiny_world, "v1.0-synth", grid=TINY_GRID, sweeps=3)
    cache = SupervisionCache.open(supervised["cache"])
    reads = []
    real = nus.load_lidar_file
    monkeypatch.setattr(nus, "load_lidar_file", lambda path, where: reads.append(path) or real(path, where))
    item = FrameDataset(frames, HW, labels="cache", cache=cache, lidar=True)[1]
    assert len(reads) == 1
    full = frames.frame(frames.tokens[1])
    own = full.lidar.points[full.lidar.time_lag == 0, :3]
    np.testing.assert_array_equal(item["lidar_points"].numpy(), own)


def test_a_cache_made_before_images_were_cached_falls_back_to_the_jpegs(supervised, tiny_world, tmp_path, monkeypatch):
    """Old caches keep working for training (decoding the JPEGs); supervise into one is one clear error."""
    old = tmp_path / "old.zarr"
    shutil.copytree(supervised["cache"], old)
    shutil.rmtree(old / "supervision" / "images")
    cache = SupervisionCache.open(old)
    assert not cache.has_images
    frames = NuScenesFrames(tiny_world, "v1.0-synth", grid=TINY_GRID)
    new = SupervisionCache.open(supervised["cache"])
    a = FrameDataset(frames, HW, labels="cache", cache=cache)[0]
    b = FrameDataset(frames, HW, labels="cache", cache=new)[0]
    for key in ("images", "depth", "semantics", "confidence"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert main(["supervise", str(supervised["recipe"]), "--set", f"supervision.cache={old}"]) == 2


def test_training_runs_with_the_raw_jpegs_and_lidar_removed_after_supervise(supervised, tiny_world, tmp_path):
    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    folder = tmp_path / "t"
    recipe = write_recipe(
        folder,
        world,
        supervision={"provider": "precomputed", "precomputed": {"variant": "noisy"}},
        train={"steps": 2, "warmup_steps": 1, "checkpoint_every": 2},
    )
    (folder / "run").mkdir(parents=True)
    shutil.copytree(supervised["cache"], folder / "run" / "supervision.zarr")
    removed = [p for p in (world / "samples").rglob("*") if p.suffix in (".jpg", ".bin")]
    assert removed and any(p.suffix == ".jpg" for p in removed)
    for p in removed:
        p.unlink()
    assert main(["train", str(recipe), "--round", "0"]) == 0
    assert (folder / "run" / "round_0" / "train").is_dir()
