"""Per-camera 2D label maps read from a folder in the synthetic world's layout:
``<root>/labels2d/<scene>/<sample_token>/<CAM>.npz`` with ``semantics`` / ``noisy_semantics`` (uint8,
255 unknown) and optional ``noisy_confidence`` (uint8 0..255) — docs/SYNTHETIC.md."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError

LABELS_2D_DIR = "labels2d"  # under a dataset root
VARIANTS = {"exact": ("semantics", None), "noisy": ("noisy_semantics", "noisy_confidence")}


def read_label_map(root: str | Path, scene: str, token: str, camera: str, variant: str = "noisy",
                   folder: str = LABELS_2D_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) uint8 semantics and (H, W) float32 confidence in [0, 1] of one camera."""
    if variant not in VARIANTS:
        raise DataError(f"2D label variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    path = Path(root) / folder / scene / token / f"{camera}.npz"
    if not path.is_file():
        raise DataError(f"sample {token} {camera}: 2D label map {path} not found")
    key, conf_key = VARIANTS[variant]
    with np.load(path) as z:
        if key not in z.files:
            raise DataError(f"{path}: no '{key}' map (found {z.files})")
        sem = z[key]
        conf = z[conf_key].astype(np.float32) / 255 if conf_key and conf_key in z.files else (sem != 255).astype(np.float32)
    return sem, conf
