import json
import re
import shutil

import numpy as np
import pytest

from autolabel.data.frame import CAMERA_NAMES
from autolabel.data.geometry import matrix_to_quaternion, quaternion_to_matrix, transform_matrix
from autolabel.data.nuscenes import NuScenesFrames
from autolabel.data.occ3d import labels_path
from autolabel.errors import DataError

from conftest import SAMPLE_TOKEN


def test_real_sample_frame(sample_frame, sample_root):
    f = sample_frame
    assert f.token == SAMPLE_TOKEN and f.scene == "scene-0061" and f.gt is None
    assert [c.name for c in f.cameras] == list(CAMERA_NAMES)
    for cam in f.cameras:
        assert cam.image.shape == (900, 1600, 3) and cam.image.dtype == np.uint8
        assert cam.image_size == (900, 1600)
        assert cam.K.shape == (3, 3) and cam.K[2, 2] == 1 and 800 < cam.K[0, 0] < 1700
        np.testing.assert_allclose(cam.cam2ego[:3, :3] @ cam.cam2ego[:3, :3].T, np.eye(3), atol=1e-12)
        # camera z (optical axis) is horizontal in the ego frame, cameras sit 1.5-2 m up
        assert abs(cam.cam2ego[2, 2]) < 0.05 and 1.4 < cam.cam2ego[2, 3] < 2.0
    front = f.camera("CAM_FRONT")
    assert front.cam2ego[0, 2] > 0.99  # looks forward (+x)
    assert f.camera("CAM_BACK").cam2ego[0, 2] < -0.99
    assert f.lidar.points.shape == (34688, 5) and f.lidar.points.dtype == np.float32
    assert np.all(f.lidar.time_lag == 0)
    # raw sensor points moved into the ego frame by the lidar mount (z up by ~1.84 m)
    raw = np.fromfile(next((sample_root / "samples" / "LIDAR_TOP").iterdir()), np.float32).reshape(-1, 5)
    np.testing.assert_allclose(
        f.lidar.points[:, :3], raw[:, :3] @ f.lidar.lidar2ego[:3, :3].T + f.lidar.lidar2ego[:3, 3], atol=1e-4
    )
    np.testing.assert_array_equal(f.lidar.points[:, 3:], raw[:, 3:])


def test_quaternions_match_pyquaternion():
    from pyquaternion import Quaternion

    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        np.testing.assert_allclose(quaternion_to_matrix(q), Quaternion(q).rotation_matrix, atol=1e-12)
        back = matrix_to_quaternion(quaternion_to_matrix(q))
        np.testing.assert_allclose(back, q if q[0] >= 0 else -q, atol=1e-10)


def test_sweeps_are_motion_compensated(sample_copy):
    """A sweep recorded 2 m further along (global x) is the same static world seen from elsewhere."""
    v = sample_copy / "v1.0-mini"
    sd = json.loads((v / "sample_data.json").read_text())
    poses = json.loads((v / "ego_pose.json").read_text())
    key = next(r for r in sd if "LIDAR_TOP" in r["filename"])
    key_pose = next(p for p in poses if p["token"] == key["ego_pose_token"])
    sweep_file = "sweeps/LIDAR_TOP/sweep0.pcd.bin"
    (sample_copy / "sweeps" / "LIDAR_TOP").mkdir(parents=True)
    shutil.copy(sample_copy / key["filename"], sample_copy / sweep_file)
    offset = np.array([2.0, -1.0, 0.0])
    poses.append(
        dict(
            key_pose,
            token="sweeppose",
            timestamp=key["timestamp"] - 50000,
            translation=(np.array(key_pose["translation"]) + offset).tolist(),
        )
    )
    sd.append(
        dict(
            key,
            token="sweep0",
            ego_pose_token="sweeppose",
            timestamp=key["timestamp"] - 50000,
            is_key_frame=False,
            filename=sweep_file,
            sample_token=key["sample_token"],
            prev="",
            next=key["token"],
        )
    )
    key["prev"] = "sweep0"
    (v / "sample_data.json").write_text(json.dumps(sd))
    (v / "ego_pose.json").write_text(json.dumps(poses))

    one = NuScenesFrames(sample_copy, load_images=False)[0].lidar
    two = NuScenesFrames(sample_copy, load_images=False, sweeps=3)[0].lidar  # asks for 3, only 1 exists
    n = len(one.points)
    assert len(two.points) == 2 * n
    np.testing.assert_array_equal(two.points[:n], one.points)
    R_key = transform_matrix(key_pose["translation"], key_pose["rotation"])[:3, :3]
    np.testing.assert_allclose(two.points[n:, :3], one.points[:, :3] + R_key.T @ offset, atol=2e-4)
    np.testing.assert_allclose(two.time_lag[n:], 0.05)


