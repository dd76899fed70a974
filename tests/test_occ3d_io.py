import numpy as np
import pytest

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
