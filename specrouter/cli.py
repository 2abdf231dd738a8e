"""The ``specrouter`` command line.

Each sub-command lives in its own module under :mod:`specrouter.commands` and exposes
``register(subparsers)``; heavy imports (torch, simpy) happen inside the command's
function so ``specrouter --help`` stays instant.

Bad input is handled here, once: a command raises :class:`InputError` (or lets one of the
libraries' input errors in :data:`INPUT_ERRORS` through) and :func:`main` prints one line,
``specrouter <command>: <what is wrong and what is expected>``, and returns 2.  ``--debug``
re-raises instead, for the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from specrouter import __version__

# Module names under specrouter.commands; add a line to add a sub-command.
COMMAND_MODULES: tuple[str, ...] = (
    "demo", "zoo", "profile", "run", "trace", "validate", "search", "compare", "simulate",
)  # fmt: skip

# The libraries' "your input is wrong" exceptions, as "module:Class".  They are looked up only in
# modules already imported: an error of a module nobody imported cannot have been raised, and
# looking it up this way keeps `specrouter trace stats` from importing torch for backend.ladder.
INPUT_ERRORS: tuple[str, ...] = (
    "traces.loaders:TraceFormatError",
    "traces.loaders:EmptyTraceError",
    "traces.loaders:TraceOptionError",
    "traces.world_profile:WorldProfileError",
    "traces.synthetic:WorkloadConfigError",
    "sim.config:ConfigError",
    "backend.ladder:LadderError",
    "policies.registry:PolicySpecError",
    "specrouter.scenarios.runner:ScenarioError",
    "specrouter.experiments.validate:ValidateError",
)
# Files the user named that are missing or unreadable are input errors too.
FILE_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError,
)  # fmt: skip


class InputError(Exception):
    """Bad input: the message names the file (and line), flag or key, and what is expected."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="specrouter",
        description="Adaptive routing for multi-level speculative decoding: simulate, run for real, compare.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"specrouter {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"specrouter.commands.{name}").register(subparsers)
    for command in _subcommand_parsers(parser):
        # SUPPRESS: an absent flag after the command must not reset one given before it.
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    return parser


def _subcommand_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser below ``parser`` (``simulate``, ``trace``, ``trace stats``, ...)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield child
                yield from _subcommand_parsers(child)


def input_error_types() -> tuple[type[BaseException], ...]:
    """The classes of :data:`INPUT_ERRORS` whose modules are imported, plus :class:`InputError`."""
    found: list[type[BaseException]] = [InputError]
    for dotted in INPUT_ERRORS:
        module_name, _, class_name = dotted.partition(":")
        module = sys.modules.get(module_name)
        error_type = getattr(module, class_name, None) if module is not None else None
        if isinstance(error_type, type) and issubclass(error_type, BaseException):
            found.append(error_type)
    return tuple(found)


def describe_error(error: BaseException) -> str:
    """One line for a bad-input error (an ``OSError`` names its file)."""
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {(error.strerror or str(error)).lower()}"
    return " ".join(str(error).split()) or type(error).__name__


def command_name(args: argparse.Namespace) -> str:
    """``simulate``, ``trace stats``, ``zoo build``: the words the user typed to pick the command."""
    words = [args.command]
    for nested in ("trace_command", "zoo_command"):
        if getattr(args, nested, None):
            words.append(getattr(args, nested))
    return " ".join(words)


CPU_THREADS_VARIABLE = "OMP_NUM_THREADS"
"""torch's intra-op threads, read once when torch is first imported.  The command line runs
one thread unless this variable says otherwise: the ladders here are small enough that a
second thread buys almost nothing on an idle 2-core CPU (0.49 vs 0.53 s for 8 requests x 32
tokens), while on a busy one two spinning threads made the same run take 55 s instead of
0.53 s (measured side by side, load average 4)."""


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault(CPU_THREADS_VARIABLE, "1")  # before any command imports torch
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
    except Exception as error:
        if args.debug or not isinstance(error, (*input_error_types(), *FILE_ERRORS)):
            raise
        print(f"specrouter {command_name(args)}: {describe_error(error)}", file=sys.stderr)
        return 2


def refuse_existing_file(path: Path | str, flag: str) -> None:
    """``flag`` names an output directory: refuse a path that is an existing file, before any work."""
    if Path(path).exists() and not Path(path).is_dir():
        raise InputError(f"{flag} {path}: is an existing file; expected a directory (new or existing)")


def require_positive(value: int | None, flag: str, meaning: str = "") -> None:
    """Counts like ``--limit`` / ``--requests``: absent means the default, 0 or negative is refused."""
    if value is not None and value < 1:
        hint = f" ({meaning})" if meaning else ""
        raise InputError(f"{flag} {value}: expected a positive whole number{hint}")


if __name__ == "__main__":  # pragma: no cover
    # `python -m specrouter.cli`: run the imported module's main, so that the commands' InputError
    # (imported from specrouter.cli) is the class main catches, not a second copy made for __main__.
    from specrouter.cli import main as package_main

    sys.exit(package_main())
