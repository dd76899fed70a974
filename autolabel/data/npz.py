"""Byte-reproducible .npz files: numpy's own writer stamps the current time into the zip entries."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from occnet.atomic import atomic_write

_EPOCH = (1980, 1, 1, 0, 0, 0)


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], compress: bool = True, level: int = 1) -> Path:
    """Write `arrays` as an .npz (readable by np.load) atomically, identical bytes for identical input.

    Deflate level 1 by default: label volumes and maps compress nearly as well as at level 6, 4x faster.
    """

    def write(fh) -> None:
        with zipfile.ZipFile(
            fh,
            "w",
            compression=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED,
            compresslevel=level if compress else None,
        ) as zf:
            for name in sorted(arrays):
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
                info = zipfile.ZipInfo(name + ".npy", date_time=_EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue(), compresslevel=level if compress else None)

    return atomic_write(path, write)
