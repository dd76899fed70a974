"""Writes a synthetic world as a nuScenes-layout dataset (tables, images, lidar), Occ3D ground truth
and per-camera 2D label maps. Layout and conventions: docs/SYNTHETIC.md.

Everything is a pure function of (seed, sizes): the same arguments give byte-identical files.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import maximum_filter1d
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from kernels.grid import GridSpec
from occnet.atomic import atomic_write
from occnet.classes import FREE_ID, MAP_PRIOR_CLASS_IDS
from occnet.visibility import camera_rays

from ..data.frame import CAMERA_NAMES, LIDAR_NAME
from ..data.geometry import matrix_to_quaternion
from ..data.npz import save_npz
from ..annotation.lidarseg import lidarseg_categories, occ3d_to_lidarseg
from ..data.occ3d import Occ3DLabels, labels_path, write_labels
from ..errors import DataError
from ..supervision.precomputed import LABELS_2D_DIR
from .noise import PROFILES, NoiseRates, NoisyMaps, hard_level, make_noisy_labels, noisy_labels_v1
from .sensors import render_camera, render_lidar, synth_rig
from .truth import visible_voxels, voxelize
from .world import CATEGORY, CELL, generate_world

KEYFRAME_DT = 0.5  # 2 Hz keyframes
SWEEP_DT = 0.05  # 20 Hz lidar
T0_US = 1_600_000_000_000_000
VISIBILITY = [("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100")]


def noisy_entries(prefix: str, maps: NoisyMaps) -> dict[str, np.ndarray]:
    """The .npz entries of one noisy variant: PREFIX_semantics, PREFIX_confidence and, where the model has them,
    PREFIX_runner_ups and PREFIX_runner_up_confidence (docs/SYNTHETIC.md)."""
    out = {f"{prefix}_semantics": maps.semantics, f"{prefix}_confidence": maps.confidence}
    if maps.runner_ups is not None:
        out[f"{prefix}_runner_ups"] = maps.runner_ups
        out[f"{prefix}_runner_up_confidence"] = maps.runner_up_confidence
    return out


@dataclass(frozen=True)
class SynthConfig:
    scenes: int = 2
    frames_per_scene: int = 4
    seed: int = 0
    image_size: tuple[int, int] = (450, 800)  # (H, W)
    sweeps: int = 0
    label_noise: float = 0.3  # level of the noisy 2D labels; the hard ones are at 1.6x (synth/noise.py)
    version: str = "v1.0-synth"
    noise_profile: str = "v2"  # noise model of the 2D labels: v2 (default) or v1 (the first release's)
    # noise model v2's rates (docs/SYNTHETIC.md); other values make worlds for diagnostics, e.g.
    # benchmarks/noise_components.py's worlds that each leave one part of the noise out
    noise_rates: NoiseRates = field(default_factory=NoiseRates)

    def __post_init__(self) -> None:
        if self.scenes < 1 or self.frames_per_scene < 1:
            raise ValueError(f"scenes and frames_per_scene must be >= 1, got {self.scenes}, {self.frames_per_scene}")
        if min(self.image_size) < 16:
            raise ValueError(f"image_size must be at least 16x16, got {self.image_size}")
        if not 0 <= self.sweeps <= 9:
            raise ValueError(f"sweeps must lie in 0..9 (10 sweeps per keyframe interval), got {self.sweeps}")
        if not 0 <= self.label_noise <= 1:
            raise ValueError(f"label_noise must lie in [0, 1], got {self.label_noise}")
        if self.noise_profile not in PROFILES:
            raise ValueError(f"noise_profile must be one of {', '.join(PROFILES)}, got {self.noise_profile!r}")


def token(*parts) -> str:
    """A deterministic nuScenes-style 32-hex token."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


LIDARSEG_INDEX = occ3d_to_lidarseg(lidarseg_categories(token))  # Occ3D id -> lidarseg category index


def _pose_record(tok: str, T: np.ndarray, ts: int) -> dict:
    return {
        "token": tok,
        "timestamp": ts,
        "rotation": matrix_to_quaternion(T[:3, :3]).tolist(),
        "translation": T[:3, 3].tolist(),
    }


