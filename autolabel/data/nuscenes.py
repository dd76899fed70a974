"""Frames from any dataset in nuScenes layout, through nuscenes-devkit.

``NuScenesFrames(dataroot, version)`` is a sequence of `Frame`s ordered by scene, then time.
Every file it reads is checked, and bad input raises `DataError` naming the sample token, the
file or the field, and what is wrong.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from kernels.grid import GridSpec

from ..errors import DataError
from .frame import CAMERA_NAMES, LIDAR_NAME, Camera, Frame, Lidar
from .geometry import transform_matrix
from .movers import MoverBoxes, mover_mask, moving_boxes
from .occ3d import labels_path, read_labels

LIDAR_POINT_DIMS = 5  # x, y, z, intensity, ring
NUSCENES_TABLES = ("scene", "sample", "sample_data", "calibrated_sensor", "ego_pose", "sensor", "log")


def check_version_folder(dataroot: str | os.PathLike, version: str) -> Path:
    """Raise DataError unless ``dataroot/version`` holds the nuScenes tables the devkit needs."""
    root = Path(dataroot)
    if not root.is_dir():
        raise DataError(f"dataset root {root} does not exist")
    folder = root / version
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "sample.json").exists())
        raise DataError(
            f"no version folder {folder}: pass --version with one of {found or 'the table folders under ' + str(root)}"
        )
    missing = [t for t in NUSCENES_TABLES if not (folder / f"{t}.json").is_file()]
    if missing:
        raise DataError(f"{folder}: missing nuScenes table(s) {', '.join(t + '.json' for t in missing)}")
    return folder


def load_lidar_file(path: str | os.PathLike, where: str) -> np.ndarray:
    """Read a nuScenes ``.pcd.bin`` (float32 x, y, z, intensity, ring) -> (N, 5) float32."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{where}: lidar file {path} not found")
    size = path.stat().st_size
    if size % (4 * LIDAR_POINT_DIMS):
        raise DataError(
            f"{where}: lidar file {path} has {size} bytes, not a multiple of {LIDAR_POINT_DIMS} float32 "
            f"({4 * LIDAR_POINT_DIMS} bytes per point): truncated or not a nuScenes .pcd.bin"
        )
    points = np.fromfile(path, dtype=np.float32).reshape(-1, LIDAR_POINT_DIMS)
    if not np.isfinite(points[:, :3]).all():
        raise DataError(f"{where}: lidar file {path} holds non-finite coordinates")
    return points


