"""The `carbonshift` command line: one entry point, one module per sub-command.

Each sub-command lives in `carbonshift.commands.<name>` and exposes `add_arguments(parser)` and
`run(args) -> int`. Modules are imported only when their command runs, so `carbonshift --help` is fast and a
command that is not built yet says so instead of crashing.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from carbonshift import __version__

COMMANDS: dict[str, str] = {
    "run": "run the operator (kopf) against a cluster",
    "simulate": "replay a grid trace and a job mix through the planner, with no cluster",
    "forecast": "show grid carbon intensity (current and forecast) for a zone",
    "crds": "write or check the CustomResourceDefinitions generated from the API models",
    "receipt": "print the carbon receipt of a CarbonAwareJob",
}

EXIT_USAGE = 2


def _load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"carbonshift.commands.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"carbonshift.commands.{name}":
            return None
        raise


def build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carbonshift",
        description="Carbon-aware scheduling of GPU training Jobs on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"carbonshift {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            module = _load(name)
            if module is not None:
                module.add_arguments(cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in args_list if a in COMMANDS), None)
    parser = build_parser(selected)
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    module = _load(args.command)
    if module is None:
        print(f"carbonshift {args.command}: not built yet in this release", file=sys.stderr)
        return EXIT_USAGE
    return int(module.run(args))


if __name__ == "__main__":
    sys.exit(main())
