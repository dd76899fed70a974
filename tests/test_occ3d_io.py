import zipfile

import numpy as np
import pytest

from autolabel.data.npz import save_npz
from autolabel.data.occ3d import Occ3DLabels, labels_path, read_labels, write_labels
from autolabel.errors import DataError
from kernels.grid import GridSpec

GRID = GridSpec(range_min=(-2, -2, -1), range_max=(2, 2, 0.6), voxel_size=0.4)


def _labels(rng):
    shape = GRID.shape
    return Occ3DLabels(
        semantics=rng.integers(0, 18, size=shape).astype(np.uint8),
        mask_lidar=rng.integers(0, 2, size=shape).astype(np.uint8),
        mask_camera=rng.integers(0, 2, size=shape).astype(np.uint8),
    )


def test_round_trip_and_layout(tmp_path):
    labels = _labels(np.random.default_rng(0))
    path = write_labels(labels_path(tmp_path, "scene-1", "tok"), labels, GRID)
    assert path == tmp_path / "gts" / "scene-1" / "tok" / "labels.npz"
    back = read_labels(path, GRID)
    for k in ("semantics", "mask_lidar", "mask_camera"):
        np.testing.assert_array_equal(getattr(back, k), getattr(labels, k))
    assert not list(path.parent.glob(".labels-*"))  # no temp file left behind


def test_default_grid_is_occ3d(tmp_path):
    shape = GridSpec().shape
    z = np.zeros(shape, np.uint8)
    path = write_labels(tmp_path / "labels.npz", Occ3DLabels(z + 17, z, z + 1))
    with np.load(path) as d:
        assert d["semantics"].shape == (200, 200, 16) and d["semantics"].dtype == np.uint8


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("mask_camera"), "missing key.*mask_camera"),
        (lambda d: d.update(semantics=d["semantics"][:-1]), "'semantics' has shape"),
        (lambda d: d.update(mask_lidar=d["mask_lidar"].astype(np.int32)), "'mask_lidar' has dtype int32"),
        (lambda d: d.update(semantics=np.full_like(d["semantics"], 40)), "ids \\[40\\]"),
        (lambda d: d.update(mask_camera=d["mask_camera"] * 3), "'mask_camera' must hold only 0 and 1"),
    ],
)
def test_bad_label_files_name_file_and_field(tmp_path, mutate, message):
    labels = _labels(np.random.default_rng(1))
    data = {k: getattr(labels, k) for k in ("semantics", "mask_lidar", "mask_camera")}
    mutate(data)
    path = tmp_path / "labels.npz"
    np.savez(path, **data)
    with pytest.raises(DataError, match=message) as info:
        read_labels(path, GRID)
    assert str(path) in str(info.value)


def test_not_a_zip(tmp_path):
    path = tmp_path / "labels.npz"
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable"):
        read_labels(path, GRID)
    with pytest.raises(DataError, match="not found"):
        read_labels(tmp_path / "nope.npz", GRID)


# ---- the .npz writer (ISA-L deflate, own zip container) ---------------------------------------------------
def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sem = np.full((200, 200, 16), 17, np.uint8)
    sem[:, :, :2] = 11
    sem[rng.random(sem.shape) < 0.05] = rng.integers(0, 17)
    return {
        "semantics": sem,
        "mask_camera": (rng.random(sem.shape) < 0.6).astype(np.uint8),
        "depth": rng.random((9, 16)).astype(np.float32),
        "label_source": np.array(["pseudo"]),
        "empty": np.zeros((0, 3), np.int64),
    }


@pytest.mark.parametrize("compress", [True, False])
def test_save_npz_reads_back_as_numpys_own(tmp_path, compress):
    """The reference is numpy's writer: np.load gives the same arrays (dtypes, shapes, values) from our file as
    from np.savez_compressed's, and zipfile's own check (every entry's CRC-32) passes."""
    arrays = _arrays()
    ours = save_npz(tmp_path / "ours.npz", arrays, compress=compress)
    np.savez_compressed(tmp_path / "numpy.npz", **arrays)
    with np.load(ours) as got, np.load(tmp_path / "numpy.npz") as want:
        assert sorted(got.files) == sorted(want.files)
        for key in want.files:
            assert got[key].dtype == want[key].dtype
            np.testing.assert_array_equal(got[key], want[key])
    with zipfile.ZipFile(ours) as zf:
        assert zf.testzip() is None
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED}
        assert [i.date_time for i in zf.infolist()] == [(1980, 1, 1, 0, 0, 0)] * len(arrays)


def test_save_npz_is_byte_reproducible_and_compresses_labels(tmp_path):
    a = save_npz(tmp_path / "a.npz", _arrays())
    b = save_npz(tmp_path / "b.npz", _arrays())
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != save_npz(tmp_path / "c.npz", _arrays(1)).read_bytes()
    raw = save_npz(tmp_path / "raw.npz", _arrays(), compress=False)
    assert a.stat().st_size < 0.3 * raw.stat().st_size  # deflated (a mask of white noise: about 8x)


def test_a_corrupt_npz_is_caught(tmp_path):
    """A flipped byte in a deflated entry fails its CRC (or the inflate): read_labels names the file."""
    z = np.zeros(GRID.shape, np.uint8)
    path = write_labels(tmp_path / "labels.npz", Occ3DLabels(z + 17, z, z + 1), GRID)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="labels.npz"):
        read_labels(path, GRID)