def test_ground_truth_is_loaded_when_present(sample_copy):
    from autolabel.data.occ3d import Occ3DLabels, write_labels
    from kernels.grid import GridSpec

    z = np.zeros(GridSpec().shape, np.uint8)
    write_labels(labels_path(sample_copy, "scene-0061", SAMPLE_TOKEN), Occ3DLabels(z + 17, z, z + 1))
    f = NuScenesFrames(sample_copy, load_images=False)[0]
    assert f.gt is not None and f.gt.semantics.shape == (200, 200, 16)


# ---- bad input: one error type, naming the token / file / field -------------------------------
def test_missing_version_folder(sample_root):
    with pytest.raises(DataError, match="no version folder.*v1.0-trainval.*v1.0-mini"):
        NuScenesFrames(sample_root, "v1.0-trainval")


def test_missing_table(sample_copy):
    (sample_copy / "v1.0-mini" / "ego_pose.json").unlink()
    with pytest.raises(DataError, match="ego_pose.json"):
        NuScenesFrames(sample_copy)


def test_unknown_token(sample_root):
    with pytest.raises(DataError, match="sample token 'nope' is not in"):
        NuScenesFrames(sample_root, load_images=False).frame("nope")


def test_missing_image(sample_copy):
    jpg = next((sample_copy / "samples" / "CAM_FRONT").iterdir())
    jpg.unlink()
    with pytest.raises(
        DataError, match=f"sample {SAMPLE_TOKEN} CAM_FRONT: image file .*{re.escape(jpg.name)} not found"
    ):
        NuScenesFrames(sample_copy)[0]


def test_truncated_jpeg(sample_copy):
    jpg = next((sample_copy / "samples" / "CAM_BACK").iterdir())
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    with pytest.raises(DataError, match=f"CAM_BACK: image file .*{re.escape(jpg.name)} cannot be decoded"):
        NuScenesFrames(sample_copy)[0]


def test_missing_lidar(sample_copy):
    next((sample_copy / "samples" / "LIDAR_TOP").iterdir()).unlink()
    with pytest.raises(DataError, match=f"sample {SAMPLE_TOKEN} LIDAR_TOP: lidar file .* not found"):
        NuScenesFrames(sample_copy, load_images=False)[0]


def test_lidar_size_not_multiple_of_five_floats(sample_copy):
    pcd = next((sample_copy / "samples" / "LIDAR_TOP").iterdir())
    with open(pcd, "ab") as fh:
        fh.write(b"\0" * 8)
    with pytest.raises(DataError, match="LIDAR_TOP: lidar file .* not a multiple of 5 float32"):
        NuScenesFrames(sample_copy, load_images=False)[0]


def test_non_finite_calibration(sample_copy):
    path = sample_copy / "v1.0-mini" / "calibrated_sensor.json"
    records = json.loads(path.read_text())
    sd = json.loads((sample_copy / "v1.0-mini" / "sample_data.json").read_text())
    cam_front = next(r for r in sd if "CAM_FRONT/" in r["filename"])
    rec = next(r for r in records if r["token"] == cam_front["calibrated_sensor_token"])
    rec["camera_intrinsic"][0][0] = float("nan")
    path.write_text(json.dumps(records))  # json writes NaN, the devkit reads it back
    with pytest.raises(
        DataError, match=f"CAM_FRONT calibrated_sensor {rec['token']}: field 'camera_intrinsic' holds non-finite"
    ):
        NuScenesFrames(sample_copy, load_images=False)[0]


def test_bad_ground_truth_file(sample_copy):
    path = labels_path(sample_copy, "scene-0061", SAMPLE_TOKEN)
    path.parent.mkdir(parents=True)
    np.savez(path, semantics=np.zeros((200, 200, 16), np.uint8), mask_lidar=np.zeros((200, 200, 16), np.uint8))
    with pytest.raises(DataError, match="missing key.*mask_camera"):
        NuScenesFrames(sample_copy, load_images=False)[0]


def test_rig_matches_devkit_frame(sample_root, sample_frame):
    from autolabel.data.rig import load_rig

    rig = load_rig(sample_root)
    for rc, cam in zip(rig.cameras, sample_frame.cameras):
        assert rc.name == cam.name and rc.image_size == cam.image_size
        np.testing.assert_array_equal(rc.K, cam.K)
        np.testing.assert_array_equal(rc.cam2ego, cam.cam2ego)
    np.testing.assert_array_equal(rig.lidar2ego, sample_frame.lidar.lidar2ego)
