"""Deliveries of point labels and boxes: where they lie, their validation, the manual-group arrays they
become, and the simulated annotator that writes them on a synthetic world.

A frame's delivery is a folder ``<DIR>/<scene>/<token>/`` or ``<DIR>/<token>/`` holding
- ``lidarseg.bin`` (required): one uint8 per point of the keyframe's LIDAR_TOP sweep, in the file's point
  order, the nuScenes-lidarseg category index of the point (the dataset's category.json indices, nuScenes'
  0..31 where it has none); 0 (noise) marks a point without a class;
- ``boxes.json`` (optional; absent = no boxes): a JSON list of boxes in nuScenes ``sample_annotation`` form
  (autolabel.annotation.boxes), global frame.
Every check fails with one line naming the file (`DataError`), before anything is stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from kernels.grid import GridSpec
from occnet.visibility import visibility_masks

from ..data.nuscenes import NuScenesFrames
from ..data.transforms import ResizeCrop
from ..errors import DataError
from ..store.labels import LabelStore
from .accumulate import key_lidar, target_frame
from .boxes import Box3D, BoxError, parse_box
from .lidarseg import category_indices, occ3d_table
from .points import dataset_boxes, dataset_lidarseg, frame_point_labels
from .voxelize import PointLabelConfig

POINTS_FILE = "lidarseg.bin"
BOXES_FILE = "boxes.json"
LIDAR_POINT_BYTES = 20  # float32 x, y, z, intensity, ring


def find_points(folder: Path, scene: str, token: str) -> Path | None:
    """The frame's delivery folder holding lidarseg.bin or boxes.json, or None."""
    for d in (folder / scene / token, folder / token):
        if (d / POINTS_FILE).is_file() or (d / BOXES_FILE).is_file():
            return d
    return None


def delivered_tokens(folder: Path) -> set[str]:
    """Tokens (folder names) of every point delivery under `folder`."""
    return {p.parent.name for name in (POINTS_FILE, BOXES_FILE) for p in folder.rglob(name)}


def sweep_points(frames: NuScenesFrames, token: str) -> int:
    """Points of the keyframe's LIDAR_TOP sweep, from its file's size."""
    path = Path(frames.dataroot) / key_lidar(frames, token)["filename"]
    if not path.is_file():
        raise DataError(f"sample {token}: lidar file {path} not found")
    return path.stat().st_size // LIDAR_POINT_BYTES


def read_lidarseg(path: Path, token: str, n_points: int, known: np.ndarray) -> np.ndarray:
    """(n_points,) uint8 lidarseg indices from a delivered file; DataError for a wrong count or unknown ids."""
    raw = np.fromfile(path, np.uint8)
    if len(raw) != n_points:
        raise DataError(
            f"{path}: {len(raw)} point labels for the {n_points} points of sample {token}'s keyframe "
            f"LIDAR_TOP sweep; deliver one uint8 class index per point, in the sweep file's order"
        )
    bad = np.unique(raw[~known[raw]])
    if len(bad):
        raise DataError(
            f"{path}: class indices {bad[:8].tolist()} are not categories of the dataset's lidarseg table "
            f"(indices {int(np.flatnonzero(known).min())}..{int(np.flatnonzero(known).max())})"
        )
    return raw


def read_boxes(path: Path, token: str) -> list[Box3D]:
    """Validated boxes (global frame) from a delivered boxes.json; DataError naming the file and the box."""
    try:
        records = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({type(exc).__name__}: {exc})") from None
    if not isinstance(records, list):
        raise DataError(
            f"{path}: must hold a JSON list of boxes (sample_annotation records), got a {type(records).__name__}"
        )
    try:
        return [parse_box(r, i, token) for i, r in enumerate(records)]
    except BoxError as exc:
        raise DataError(f"{path}: {exc}") from None


def read_delivery(frames: NuScenesFrames, folder: Path, token: str) -> tuple[np.ndarray, list[Box3D]]:
    """A frame's validated point labels (raw lidarseg indices) and boxes from its delivery folder."""
    seg, box = folder / POINTS_FILE, folder / BOXES_FILE
    if not seg.is_file():
        raise DataError(
            f"{folder}: {BOXES_FILE} without {POINTS_FILE}; a point-label delivery needs the keyframe "
            f"sweep's point labels (boxes alone are optional extras)"
        )
    _, known = occ3d_table(frames.nusc.category)
    raw = read_lidarseg(seg, token, sweep_points(frames, token), known)
    return raw, read_boxes(box, token) if box.is_file() else []


