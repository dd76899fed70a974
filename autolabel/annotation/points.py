"""A keyframe's point labels and boxes -> its occupancy labels, and the dataset's own lidarseg files and
sample_annotation boxes (what the simulated annotator delivers on a synthetic world)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kernels.grid import GridSpec

from ..data.nuscenes import NuScenesFrames
from ..errors import DataError
from .accumulate import key_lidar, target_frame, window_clouds
from .boxes import Box3D
from .lidarseg import occ3d_table
from .voxelize import PointBoxLabels, PointLabelConfig, voxelize

BOX_FIELDS = ("token", "sample_token", "instance_token", "translation", "size", "rotation", "category_name")


def frame_point_labels(
    frames: NuScenesFrames,
    token: str,
    raw: np.ndarray,
    boxes: list[Box3D],
    grid: GridSpec,
    cfg: PointLabelConfig,
    table: np.ndarray | None = None,
) -> PointBoxLabels:
    """Occupancy labels of keyframe `token` from `raw` (one lidarseg index per point of its keyframe sweep,
    already validated) and `boxes` (global frame), accumulating its scene window's sweeps (voxelize)."""
    clouds = window_clouds(frames, token, cfg.window, cfg.sweeps)
    own, others = clouds[0], clouds[1:]
    if len(raw) != len(own.points):
        raise DataError(
            f"sample {token}: {len(raw)} point labels for the {len(own.points)} points of its keyframe sweep"
        )
    if table is None:
        table = occ3d_table(frames.nusc.category)[0]
    global2target, _ = target_frame(frames, token)
    return voxelize(own, table[raw], [b.transformed(global2target) for b in boxes], others, grid, cfg)


def dataset_lidarseg(frames: NuScenesFrames, token: str) -> np.ndarray:
    """The dataset's nuScenes-lidarseg labels (raw category indices) of keyframe `token`'s sweep."""
    sd = key_lidar(frames, token)
    rec = next((r for r in getattr(frames.nusc, "lidarseg", []) if r["sample_data_token"] == sd["token"]), None)
    if rec is None:
        raise DataError(
            f"sample {token}: {frames.dataroot / frames.version} has no lidarseg labels for its LIDAR_TOP sweep "
            f"{sd['token']} (a synthetic world made before issue 24 has none: generate it again)"
        )
    path = Path(frames.dataroot) / rec["filename"]
    if not path.is_file():
        raise DataError(f"sample {token}: lidarseg file {path} not found")
    return np.fromfile(path, np.uint8)


def dataset_boxes(frames: NuScenesFrames, token: str) -> list[dict]:
    """The dataset's sample_annotation records of keyframe `token`, in the delivered boxes.json form."""
    nusc = frames.nusc
    out = []
    for ann_token in nusc.get("sample", token)["anns"]:
        ann = nusc.get("sample_annotation", ann_token)
        out.append({k: ann[k] for k in BOX_FIELDS if k in ann})
    return out
