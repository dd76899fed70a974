"""The ``autolabel`` command line.

Each sub-command lives in its own module and registers an argparse sub-parser here; project
errors (`DataError`) print as one line without a traceback and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from .errors import DataError


def _add_info(sub: argparse._SubParsersAction) -> None:
    from .commands import info

    p = sub.add_parser("info", help="one-screen summary of a dataset in nuScenes layout")
    p.add_argument("dataroot", help="folder holding <version>/, samples/, sweeps/ and optionally gts/")
    p.add_argument("--version", default="v1.0-mini", help="table folder name (default: v1.0-mini)")
    p.set_defaults(func=lambda a: info.run(a.dataroot, a.version))


def _add_synth(sub: argparse._SubParsersAction) -> None:
    from .commands import synth

    p = sub.add_parser("synth", help="generate the synthetic driving world in nuScenes layout with exact 3D ground truth")
    p.add_argument("out", help="output folder (the dataset root)")
    p.add_argument("--scenes", type=int, default=2)
    p.add_argument("--frames-per-scene", type=int, default=4, help="keyframes per scene (2 Hz)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", default="450x800", help="HEIGHTxWIDTH of the camera images (default 450x800)")
    p.add_argument("--sweeps", type=int, default=0, help="lidar sweeps (20 Hz) written before each keyframe")
    p.add_argument("--label-noise", type=float, default=0.3, help="noise level 0..1 of the foundation-model-like 2D labels")
    p.add_argument("--version", default="v1.0-synth", help="table folder name (default v1.0-synth)")
    p.add_argument("--preview", action="store_true", help="also write preview.png: cameras, label maps, BEV of the ground truth")
    p.set_defaults(func=lambda a: synth.run(a.out, a.scenes, a.frames_per_scene, a.seed, a.image_size, a.sweeps,
                                            a.label_noise, a.version, a.preview))


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML (see recipes/)")
    p.add_argument("--out", default=None, help="run folder (default: the recipe's out, else runs/<name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.steps=200 (repeatable)")


def _add_supervise(sub: argparse._SubParsersAction) -> None:
    from .commands import supervise

    p = sub.add_parser("supervise", help="compute 2D supervision (labels + LiDAR depth) of every frame into the cache")
    _recipe_args(p)
    p.set_defaults(func=lambda a: supervise.run(a.recipe, a.overrides, a.out))


def _add_eval2d(sub: argparse._SubParsersAction) -> None:
    from .commands import eval2d

    p = sub.add_parser("eval-2d", help="score the cached 2D labels against exact 2D ground truth")
    _recipe_args(p)
    p.add_argument("--truth", choices=("exact", "lidarseg"), default="exact",
                   help="exact: the synthetic world's exact maps; lidarseg: projected nuScenes-lidarseg points")
    p.set_defaults(func=lambda a: eval2d.run(a.recipe, a.overrides, a.out, a.truth))


_COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_info, _add_synth, _add_supervise, _add_eval2d)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autolabel", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DataError as exc:
        print(f"autolabel {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
