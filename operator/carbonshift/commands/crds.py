"""`carbonshift crds`: write the CRDs generated from the API models, or check that the committed ones match."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from carbonshift.api.crdgen import render_all


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("crds"), help="directory for the YAML files (crds/)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming each file that differs from the models",
    )


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    stale = []
    for name, text in render_all().items():
        path = out / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path)
            continue
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    for path in stale:
        print(
            f"{path}: differs from the API models; run `carbonshift crds` (make crds) and commit",
            file=sys.stderr,
        )
    return 1 if stale else 0
