"""``autolabel synth OUT``: generate the synthetic world as a nuScenes-layout dataset."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import DataError
from ..synth.preview import contact_sheet
from ..synth.writer import SynthConfig, write_dataset


def parse_size(text: str) -> tuple[int, int]:
    """'450x800' -> (450, 800) as (height, width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise DataError(f"--image-size must look like HEIGHTxWIDTH (e.g. 450x800), got {text!r}") from None
    return h, w


def run(
    out: str,
    scenes: int,
    frames: int,
    seed: int,
    image_size: str,
    sweeps: int,
    label_noise: float,
    version: str,
    preview: bool,
    workers: int = 1,
    noise_profile: str = "v2",
) -> int:
    try:
        cfg = SynthConfig(
            scenes=scenes,
            frames_per_scene=frames,
            seed=seed,
            image_size=parse_size(image_size),
            sweeps=sweeps,
            label_noise=label_noise,
            version=version,
            noise_profile=noise_profile,
        )
    except ValueError as exc:
        raise DataError(str(exc)) from exc
    start = time.perf_counter()
    summary = write_dataset(out, cfg, workers=workers)
    elapsed = time.perf_counter() - start
    print(
        f"wrote {summary['frames']} frames in {summary['scenes']} scenes to {Path(out).resolve()} "
        f"(version {cfg.version}) in {elapsed:.1f} s ({elapsed / summary['frames']:.2f} s per frame)"
    )
    print(
        f"  tables {cfg.version}/, images and lidar samples/ sweeps/, Occ3D gts/, 2D maps labels2d/ (docs/SYNTHETIC.md)"
    )
    if preview:
        path = Path(out) / "preview.png"
        contact_sheet(out, cfg.version).save(path)
        print(f"  preview {path}")
    return 0
