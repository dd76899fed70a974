import numpy as np
import pytest
import torch

from kernels.grid import GridSpec


def test_occ3d_default_shape():
    g = GridSpec()
    assert g.shape == (200, 200, 16)
    assert g.num_voxels == 200 * 200 * 16


def test_world_index_round_trip_numpy_and_torch():
    g = GridSpec(range_min=(-2, -3, -1), range_max=(2, 3, 1), voxel_size=(0.5, 0.25, 0.5))
    assert g.shape == (8, 24, 4)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in g.shape], indexing="ij"), -1).reshape(-1, 3)
    centres = g.index_to_world(idx)
    np.testing.assert_array_equal(g.world_to_index(centres), idx)
    t = torch.from_numpy(centres).float()
    assert torch.equal(g.world_to_index(t), torch.from_numpy(idx))
    # the lower corner is voxel 0, a point just below it is outside
    assert g.world_to_index(np.array([-2.0, -3.0, -1.0])).tolist() == [0, 0, 0]
    assert not g.contains_index(g.world_to_index(np.array([-2.01, 0.0, 0.0])))
    assert not g.contains_index(g.world_to_index(np.array([2.0, 0.0, 0.0])))


def test_known_point():
    g = GridSpec()
    assert g.world_to_index(np.array([0.0, 0.0, 0.0])).tolist() == [100, 100, 2]
    np.testing.assert_allclose(g.index_to_world(np.array([0, 0, 0])), [-39.8, -39.8, -0.8])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(voxel_size=0.0), "voxel_size"),
        (dict(range_min=(0, 0, 0), range_max=(0, 1, 1)), "range_max"),
        (dict(voxel_size=0.3), "whole number"),
        (dict(range_min=(0, 0)), "3 values"),
        (dict(range_max=(1, float("nan"), 1)), "finite"),
    ],
)
def test_invalid_grid_raises_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GridSpec(**kwargs)


def test_dict_round_trip():
    g = GridSpec(voxel_size=0.8)
    assert GridSpec.from_dict(g.to_dict()) == g
    with pytest.raises(ValueError, match="unknown keys"):
        GridSpec.from_dict({"voxel": 1})
