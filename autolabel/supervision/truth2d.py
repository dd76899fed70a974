"""2D ground truth from a folder of label maps, for `autolabel eval-2d --truth DIR`.

Layout: one map per camera image, anywhere under DIR (subfolders are searched), named by the image's
nuScenes sample_data token or by its file stem::

    DIR/<sample_data token>.png|.npy
    DIR/<image file stem>.png|.npy      e.g. n015-2018-07-24-11-22-45+0800__CAM_FRONT__1532402927612460.png

A map is a 2D array of the camera image's size (H x W, e.g. 900 x 1600) holding Occ3D class ids 0..16
(`occnet.classes`), 255 = unlabelled; PNG as 8-bit greyscale ("L" / "P" mode), NPY of any integer type.
Camera images without a map have no truth (they count nothing); cameras of the cached frames that have
maps are scored at the cache's resolution (nearest-neighbour resize/crop, as every provider's maps are).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from occnet.classes import FREE_ID, IGNORE_ID

from ..data.frame import Frame
from ..data.transforms import ResizeCrop
from ..errors import DataError
from .providers import LabelMaps, resize_labels

SUFFIXES = (".png", ".npy")


class FolderTruth:
    """`label(frame, rc)` like a provider: (N, h, w) truth ids (255 where a camera has no map) and 0/1 weights."""

    def __init__(self, folder: str | Path, filename_of=None):
        """`filename_of(sample_data token)` -> the image's file name (the dataset's record), to match by stem."""
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataError(f"--truth: {self.folder} is not a folder of 2D label maps")
        self.files: dict[str, Path] = {}
        for path in sorted(self.folder.rglob("*")):
            if path.suffix.lower() not in SUFFIXES or not path.is_file():
                continue
            if path.stem in self.files:
                raise DataError(f"--truth: two maps for {path.stem}: {self.files[path.stem]} and {path}")
            self.files[path.stem] = path
        if not self.files:
            raise DataError(f"--truth: no .png or .npy label maps under {self.folder}")
        self.filename_of = filename_of
        self.used: set[str] = set()
        self.images_with_truth = 0

    def path_for(self, token: str) -> Path | None:
        for key in (token, Path(self.filename_of(token)).stem if self.filename_of else None):
            if key in self.files:
                self.used.add(key)
                return self.files[key]
        return None

    def read(self, path: Path, hw: tuple[int, int]) -> np.ndarray:
        """The (H, W) uint8 map at `path`; a DataError naming the file for a bad one."""
        try:
            if path.suffix.lower() == ".npy":
                sem = np.load(path, allow_pickle=False)
            else:
                with Image.open(path) as im:
                    if im.mode not in ("L", "P"):
                        raise DataError(
                            f"{path}: a label map PNG must be 8-bit greyscale or palette (class ids), got mode "
                            f"{im.mode}"
                        )
                    sem = np.asarray(im)
        except (OSError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{path}: cannot be read as a label map ({exc})") from None
        if sem.ndim != 2 or not np.issubdtype(sem.dtype, np.integer):
            raise DataError(f"{path}: a label map must be a 2D array of integer class ids, got {sem.dtype} {sem.shape}")
        if tuple(sem.shape) != tuple(hw):
            raise DataError(f"{path}: label map is {sem.shape[1]}x{sem.shape[0]}, the camera image is {hw[1]}x{hw[0]}")
        bad = ((sem < 0) | (sem >= FREE_ID)) & (sem != IGNORE_ID)
        if bad.any():
            raise DataError(
                f"{path}: class ids must be Occ3D 0..{FREE_ID - 1} or 255 (unlabelled), found "
                f"{sorted(np.unique(sem[bad]).tolist())[:5]}"
            )
        return sem.astype(np.uint8)

    def label(self, frame: Frame, rc: ResizeCrop) -> LabelMaps:
        sems = []
        for cam in frame.cameras:
            path = self.path_for(cam.token)
            if path is None:
                sems.append(np.full(rc.out_hw, IGNORE_ID, np.uint8))
                continue
            sem = self.read(path, cam.image_size)
            self.images_with_truth += 1
            sems.append(resize_labels(LabelMaps(sem, np.ones(sem.shape, np.float32)), rc)[0])
        sem = np.stack(sems)
        return LabelMaps(sem, (sem != IGNORE_ID).astype(np.float32))

    def unused(self) -> list[Path]:
        """Maps that matched no camera image of the evaluated frames (a misnamed file shows up here)."""
        return [p for k, p in self.files.items() if k not in self.used]