def load_image(path: str | os.PathLike, where: str) -> np.ndarray:
    """Read a camera image -> (H, W, 3) uint8 RGB; truncated or unreadable files raise DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{where}: image file {path} not found")
    try:
        with Image.open(path) as im:
            im.load()  # decodes fully: a truncated JPEG fails here, not later in training
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise DataError(f"{where}: image file {path} cannot be decoded ({exc})") from exc


def _finite_pose(record: dict, fields: Sequence[str], where: str) -> None:
    for key in fields:
        values = np.asarray(record.get(key, []), dtype=np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"{where}: field '{key}' holds non-finite values {record.get(key)}")


class NuScenesFrames(Sequence[Frame]):
    """Keyframes of a nuScenes-layout dataset as `Frame`s.

    Args:
        dataroot: folder holding ``<version>/`` tables, ``samples/``, ``sweeps/`` and optionally ``gts/``.
        version: table folder name (any: "v1.0-mini", "v1.0-trainval", a synthetic world's version).
        sweeps: number of earlier lidar sweeps to accumulate into each keyframe (ego-motion compensated).
        load_images: False skips decoding JPEGs (images are then empty; K and poses stay valid).
        load_gt: read ``gts/<scene>/<token>/labels.npz`` when present.
        grid: the GridSpec Occ3D labels must match.
        scenes: restrict to these scene names (None = all).
        exclude_scenes: leave these scene names out (e.g. the validation scenes of a training split).
    """

    def __init__(
        self,
        dataroot: str | os.PathLike,
        version: str = "v1.0-mini",
        *,
        sweeps: int = 0,
        load_images: bool = True,
        load_gt: bool = True,
        grid: GridSpec | None = None,
        scenes: Sequence[str] | None = None,
        exclude_scenes: Sequence[str] = (),
    ) -> None:
        if sweeps < 0:
            raise ValueError(f"sweeps must be >= 0, got {sweeps}")
        self.dataroot = Path(dataroot)
        self.version = version
        self.sweeps = sweeps
        self.load_images = load_images
        self.load_gt = load_gt
        self.grid = grid or GridSpec()
        check_version_folder(self.dataroot, version)
        from nuscenes.nuscenes import NuScenes  # heavy import, kept out of module import time

        try:
            self.nusc = NuScenes(version=version, dataroot=str(self.dataroot), verbose=False)
        except (KeyError, AssertionError, json.JSONDecodeError) as exc:
            raise DataError(f"{self.dataroot / version}: nuscenes-devkit cannot load the tables ({exc!r})") from exc
        wanted = set(scenes) if scenes is not None else None
        excluded = set(exclude_scenes)
        if unknown := excluded - {scene["name"] for scene in self.nusc.scene}:
            raise DataError(f"{self.dataroot / version}: unknown scene(s) {sorted(unknown)}")
        self._scene_of: dict[str, str] = {}
        tokens: list[str] = []
        for scene in sorted(self.nusc.scene, key=lambda s: s["name"]):
            if (wanted is not None and scene["name"] not in wanted) or scene["name"] in excluded:
                continue
            token = scene["first_sample_token"]
            while token:
                tokens.append(token)
                self._scene_of[token] = scene["name"]
                token = self.nusc.get("sample", token)["next"]
        if wanted is not None and (unknown := wanted - set(self._scene_of.values())):
            raise DataError(f"{self.dataroot / version}: unknown scene(s) {sorted(unknown)}")
        self.tokens: tuple[str, ...] = tuple(tokens)
        self._index = {t: i for i, t in enumerate(self.tokens)}

    # ---- Sequence protocol ----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> Frame:  # type: ignore[override]
        return self.frame(self.tokens[i])

    def __iter__(self) -> Iterator[Frame]:
        for token in self.tokens:
            yield self.frame(token)

    def index(self, token: str) -> int:  # type: ignore[override]
        try:
            return self._index[token]
        except KeyError:
            raise DataError(f"sample token {token!r} is not in {self.dataroot / self.version}") from None

    def __contains__(self, token: object) -> bool:
        """Whether this sample token is one of the frames (a lookup, not a scan loading every frame)."""
        return token in self._index

    def scene_of(self, token: str) -> str:
        self.index(token)
        return self._scene_of[token]

    @cached_property
    def scene_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self._scene_of[t] for t in self.tokens))

    def semantic_prior(self, token: str):
        """The map of `token`'s scene: nuscenes-devkit's MapMask of the log's semantic prior (maps/*.png:
        driveable area and walkways, in global x, y), which the devkit attaches to every map record."""
        scene = self.nusc.get("scene", self.nusc.get("sample", token)["scene_token"])
        log = self.nusc.get("log", scene["log_token"])
        if "map_token" not in log:
            raise DataError(f"{self.dataroot / self.version}: log {log['token']} of scene {scene['name']} has no map")
        return self.nusc.get("map", log["map_token"])["mask"]

    @property
    def has_boxes(self) -> bool:
        """Whether the split carries 3D box annotations (`sample_annotation`; none in nuScenes's test split): where it
        does not, a keyframe without boxes says nothing about where objects are."""
        return bool(self.nusc.sample_annotation)

    def moving_boxes(self, token: str) -> dict:
        """instance token -> nuscenes-devkit Box (global frame) of each annotated object of a moving category
        (vehicles, people, animals) at keyframe `token`; empty for a split without annotations."""
        return moving_boxes(self.nusc, self.nusc.get("sample", token))

    # ---- records -> frames ----------------------------------------------------------------
    def _poses(self, sd: dict, where: str) -> tuple[dict, np.ndarray, np.ndarray]:
        cs = self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        pose = self.nusc.get("ego_pose", sd["ego_pose_token"])
        _finite_pose(cs, ("translation", "rotation", "camera_intrinsic"), f"{where} calibrated_sensor {cs['token']}")
        _finite_pose(pose, ("translation", "rotation"), f"{where} ego_pose {pose['token']}")
        return (
            cs,
            transform_matrix(cs["translation"], cs["rotation"]),
            transform_matrix(pose["translation"], pose["rotation"]),
        )

    def _camera(self, sample: dict, name: str, files: bool = True) -> Camera:
        where = f"sample {sample['token']} {name}"
        if name not in sample["data"]:
            raise DataError(f"{where}: the sample has no {name} data; found {sorted(sample['data'])}")
        sd = self.nusc.get("sample_data", sample["data"][name])
        cs, cam2ego, ego2global = self._poses(sd, where)
        K = np.asarray(cs["camera_intrinsic"], dtype=np.float64)
        if K.shape != (3, 3):
            raise DataError(
                f"{where} calibrated_sensor {cs['token']}: field 'camera_intrinsic' must be 3x3, got {K.shape}"
            )
        path = self.dataroot / sd["filename"]
        size = (int(sd["height"]), int(sd["width"]))
        if self.load_images:
            image = load_image(path, where)
            if image.shape[:2] != size:
                raise DataError(
                    f"{where}: image {path} is {image.shape[1]}x{image.shape[0]}, the table says {size[1]}x{size[0]}"
                )
        else:
            if files and not path.is_file():
                raise DataError(f"{where}: image file {path} not found")
            image = np.zeros((0, 0, 3), dtype=np.uint8)
        return Camera(
            name=name,
            image=image,
            K=K,
            cam2ego=cam2ego,
            ego2global=ego2global,
            timestamp=int(sd["timestamp"]),
            token=sd["token"],
            image_size=size,
        )

    def _lidar(self, sample: dict, sweeps: int | None = None) -> Lidar:
        """The keyframe's LiDAR with `sweeps` earlier sweeps (None: the dataset's; -1: poses only, no file read).
        Sweep points inside the boxes of moving objects at the sweep's time are dropped (autolabel.data.movers)."""
        where = f"sample {sample['token']} {LIDAR_NAME}"
        if LIDAR_NAME not in sample["data"]:
            raise DataError(f"{where}: the sample has no {LIDAR_NAME} data")
        key_sd = self.nusc.get("sample_data", sample["data"][LIDAR_NAME])
        _, lidar2ego, ego2global = self._poses(key_sd, where)
        sweeps = self.sweeps if sweeps is None else sweeps
        if sweeps < 0:
            return Lidar(
                points=np.zeros((0, LIDAR_POINT_DIMS), np.float32),
                time_lag=np.zeros(0, np.float32),
                ego2global=ego2global,
                lidar2ego=lidar2ego,
                timestamp=int(key_sd["timestamp"]),
                token=key_sd["token"],
            )
        points = load_lidar_file(self.dataroot / key_sd["filename"], where)
        xyz = points[:, :3].astype(np.float64) @ lidar2ego[:3, :3].T + lidar2ego[:3, 3]
        clouds, lags = [np.concatenate([xyz, points[:, 3:]], axis=1)], [np.zeros(len(points))]
        global2key = np.linalg.inv(ego2global)
        movers = MoverBoxes(self.nusc, sample) if sweeps else None  # read once for all the sweeps
        sd = key_sd
        for _ in range(sweeps):
            if not sd["prev"]:
                break  # the first sweeps of a scene have fewer predecessors
            sd = self.nusc.get("sample_data", sd["prev"])
            sweep_where = f"{where} sweep {sd['token']}"
            _, s_lidar2ego, s_ego2global = self._poses(sd, sweep_where)
            sweep = load_lidar_file(self.dataroot / sd["filename"], sweep_where)
            to_global = s_ego2global @ s_lidar2ego
            g_xyz = sweep[:, :3].astype(np.float64) @ to_global[:3, :3].T + to_global[:3, 3]
            keep = ~mover_mask(g_xyz, movers.at(int(sd["timestamp"])))  # no ghosts of moving objects
            s_xyz = g_xyz[keep] @ global2key[:3, :3].T + global2key[:3, 3]
            clouds.append(np.concatenate([s_xyz, sweep[keep, 3:]], axis=1))
            lags.append(np.full(len(s_xyz), (key_sd["timestamp"] - sd["timestamp"]) * 1e-6))
        return Lidar(
            points=np.concatenate(clouds).astype(np.float32),
            time_lag=np.concatenate(lags).astype(np.float32),
            ego2global=ego2global,
            lidar2ego=lidar2ego,
            timestamp=int(key_sd["timestamp"]),
            token=key_sd["token"],
        )

    def frame(self, token: str, images: bool | None = None, lidar: str = "sweeps", check_files: bool = True) -> Frame:
        """Load the keyframe with this sample token (`images=False` skips decoding its JPEGs).

        lidar: "sweeps" (the keyframe sweep and `sweeps` earlier ones), "key" (the keyframe sweep alone), or
        "none" (poses only, no file read). check_files=False: with images=False, JPEGs that are not decoded
        need not exist (`meta`: what a reader needs whose pixels and depth come from the supervision cache).
        """
        if lidar not in ("sweeps", "key", "none"):
            raise ValueError(f"lidar must be 'sweeps', 'key' or 'none', got {lidar!r}")
        self.index(token)
        if images is not None and images != self.load_images:
            saved, self.load_images = self.load_images, images
            try:
                return self.frame(token, lidar=lidar, check_files=check_files)
            finally:
                self.load_images = saved
        sample = self.nusc.get("sample", token)
        scene = self._scene_of[token]
        gt = None
        if self.load_gt:
            path = labels_path(self.dataroot, scene, token)
            if path.exists():
                gt = read_labels(path, self.grid)
        return Frame(
            token=token,
            scene=scene,
            timestamp=int(sample["timestamp"]),
            cameras=tuple(self._camera(sample, name, files=check_files) for name in CAMERA_NAMES),
            lidar=self._lidar(sample, {"sweeps": None, "key": 0, "none": -1}[lidar]),
            gt=gt,
            prev=sample["prev"],
            next=sample["next"],
        )

    def meta(self, token: str) -> Frame:
        """The keyframe's poses, intrinsics, image sizes and labels, without reading any image or LiDAR file."""
        return self.frame(token, images=False, lidar="none", check_files=False)
