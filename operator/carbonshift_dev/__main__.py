"""`python -m carbonshift_dev demo [...]`: the development command line (the demo; the control plane has its own,
`python -m carbonshift_dev.devcluster up|down|status`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carbonshift_dev", description="carbonshift development tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo_parser = sub.add_parser(
        "demo",
        help="run the whole product locally: two control planes, the operator, DCGM replay, Prometheus, example jobs",
    )
    from carbonshift_dev import demo

    demo.add_arguments(demo_parser)
    args = parser.parse_args(argv)
    return int(demo.run(args))


if __name__ == "__main__":
    sys.exit(main())
