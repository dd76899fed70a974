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


_COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_info,)


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