def _jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


class _Tables:
    def __init__(self) -> None:
        self.t: dict[str, list[dict]] = {
            k: []
            for k in (
                "attribute",
                "calibrated_sensor",
                "category",
                "ego_pose",
                "instance",
                "lidarseg",
                "log",
                "map",
                "sample",
                "sample_annotation",
                "sample_data",
                "scene",
                "sensor",
                "visibility",
            )
        }

    def add(self, table: str, record: dict) -> dict:
        self.t[table].append(record)
        return record

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, records in self.t.items():
            _write_bytes(folder / f"{name}.json", json.dumps(records, indent=1).encode())


def _link(records: list[dict]) -> None:
    for a, b in zip(records, records[1:]):
        a["next"], b["prev"] = b["token"], a["token"]


MAP_RESOLUTION = 0.1  # m per pixel of a map png: nuScenes's, which nuscenes-devkit's MapMask assumes
# nuScenes's semantic prior (maps/*.png) is driveable area and pedestrian walkways together, "somewhat dilated"
# (the devkit's authors; by how much is not published): the synthetic one is dilated by this much
MAP_DILATION = 1.0  # m


def semantic_prior(ground: np.ndarray, cell: float) -> np.ndarray:
    """A scene's map png as nuScenes's: (H, W) uint8, 255 on driveable surface and sidewalk dilated by
    MAP_DILATION, 0 elsewhere, MAP_RESOLUTION m per pixel, row 0 the largest y (the devkit's MapMask: pixel
    (x / res, H - y / res)). ground (n, n) is the world's class raster, [x, y] cells of `cell` m from (0, 0)."""
    up = round(cell / MAP_RESOLUTION)
    prior = np.isin(ground, MAP_PRIOR_CLASS_IDS)
    prior = prior.repeat(up, 0).repeat(up, 1)
    # pixels whose centres lie within MAP_DILATION of a prior pixel's: pixel centres lie sqrt(d2) pixels apart, d2
    # an integer, so this is the disc of the largest d2 within it. The same pixels as thresholding the Euclidean
    # distance transform of the whole map (how the maps were first made), 4x faster.
    r2 = max(
        d2
        for d2 in range(math.ceil(MAP_DILATION / MAP_RESOLUTION + 1) ** 2)
        if np.sqrt(d2) * MAP_RESOLUTION <= MAP_DILATION
    )
    return (disc_dilation(prior, r2).T[::-1] * 255).astype(np.uint8)


def disc_dilation(mask: np.ndarray, r2: int) -> np.ndarray:
    """mask (H, W) bool dilated by the disc {(dy, dx): dy^2 + dx^2 <= r2}: the OR over row offsets dy of the rows
    dilated along the row by the disc's half-width at dy (a running maximum), shifted by dy."""
    h = mask.shape[0]
    out = np.zeros_like(mask)
    along: dict[int, np.ndarray] = {}
    r = math.isqrt(r2)
    for dy in range(-r, r + 1):
        w = math.isqrt(r2 - dy * dy)
        if w not in along:
            along[w] = maximum_filter1d(mask.view(np.uint8), 2 * w + 1, axis=1, mode="constant").view(bool)
        rows = along[w]
        if dy >= 0:
            out[: h - dy] |= rows[dy:]
        else:
            out[-dy:] |= rows[: h + dy]
    return out


def _one_thread() -> None:
    """A scene worker's initializer. One scene per process: threads inside a process would oversubscribe the
    cores, torch's and also NumPy's BLAS, which the rays' (pixels x 3) @ (3 x 3) products run on (one thread
    per core of the machine by default, whatever the pool's size)."""
    torch.set_num_threads(1)
    threadpool_limits(1)


def _write_scene_job(job: tuple) -> "_Tables":
    return _write_scene(*job)


