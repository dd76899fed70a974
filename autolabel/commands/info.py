"""``autolabel info DATAROOT``: a one-screen summary of a nuScenes-layout dataset."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.frame import CAMERA_NAMES, LIDAR_NAME
from ..data.nuscenes import LIDAR_POINT_DIMS, NuScenesFrames
from ..data.occ3d import labels_path
from ..errors import DataError
from ..supervision.precomputed import LABELS_2D_DIR


def _check_image_header(path: Path, sd: dict, where: str) -> None:
    """The image's header (not its pixels: a summary of a large dataset must stay quick) must decode and
    match the size its table row claims; a missing file is left to the loaders."""
    if not path.is_file():
        return
    try:
        with Image.open(path) as im:
            size = im.size
    except OSError as exc:
        raise DataError(f"{where}: image file {path} cannot be decoded ({exc})") from None
    if size != (sd["width"], sd["height"]):
        raise DataError(
            f"{where}: image file {path} is {size[0]}x{size[1]}, its sample_data row says {sd['width']}x{sd['height']}"
        )


def summarize(dataroot: str, version: str) -> str:
    """The summary text (also used by tests)."""
    ds = NuScenesFrames(dataroot, version, load_images=False, load_gt=False)
    nusc = ds.nusc
    lines = [
        f"dataset   {Path(dataroot).resolve()}  (version {version})",
        f"scenes    {len(ds.scene_names)}",
        f"samples   {len(ds)}",
    ]
    sizes: dict[str, Counter] = {name: Counter() for name in CAMERA_NAMES}
    lidar_counts: list[int] = []
    for token in ds.tokens:
        sample = nusc.get("sample", token)
        for name in CAMERA_NAMES:
            if name in sample["data"]:
                sd = nusc.get("sample_data", sample["data"][name])
                _check_image_header(Path(dataroot) / sd["filename"], sd, f"sample {token} {name}")
                sizes[name][(sd["width"], sd["height"])] += 1
        if LIDAR_NAME in sample["data"]:
            sd = nusc.get("sample_data", sample["data"][LIDAR_NAME])
            path = Path(dataroot) / sd["filename"]
            if path.is_file():
                size = path.stat().st_size
                if size % (4 * LIDAR_POINT_DIMS):  # a count from a cut file would be a wrong number, not a report
                    raise DataError(
                        f"sample {token}: lidar file {path} has {size} bytes, not a multiple of "
                        f"{4 * LIDAR_POINT_DIMS} ({LIDAR_POINT_DIMS} float32 per point): truncated or not a .pcd.bin"
                    )
                lidar_counts.append(size // (4 * LIDAR_POINT_DIMS))
    lines.append("cameras")
    for name in CAMERA_NAMES:
        res = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes[name].most_common()) or "missing"
        lines.append(f"  {name:<16}{res}")
    n_sweeps = sum(1 for sd in nusc.sample_data if not sd["is_key_frame"] and sd["filename"].find(LIDAR_NAME) >= 0)
    if lidar_counts:
        c = np.asarray(lidar_counts)
        lines.append(
            f"lidar     {LIDAR_NAME}: {c.mean():.0f} points per keyframe sweep (min {c.min()}, max {c.max()}); "
            f"{n_sweeps} non-key sweeps"
        )
    else:
        lines.append(f"lidar     {LIDAR_NAME}: no files found")
    n_gt = sum(labels_path(dataroot, ds.scene_of(t), t).is_file() for t in ds.tokens)
    lines.append(f"gts/      {'Occ3D labels for %d of %d samples' % (n_gt, len(ds)) if n_gt else 'none'}")
    maps = Path(dataroot) / LABELS_2D_DIR
    n_maps = sum(1 for _ in maps.rglob("*") if _.is_file()) if maps.is_dir() else 0
    lines.append(f"2D maps   {'%d files under %s/' % (n_maps, LABELS_2D_DIR) if n_maps else 'none'}")
    return "\n".join(lines)


def run(dataroot: str, version: str) -> int:
    print(summarize(dataroot, version))
    return 0
