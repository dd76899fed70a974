"""The ``autolabel`` command line.

Each sub-command lives in its own module and registers an argparse sub-parser here; project
errors (`DataError`) and I/O failures print as one line without a traceback and exit with status 2;
waiting for annotators exits 3, Ctrl-C 130 (autolabel.errors).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from occnet import interrupt

from . import __version__
from .commands import active, eval2d, fuse, info, label, run, store, supervise, synth, train
from .errors import (
    EXIT_AWAITING_ANNOTATIONS,
    EXIT_DATA_ERROR,
    EXIT_INTERRUPTED,
    AwaitingAnnotations,
    DataError,
    one_line,
)


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="one-screen summary of a dataset in nuScenes layout")
    p.add_argument("dataroot", help="folder holding <version>/, samples/, sweeps/ and optionally gts/")
    p.add_argument("--version", default="v1.0-mini", help="table folder name (default: v1.0-mini)")
    p.set_defaults(func=lambda a: info.run(a.dataroot, a.version))


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth", help="generate the synthetic driving world in nuScenes layout with exact 3D ground truth"
    )
    p.add_argument("out", help="output folder (the dataset root)")
    p.add_argument("--scenes", type=int, default=2)
    p.add_argument("--frames-per-scene", type=int, default=4, help="keyframes per scene (2 Hz)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", default="450x800", help="HEIGHTxWIDTH of the camera images (default 450x800)")
    p.add_argument("--sweeps", type=int, default=0, help="lidar sweeps (20 Hz) written before each keyframe")
    p.add_argument(
        "--label-noise",
        type=float,
        default=0.3,
        help="noise level 0..1 of the foundation-model-like 2D labels (the hard maps: 1.6x, at most 1)",
    )
    p.add_argument(
        "--noise-profile", default="v2", help="noise model of the 2D labels: v2 (default) or v1 (the first release's)"
    )
    p.add_argument("--version", default="v1.0-synth", help="table folder name (default v1.0-synth)")
    p.add_argument(
        "--preview", action="store_true", help="also write preview.png: cameras, label maps, BEV of the ground truth"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes generating scenes in parallel (default: all cores); the files do not depend on it",
    )
    p.set_defaults(
        func=lambda a: synth.run(
            a.out,
            a.scenes,
            a.frames_per_scene,
            a.seed,
            a.image_size,
            a.sweeps,
            a.label_noise,
            a.version,
            a.preview,
            a.workers,
            a.noise_profile,
        )
    )


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML (see recipes/)")
    p.add_argument("--out", default=None, help="run folder (default: the recipe's out, else runs/<name>)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set train.steps=200 (repeatable)",
    )


def _add_supervise(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("supervise", help="compute 2D supervision (labels + LiDAR depth) of every frame into the cache")
    _recipe_args(p)
    p.set_defaults(func=lambda a: supervise.run(a.recipe, a.overrides, a.out))


def _add_fuse(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fuse",
        help="fuse the training frames' evidence (LiDAR over time, 2D labels of every view) "
        "into labels, once (fusion.enabled)",
    )
    _recipe_args(p)
    p.set_defaults(func=lambda a: fuse.run(a.recipe, a.overrides, a.out))


def _add_eval2d(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval-2d", help="score the cached 2D labels against 2D ground truth")
    _recipe_args(p)
    p.add_argument(
        "--truth",
        default="exact",
        metavar="exact|lidarseg|DIR",
        help="exact: the synthetic world's exact maps; lidarseg: projected nuScenes-lidarseg points; DIR: a "
        "folder of label maps, one .png/.npy per camera image named by its sample_data token or file "
        "stem, Occ3D ids 0-16, 255 = unlabelled",
    )
    p.add_argument(
        "--table",
        metavar="FILE",
        help="also append a row (recipe, provider, truth, scores) to this Markdown "
        "table, to compare providers in one table",
    )
    p.set_defaults(func=lambda a: eval2d.run(a.recipe, a.overrides, a.out, a.truth, table=a.table))


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a round's network by rendering (+ DTS teacher, + manual 3D labels)")
    _recipe_args(p)
    p.add_argument("--round", dest="k", type=int, default=0)
    p.set_defaults(func=lambda a: train.run(a.recipe, a.overrides, a.out, a.k))


def _add_label(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label", help="teacher inference over the unlabeled pool into the pseudo-label store")
    _recipe_args(p)
    p.add_argument("--round", dest="k", type=int, default=0)
    p.set_defaults(func=lambda a: label.run(a.recipe, a.overrides, a.out, a.k))


def _add_store_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a round of the store as Occ3D labels.npz files (OUT/gts/...)")
    p.add_argument("store", help="pseudo-label store (labels.zarr)")
    p.add_argument("out", help="output folder; files go to OUT/gts/<scene>/<token>/labels.npz")
    p.add_argument("--round", dest="k", type=int, required=True)
    p.add_argument("--format", default="occ3d", choices=("occ3d",))
    p.add_argument(
        "--drop-quantile",
        type=float,
        default=0.3,
        help="per class, leave this share of least confident voxels out of mask_camera / mask_lidar; they keep "
        "their class, mask_confident marks the kept voxels (default 0.3; --keep-all keeps every voxel)",
    )
    p.add_argument("--keep-all", action="store_true", help="export every voxel's label, no thresholds")
    p.set_defaults(func=lambda a: store.export(a.store, a.k, a.format, a.out, None if a.keep_all else a.drop_quantile))
    p = sub.add_parser("inspect", help="rounds, frames, class histogram, confidence and provenance of a store")
    p.add_argument("store")
    p.set_defaults(func=lambda a: store.inspect(a.store))
    p = sub.add_parser("eval", help="Occ3D mIoU / geometric IoU of a round against a gts/ tree")
    p.add_argument("store")
    p.add_argument("--round", dest="k", type=int, required=True)
    p.add_argument("--gts", required=True, help="folder holding gts/<scene>/<token>/labels.npz (a dataset root)")
    p.add_argument("--drop-quantile", type=float, default=0.3)
    p.add_argument("--out", default=None, help="folder for the JSON and PNG (default: beside the store, round_K/eval)")
    p.set_defaults(func=lambda a: store.evaluate(a.store, a.k, a.gts, a.drop_quantile, a.out))


def _add_active(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("select", help="choose the frames most worth a manual 3D label under a budget")
    _recipe_args(p)
    p.add_argument("--round", dest="k", type=int, default=0)
    p.add_argument("--budget", type=float, default=None, help="frames (or cost units with selection.cost_model)")
    p.set_defaults(func=lambda a: active.select(a.recipe, a.overrides, a.out, a.k, a.budget))
    p = sub.add_parser("ingest", help="store annotators' Occ3D labels for the round's selected frames")
    _recipe_args(p)
    p.add_argument("--round", dest="k", type=int, default=0)
    p.add_argument("folder", help="folder with gts/<scene>/<token>/labels.npz (or <scene>/<token>/ or <token>/)")
    p.set_defaults(func=lambda a: active.ingest(a.recipe, a.overrides, a.out, a.k, a.folder))


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="the whole loop: data, 2D supervision, training, pseudo-labels, evaluation, "
        "export, report, selection and annotation rounds (resumable)",
    )
    _recipe_args(p)
    p.set_defaults(func=lambda a: run.run(a.recipe, a.overrides, a.out))


_COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_run,
    _add_info,
    _add_synth,
    _add_supervise,
    _add_fuse,
    _add_eval2d,
    _add_train,
    _add_label,
    _add_store_commands,
    _add_active,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autolabel", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__}",
        help="print the installed package version and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with interrupt.remembered():
            try:
                return int(args.func(args) or 0)
            except Exception:
                if interrupt.pending():  # an error Ctrl-C caused (a DataLoader worker it stopped) is the interrupt
                    raise KeyboardInterrupt from None
                raise
    except DataError as exc:
        print(f"autolabel {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_DATA_ERROR
    except OSError as exc:
        # an unwritable folder, a full disk, a file vanishing under us: the message names the path, and a
        # traceback would only bury it
        print(f"autolabel {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_DATA_ERROR
    except AwaitingAnnotations as exc:
        print(f"autolabel {args.command}: {one_line(exc)}", file=sys.stderr)
        return EXIT_AWAITING_ANNOTATIONS
    except KeyboardInterrupt:
        interrupt.handled()
        # every stage resumes inside (checkpoints, done flags, atomic writes), so nothing needs saying but this
        print(f"autolabel {args.command}: interrupted; rerun to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