def _write_scene(out: Path, cfg: SynthConfig, grid: GridSpec, si: int, sensor_tok: dict[str, str]) -> "_Tables":
    """Write one scene's files; returns its table records (to be merged in scene order)."""
    tables = _Tables()
    seed = cfg.seed
    cams, lidar2ego = synth_rig(cfg.image_size)
    category_tok = {cls: token("category", name) for cls, name in CATEGORY.items()}
    scene_name = f"synth-{seed}-{si:04d}"
    world = generate_world(seed * 1000 + si, route_length=8.0 * KEYFRAME_DT * cfg.frames_per_scene + 5)
    rng = np.random.default_rng([seed, si, 1])
    log_tok = token(seed, scene_name, "log")
    tables.add(
        "log",
        {
            "token": log_tok,
            "logfile": scene_name,
            "vehicle": "synthetic",
            "date_captured": "2026-11-25",
            "location": f"synthetic-{seed}",
        },
    )
    map_tok = token(seed, scene_name, "map")
    buf = io.BytesIO()
    Image.fromarray(semantic_prior(world.ground, CELL)).save(buf, format="PNG")
    _write_bytes(out / "maps" / f"{map_tok}.png", buf.getvalue())
    tables.add(
        "map",
        {"token": map_tok, "log_tokens": [log_tok], "category": "semantic_prior", "filename": f"maps/{map_tok}.png"},
    )
    calib = {}
    for cam in cams:
        calib[cam.name] = tables.add(
            "calibrated_sensor",
            {
                "token": token(seed, scene_name, "calib", cam.name),
                "sensor_token": sensor_tok[cam.name],
                "translation": cam.cam2ego[:3, 3].tolist(),
                "rotation": matrix_to_quaternion(cam.cam2ego[:3, :3]).tolist(),
                "camera_intrinsic": cam.K.tolist(),
            },
        )["token"]
    calib[LIDAR_NAME] = tables.add(
        "calibrated_sensor",
        {
            "token": token(seed, scene_name, "calib", LIDAR_NAME),
            "sensor_token": sensor_tok[LIDAR_NAME],
            "translation": lidar2ego[:3, 3].tolist(),
            "rotation": matrix_to_quaternion(lidar2ego[:3, :3]).tolist(),
            "camera_intrinsic": [],
        },
    )["token"]
    samples, by_channel, ann_by_instance = [], {n: [] for n in (*CAMERA_NAMES, LIDAR_NAME)}, {}
    for k in range(cfg.frames_per_scene):
        t_key = k * KEYFRAME_DT
        ts_key = T0_US + si * 10**9 + int(round(t_key * 1e6))
        sample_tok = token(seed, scene_name, "sample", k)
        samples.append(
            tables.add(
                "sample",
                {
                    "token": sample_tok,
                    "timestamp": ts_key,
                    "scene_token": token(seed, scene_name),
                    "prev": "",
                    "next": "",
                },
            )
        )
        # lidar sweeps before the keyframe, then the keyframe sweep
        for j in range(cfg.sweeps, -1, -1):
            t = t_key - j * SWEEP_DT
            ts = ts_key - int(round(j * SWEEP_DT * 1e6))
            ego2world = world.ego_pose(t)
            points, hits, d_sensor, point_cls = render_lidar(world, lidar2ego, ego2world, t, rng)
            sub = "samples" if j == 0 else "sweeps"
            fname = f"{sub}/{LIDAR_NAME}/{scene_name}__{LIDAR_NAME}__{ts}.pcd.bin"
            _write_bytes(out / fname, points.astype(np.float32).tobytes())
            sd_tok = token(seed, scene_name, LIDAR_NAME, ts)
            if j == 0:  # nuScenes-lidarseg point labels of the keyframe sweep: the exact class of every return
                seg = f"lidarseg/{cfg.version}/{sd_tok}_lidarseg.bin"
                _write_bytes(out / seg, LIDARSEG_INDEX[point_cls].tobytes())
                tables.add("lidarseg", {"token": sd_tok, "sample_data_token": sd_tok, "filename": seg})
            tables.add("ego_pose", _pose_record(sd_tok, ego2world, ts))
            by_channel[LIDAR_NAME].append(
                tables.add(
                    "sample_data",
                    {
                        "token": sd_tok,
                        "sample_token": sample_tok,
                        "ego_pose_token": sd_tok,
                        "calibrated_sensor_token": calib[LIDAR_NAME],
                        "timestamp": ts,
                        "fileformat": "pcd",
                        "is_key_frame": j == 0,
                        "height": 0,
                        "width": 0,
                        "filename": fname,
                        "prev": "",
                        "next": "",
                    },
                )
            )
        key_pose = world.ego_pose(t_key)
        key_hits, key_dirs = hits, d_sensor
        # cameras at their own timestamps
        renders = []
        for ci, cam in enumerate(cams):
            t = t_key + cam.time_offset
            ts = ts_key + int(round(cam.time_offset * 1e6))
            ego2world = world.ego_pose(t)
            r = render_camera(world, cam, ego2world, t, rng)
            renders.append((cam, r, ego2world))
            fname = f"samples/{cam.name}/{scene_name}__{cam.name}__{ts}.jpg"
            _write_bytes(out / fname, _jpeg(r.image))
            sd_tok = token(seed, scene_name, cam.name, ts)
            tables.add("ego_pose", _pose_record(sd_tok, ego2world, ts))
            by_channel[cam.name].append(
                tables.add(
                    "sample_data",
                    {
                        "token": sd_tok,
                        "sample_token": sample_tok,
                        "ego_pose_token": sd_tok,
                        "calibrated_sensor_token": calib[cam.name],
                        "timestamp": ts,
                        "fileformat": "jpg",
                        "is_key_frame": True,
                        "height": cfg.image_size[0],
                        "width": cfg.image_size[1],
                        "filename": fname,
                        "prev": "",
                        "next": "",
                    },
                )
            )
            maps = (r.semantics, r.instance, r.depth, r.world_xy)
            # v1 draws from the sensors' generator, as in the first release; it runs in every profile so
            # that the images and lidar are the same whatever the profile (and as before v2 existed)
            v1, v1_conf = noisy_labels_v1(*maps, cfg.label_noise, rng)
            noisy = NoisyMaps(v1, v1_conf)
            if cfg.noise_profile != "v1":  # other profiles have their own generator per camera
                noisy = make_noisy_labels(
                    cfg.noise_profile,
                    *maps,
                    cfg.label_noise,
                    np.random.default_rng([seed, si, 2, k, ci]),
                    cfg.noise_rates,
                )
            hard = make_noisy_labels(
                cfg.noise_profile,
                *maps,
                hard_level(cfg.label_noise),
                np.random.default_rng([seed, si, 3, k, ci]),
                cfg.noise_rates,
            )
            # the v1 maps are kept beside the profile's (precomputed variant "v1"): v1 against v2 on one world
            save_npz(
                out / LABELS_2D_DIR / scene_name / sample_tok / f"{cam.name}.npz",
                {
                    "semantics": r.semantics,
                    "depth": r.depth,
                    "instance": r.instance,
                    **noisy_entries("noisy", noisy),
                    **noisy_entries("hard", hard),
                    "v1_semantics": v1,
                    "v1_confidence": v1_conf,
                },
            )
        # Occ3D ground truth in the keyframe lidar's ego frame
        prims = world.primitives_at(t_key)
        semantics = voxelize(world, prims, key_pose, grid)
        occupied = semantics != FREE_ID
        mask_lidar = visible_voxels(occupied, lidar2ego[:3, 3], key_dirs @ lidar2ego[:3, :3].T, grid)
        mask_camera = np.zeros_like(mask_lidar)
        world2key = np.linalg.inv(key_pose)
        for cam, _, ego2world in renders:
            o, d = camera_rays(
                torch.from_numpy(cam.K), torch.from_numpy(world2key @ ego2world @ cam.cam2ego), cam.image_size
            )
            mask_camera |= visible_voxels(occupied, o.numpy(), d.numpy(), grid)
        write_labels(
            labels_path(out, scene_name, sample_tok),
            Occ3DLabels(semantics, mask_lidar.astype(np.uint8), mask_camera.astype(np.uint8)),
            grid,
        )
        # box annotations of the objects near the ego
        for ob in world.objects:
            c = ob.center_at(t_key)
            if np.linalg.norm(c[:2] - key_pose[:2, 3]) > 60:
                continue
            ann_tok = token(seed, scene_name, "ann", ob.instance, k)
            yaw_T = np.eye(4)
            yaw_T[:2, :2] = [[np.cos(ob.yaw), -np.sin(ob.yaw)], [np.sin(ob.yaw), np.cos(ob.yaw)]]
            ann = tables.add(
                "sample_annotation",
                {
                    "token": ann_tok,
                    "sample_token": sample_tok,
                    "instance_token": token(seed, scene_name, "inst", ob.instance),
                    "visibility_token": "4",
                    "attribute_tokens": [],
                    "translation": c.tolist(),
                    "size": [ob.size[1], ob.size[0], ob.size[2]],
                    "rotation": matrix_to_quaternion(yaw_T[:3, :3]).tolist(),
                    "prev": "",
                    "next": "",
                    "num_lidar_pts": int((key_hits.instance == ob.instance).sum()),
                    "num_radar_pts": 0,
                },
            )
            ann_by_instance.setdefault(ob.instance, (ob, []))[1].append(ann)
    _link(samples)
    for records in by_channel.values():
        _link(records)
    for inst, (ob, anns) in sorted(ann_by_instance.items()):
        _link(anns)
        tables.add(
            "instance",
            {
                "token": token(seed, scene_name, "inst", inst),
                "category_token": category_tok[ob.cls],
                "nbr_annotations": len(anns),
                "first_annotation_token": anns[0]["token"],
                "last_annotation_token": anns[-1]["token"],
            },
        )
    tables.add(
        "scene",
        {
            "token": token(seed, scene_name),
            "log_token": log_tok,
            "nbr_samples": len(samples),
            "first_sample_token": samples[0]["token"],
            "last_sample_token": samples[-1]["token"],
            "name": scene_name,
            "description": f"synthetic scene {si} of seed {seed}",
        },
    )
    return tables


