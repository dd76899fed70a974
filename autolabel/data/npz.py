"""Byte-reproducible .npz files: numpy's own writer stamps the current time into the zip entries."""
from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

_EPOCH = (1980, 1, 1, 0, 0, 0)


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], compress: bool = True, level: int = 1) -> Path:
    """Write `arrays` as an .npz (readable by np.load) atomically, identical bytes for identical input.

    Deflate level 1 by default: label volumes and maps compress nearly as well as at level 6, 4x faster.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED,
                                 compresslevel=level if compress else None) as zf:
                for name in sorted(arrays):
                    buf = io.BytesIO()
                    np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
                    info = zipfile.ZipInfo(name + ".npy", date_time=_EPOCH)
                    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
                    info.external_attr = 0o644 << 16
                    zf.writestr(info, buf.getvalue(), compresslevel=level if compress else None)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
