"""A round's trained network on disk: the training checkpoint, its EMA teacher, its calibrated threshold.

Every reader of a checkpoint goes through here:

- `read_checkpoint`: a damaged file is a DataError naming it, not a torch traceback (the trainer in occnet
  writes checkpoints atomically, so damage comes from outside: a copy cut short, a disk fault);
- `teacher_state`: the hooks format -- the trainer saves one state per step hook, and the EMA teacher's is
  the one holding a ``model`` state dict (autolabel.dts.teacher.EMATeacher);
- `load_network`: the student's or the teacher's weights, chosen by an explicit argument;
- the occupancy threshold calibrated against LiDAR after training (`save_threshold`, beside the checkpoint
  as ``occupancy_threshold.json``), and `readout`, the DTS settings to read a checkpoint out with.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from occnet.network import OccupancyNetwork
from occnet.trainer import CHECKPOINT

from .errors import DataError

THRESHOLD_FILE = "occupancy_threshold.json"
WEIGHTS = ("student", "teacher")

__all__ = [
    "CHECKPOINT",
    "THRESHOLD_FILE",
    "LoadedNetwork",
    "load_network",
    "load_threshold",
    "read_checkpoint",
    "readout",
    "save_threshold",
    "teacher_state",
]


def read_checkpoint(path: str | Path, map_location="cpu", mmap: bool = False) -> dict:
    """A training checkpoint's state dict (model, step, optimiser, hooks); DataError naming the file if it is missing
    or unreadable. `mmap`: tensors are read from the file when used rather than all at once (a reader of the weights
    alone then skips the optimiser's and the teacher's bytes: 0.12 s against 0.31-0.73 s for a 192 MB checkpoint of
    the test networks on the 2-core CPU)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} not found; run `autolabel train` for this round first")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as exc:
        raise DataError(
            f"checkpoint {path} cannot be read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            f"delete it to train the round again, or restore it"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise DataError(f"checkpoint {path} is not a training checkpoint (no model weights / step)")
    return state


def teacher_state(state: dict) -> dict | None:
    """The EMA teacher's saved state in a checkpoint (its hook state holding a ``model``), else None."""
    return next((h for h in state.get("hooks", []) if isinstance(h, dict) and "model" in h), None)


@dataclass
class LoadedNetwork:
    model: OccupancyNetwork  # on the device, in eval mode
    step: int  # the training step the checkpoint was written at
    weights: str  # whose weights it holds: "ema_teacher" or "student"


def load_network(network_cfg, checkpoint: Path, device: torch.device, weights: str) -> LoadedNetwork:
    """The network of a training checkpoint with the student's weights (weights="student") or the EMA
    teacher's (weights="teacher"; the student's when the checkpoint holds no teacher, e.g. DTS off)."""
    if weights not in WEIGHTS:
        raise ValueError(f"load_network: weights must be one of {WEIGHTS}, got {weights!r}")
    state = read_checkpoint(checkpoint, mmap=True)  # one of the saved networks is read, the optimiser is not
    model = OccupancyNetwork(network_cfg, pretrained=False)  # the checkpoint holds every weight
    teacher = teacher_state(state) if weights == "teacher" else None
    try:
        model.load_state_dict(teacher["model"] if teacher is not None else state["model"])
    except RuntimeError as exc:
        raise DataError(
            f"checkpoint {checkpoint} does not fit the recipe's network: {str(exc).splitlines()[0]}"
        ) from None
    used = "ema_teacher" if teacher is not None else "student"
    return LoadedNetwork(model.to(device).eval(), int(state["step"]), used)


def save_threshold(folder: Path, result: dict) -> None:
    """The calibration's result (autolabel.training.calibrate) beside the checkpoint in `folder`."""
    (folder / THRESHOLD_FILE).write_text(json.dumps(result, indent=1))


def load_threshold(checkpoint: Path, default: float) -> float:
    """The calibrated threshold saved beside a checkpoint, else `default`."""
    path = Path(checkpoint).parent / THRESHOLD_FILE
    return float(json.loads(path.read_text())["threshold"]) if path.is_file() else default


def readout(dts, checkpoint: Path):
    """The DTS settings (a `DTSConfig`) for reading out a trained checkpoint: the calibrated threshold when
    there is one and dts.calibrate_threshold is on, else the settings as they are."""
    if not dts.calibrate_threshold:
        return dts
    return replace(dts, occupied_threshold=load_threshold(checkpoint, dts.occupied_threshold))