def write_dataset(
    out: str | os.PathLike, cfg: SynthConfig, grid: GridSpec | None = None, progress: bool = True, workers: int = 1
) -> dict:
    """Generate and write the dataset; returns a summary (counts, timings).

    workers > 1 generates scenes in that many processes (scenes are independent: each has its own seeds);
    the tables are merged in scene order, so the files are byte-identical to a one-process run.
    """
    out = Path(out)
    grid = grid or GridSpec()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        # rewriting the tables over another world would leave that world's files beside the new ones
        raise DataError(f"{out} already exists and is not an empty folder; choose a new folder or delete it first")
    tables = _Tables()
    seed = cfg.seed
    sensor_tok = {}
    for name in (*CAMERA_NAMES, LIDAR_NAME):
        sensor_tok[name] = tables.add(
            "sensor",
            {
                "token": token(seed, "sensor", name),
                "channel": name,
                "modality": "lidar" if name == LIDAR_NAME else "camera",
            },
        )["token"]
    for cat in lidarseg_categories(token):  # nuScenes-lidarseg's category table, with its indices
        tables.add("category", cat)
    for tok, level in VISIBILITY:
        tables.add("visibility", {"token": tok, "level": level, "description": f"visibility {level}"})
    jobs = [(out, cfg, grid, si, sensor_tok) for si in range(cfg.scenes)]
    bar = tqdm(total=cfg.scenes * cfg.frames_per_scene, desc="synth", unit="frame", disable=not progress)
    with contextlib.ExitStack() as stack:
        if workers == 1:
            parts = map(_write_scene_job, jobs)
        else:
            # spawn, not fork: the parent may hold torch / zarr thread pools that fork would copy half-initialised
            ctx = multiprocessing.get_context("spawn")
            parts = stack.enter_context(ctx.Pool(min(workers, cfg.scenes), initializer=_one_thread)).imap(
                _write_scene_job, jobs
            )
        for part in parts:
            for name, records in part.t.items():
                tables.t[name].extend(records)
            bar.update(cfg.frames_per_scene)
    bar.close()
    tables.write(out / cfg.version)
    return {"scenes": cfg.scenes, "frames": cfg.scenes * cfg.frames_per_scene, "version": cfg.version, "root": str(out)}
