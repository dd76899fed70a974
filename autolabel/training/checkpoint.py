"""Reading a training checkpoint as input: a damaged file is a DataError naming it, not a torch traceback.
(The trainer in occnet writes them atomically, so damage comes from outside: a copy cut short, a disk fault.)"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import DataError


def read_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} not found; run `autolabel train` for this round first")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as exc:
        raise DataError(
            f"checkpoint {path} cannot be read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            f"delete it to train the round again, or restore it"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise DataError(f"checkpoint {path} is not a training checkpoint (no model weights / step)")
    return state