def visibility(
    frames: NuScenesFrames, token: str, semantics: np.ndarray, grid: GridSpec, image_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Occ3D mask_camera and mask_lidar (X, Y, Z) bool of the keyframe against the labels' occupancy, with
    camera rays at `image_size` (the network input's fit of each camera)."""
    f = frames.frame(token, images=False, lidar="key")
    world2key = np.linalg.inv(f.lidar.ego2global)
    K, cam2key = [], []
    for cam in f.cameras:
        K.append(ResizeCrop.fit(cam.image_size, tuple(image_size)).matrix @ cam.K)
        cam2key.append(world2key @ cam.ego2global @ cam.cam2ego)
    cam, lid = visibility_masks(
        torch.from_numpy(semantics.astype(np.int64)),
        torch.from_numpy(np.stack(K)).float(),
        torch.from_numpy(np.stack(cam2key)).float(),
        tuple(image_size),
        torch.from_numpy(f.lidar.lidar2ego[:3, 3].astype(np.float64)),
        torch.from_numpy(f.lidar.points[:, :3].astype(np.float64)),
        grid,
    )
    return cam.numpy().astype(bool), lid.numpy().astype(bool)


def manual_arrays(
    frames: NuScenesFrames,
    token: str,
    raw: np.ndarray,
    boxes: list[Box3D],
    grid: GridSpec,
    image_size: tuple[int, int],
    cfg: PointLabelConfig | None = None,
    keep: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The manual group's arrays of a point-label delivery: semantics (255 where the annotation covers
    nothing), confidence 255 on the covered voxels (the annotated mask training trusts), mask_camera and
    mask_lidar against the labels' occupancy, within the covered voxels. `keep` restricts everything to a
    region (the requested tiles)."""
    lab = frame_point_labels(frames, token, raw, boxes, grid, cfg or PointLabelConfig())
    covered = lab.observed if keep is None else lab.observed & keep
    sem = np.where(covered, lab.semantics, 255).astype(np.uint8)
    cam, lid = visibility(frames, token, sem, grid, image_size)
    return {
        "semantics": sem,
        "confidence": (covered * 255).astype(np.uint8),
        "mask_camera": (cam & covered).astype(np.uint8),
        "mask_lidar": (lid & covered).astype(np.uint8),
    }


def bev_cells(points: np.ndarray, grid: GridSpec) -> tuple[np.ndarray, np.ndarray]:
    """(P, 2) BEV cell (ix, iy) of ego-frame points and (P,) bool: inside the grid's BEV extent."""
    ij = np.floor((points[:, :2] - np.asarray(grid.range_min[:2])) / np.asarray(grid.voxel_size[:2])).astype(np.int64)
    return ij, ((ij >= 0) & (ij < np.asarray(grid.shape[:2]))).all(1)


def in_tiles(points: np.ndarray, grid: GridSpec, bounds: list) -> np.ndarray:
    """(P,) bool: ego-frame points whose BEV cell lies in one of the tiles ([[x0, x1], [y0, y1], [z0, z1]])."""
    ij, inside = bev_cells(points, grid)
    out = np.zeros(len(points), bool)
    for (x0, x1), (y0, y1), _ in bounds:
        out |= inside & (ij[:, 0] >= x0) & (ij[:, 0] < x1) & (ij[:, 1] >= y0) & (ij[:, 1] < y1)
    return out


def simulate_delivery(frames: NuScenesFrames, token: str, out: Path, grid: GridSpec, tiles: list | None = None) -> Path:
    """The simulated annotator (a synthetic world's exact lidarseg labels and boxes): writes the frame's
    lidarseg.bin and boxes.json into `out` (its delivery folder). With `tiles` (region rows: voxel bounds) only
    the points and the boxes (by centre) in the tiles are labelled: other points get 0 (noise, no class); else
    every point, and the boxes with their centre in the grid's BEV extent (what the manifest counts)."""
    from occnet.atomic import atomic_write

    raw = dataset_lidarseg(frames, token).copy()
    boxes = dataset_boxes(frames, token)
    global2target, t0 = target_frame(frames, token)
    if tiles is not None:
        from .accumulate import read_sweep

        own = read_sweep(frames, key_lidar(frames, token), global2target, t0, token, beams=False)
        noise = next(i for i, name in category_indices(frames.nusc.category).items() if name == "noise")
        raw[~in_tiles(own.points, grid, tiles)] = noise
    # the boxes the manifest counts: centre in the tiles, or in the grid's BEV extent (costs.frame_cost)
    area = tiles if tiles is not None else [[[0, grid.shape[0]], [0, grid.shape[1]], [0, grid.shape[2]]]]
    centres = np.array([b["translation"] for b in boxes], np.float64).reshape(-1, 3)
    centres = centres @ global2target[:3, :3].T + global2target[:3, 3]
    boxes = [b for b, k in zip(boxes, in_tiles(centres, grid, area)) if k]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / POINTS_FILE, lambda fh: fh.write(raw.tobytes()))
    text = json.dumps(boxes, indent=1)
    atomic_write(out / BOXES_FILE, lambda fh: fh.write(text.encode()))
    return out


def oracle_point_labels(
    frames: NuScenesFrames,
    store_path: Path,
    grid: GridSpec,
    image_size: tuple[int, int],
    pool_tokens,
    pool_scenes,
    picks: list[tuple[str, str]],
    folder: Path,
    cfg: PointLabelConfig | None = None,
) -> int:
    """The simulated point annotator of a benchmark (synthetic worlds): each picked (scene, token) frame's exact
    lidarseg labels and boxes are delivered into `folder`, read back with the ingest's validation and voxelized
    into the manual group (the pool's tokens) of the store at `store_path`, with camera masks at the network
    input size `image_size`. Returns the voxels the labels cover."""
    manual = LabelStore(store_path, grid, create=True).manual(pool_tokens, pool_scenes, create=True)
    covered = 0
    for scene, token in picks:
        d = simulate_delivery(frames, token, Path(folder) / scene / token, grid)
        raw, boxes = read_delivery(frames, d, token)
        arrays = manual_arrays(frames, token, raw, boxes, grid, image_size, cfg)
        manual.write(manual.index(token), **arrays)
        covered += int((arrays["confidence"] == 255).sum())
    return covered
