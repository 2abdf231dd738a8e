"""The ``specrouter`` command line.

Each sub-command lives in its own module under :mod:`specrouter.commands` and exposes
``register(subparsers)``; heavy imports (torch, simpy) happen inside the command's
function so ``specrouter --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from specrouter import __version__

# Module names under specrouter.commands; add a line to add a sub-command.
COMMAND_MODULES: tuple[str, ...] = (
    "demo", "zoo", "profile", "run", "trace", "validate", "search", "compare", "simulate",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="specrouter",
        description="Adaptive routing for multi-level speculative decoding: simulate, run for real, compare.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"specrouter {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"specrouter.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; results written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
