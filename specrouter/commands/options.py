"""The command-line options several commands share, each defined once with its help text.

A command adds the ones it takes by name, changing what differs (a default, a help line)::

    add_options(parser, "ladder", "seed", "device", "lean", policy={"default": "specrouter"})

and finds its ladder with :func:`ladder_dir`, the one lookup of the embedded default.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# name -> (flag, argparse keyword arguments); "%(default)s" in a help text shows the default in use.
SHARED_OPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "ladder": ("--ladder", {"help": "ladder directory (default: the embedded ladder)"}),
    "policy": ("--policy", {
        "default": "specrouter",
        "help": "policy registry name, e.g. specrouter, static:0>2:4 (default %(default)s)",
    }),
    "out": ("--out", {"type": Path, "help": "output directory (default %(default)s)"}),
    "seed": ("--seed", {"type": int, "default": 0, "help": "seed of workload, policy, worlds (default 0)"}),
    "max_batch": ("--max-batch", {"type": int, "default": 4,
                                   "help": "requests running at once (default %(default)s)"}),
    "requests": ("--requests", {"type": int, "help": "requests in the workload (N >= 1)"}),
    "output_tokens": ("--output-tokens", {
        "type": int, "default": 32, "help": "tokens generated per request (default %(default)s)",
    }),
    "limit": ("--limit", {"type": int, "help": "replay only the first N requests (N >= 1; default all)"}),
    "rate_scale": ("--rate-scale", {"type": float, "default": 1.0, "help": "scale the trace's request rate"}),
    "device": ("--device", {"default": "cpu", "help": "torch device (cpu, cuda, cuda:1, ...)"}),
    "dtype": ("--dtype", {"default": "float32", "help": "float32, bfloat16, float16 or float64"}),
    "lean": ("--lean", {
        "action": "store_true", "help": "lean forward path (Llama-family weights; see docs/backend.md)",
    }),
    "csv": ("--csv", {"action": "store_true", "help": "also write CSV copies of the records"}),
    "ngram": ("--ngram", {
        "metavar": "MIN:MAX",
        "help": "add a model-free n-gram prompt-lookup drafter as ladder member 0 (the networks move "
                "up by one), matching suffixes of MIN..MAX tokens, e.g. 2:4 (default: none)",
    }),
}  # fmt: skip


def add_options(parser: argparse.ArgumentParser, *names: str, **changed: dict[str, Any]) -> None:
    """Add the shared options ``names`` as defined, and those in ``changed`` with keys replaced."""
    for name in (*names, *changed):
        flag, settings = SHARED_OPTIONS[name]
        parser.add_argument(flag, **{**settings, **changed.get(name, {})})


def add_command(
    subparsers: argparse._SubParsersAction, name: str, summary: str, doc: str | None, examples: str
) -> argparse.ArgumentParser:
    """A sub-command's parser: ``summary`` for ``specrouter --help``, ``doc`` and examples for its own."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=summary,
        description=doc,
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def ladder_dir(value: str | Path | None) -> Path:
    """``--ladder``'s directory, or the embedded ladder; one without ``ladder.json`` is refused."""
    from backend.zoo import default_ladder_dir
    from specrouter.cli import InputError

    path = Path(value) if value else default_ladder_dir()
    if not (path / "ladder.json").is_file():
        raise InputError(
            f"--ladder {path}: no ladder.json (not a ladder directory): pass --ladder DIR, or build "
            "the embedded ladder with `specrouter zoo build`"
        )
    return path


def lookup_from_args(args: argparse.Namespace) -> Any:
    """``--ngram MIN:MAX`` as a :class:`backend.ngram.NgramDrafter`, or None without the flag."""
    from backend.ngram import NgramDrafter
    from specrouter.cli import InputError

    value = getattr(args, "ngram", None)
    if value is None:
        return None
    try:
        return NgramDrafter.parse(value)
    except ValueError as error:
        raise InputError(f"--ngram {value}: {error}") from None


def check_flags(args: argparse.Namespace, *counts: str) -> None:
    """Refuse, before any work, a count flag (``--requests``, ...) below 1 and an ``--out`` that
    is an existing file."""
    from specrouter.cli import refuse_existing_file, require_positive

    for flag in counts:
        require_positive(getattr(args, flag.removeprefix("--").replace("-", "_")), flag)
    if getattr(args, "out", None) is not None:
        refuse_existing_file(args.out, "--out")
