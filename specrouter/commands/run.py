"""``specrouter run``: replay a workload on a real model ladder with a routing policy."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="replay a trace on a real model ladder with a routing policy")
    parser.add_argument("--ladder", required=True, help="ladder directory (with ladder.json)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise SystemExit("specrouter run: not built yet")
