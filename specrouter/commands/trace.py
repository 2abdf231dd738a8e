"""``specrouter trace``: look at workloads and make synthetic ones.

* ``trace stats FILE`` -- request count, duration, rate, length percentiles, ASCII
  histograms (``--plot out.png`` for a figure, ``--json`` for one JSON line);
* ``trace generate CONFIG.json OUT`` -- write a seeded synthetic workload (docs/traces.md)
  in the generic JSONL/CSV format (or any trace format with ``--format``).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from specrouter.cli import require_positive
from traces.formats import FORMATS
from traces.loaders import load_trace


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "trace",
        help="describe a trace file or generate a synthetic workload",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="trace_command", metavar="ACTION")
    stats = actions.add_parser(
        "stats",
        help="count, duration, rate, length percentiles and histograms of a trace",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  specrouter trace stats AzureLLMInferenceTrace_conv.csv\n"
        "  specrouter trace stats mooncake.jsonl --start 600 --end 1200 --plot mooncake.png",
    )
    stats.add_argument("file", type=Path, help="trace file (.csv, .jsonl, optionally .gz)")
    add_load_options(stats)
    stats.add_argument("--plot", type=Path, help="also write a PNG with arrival rate and length histograms")
    stats.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    stats.set_defaults(func=run_stats)

    generate = actions.add_parser(
        "generate",
        help="write a seeded synthetic workload from a JSON config",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  specrouter trace generate workload.json workload.jsonl",
    )
    generate.add_argument("config", type=Path, help="workload JSON (see docs/traces.md)")
    generate.add_argument("out", type=Path, help="output file (.jsonl or .csv; .gz compresses)")
    generate.add_argument("--format", default="auto", choices=["auto", *sorted(FORMATS)])
    generate.add_argument("--seed", type=int, help="override the config's seed")
    generate.set_defaults(func=run_generate)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def add_load_options(parser: argparse.ArgumentParser, *, window: bool = True) -> None:
    """The trace loader's options (``traces.loaders.TraceReader``); ``window=False`` leaves out
    the ones a command has its own flags for (``--start``/``--end``/``--sample``/...)."""
    parser.add_argument("--format", default="auto", help=f"auto or one of {', '.join(sorted(FORMATS))}")
    if window:
        parser.add_argument("--start", type=float, help="keep requests at or after this many seconds")
        parser.add_argument("--end", type=float, help="keep requests before this many seconds")
        parser.add_argument("--limit", type=int, help="keep the first N requests (N >= 1; default all)")
        parser.add_argument("--rate-scale", type=float, default=1.0, help="multiply the request rate")
        parser.add_argument(
            "--sample", type=float, default=1.0, help="keep each request with this probability"
        )
        parser.add_argument("--seed", type=int, default=0, help="seed of --sample")
        parser.add_argument("--domain", help="tag requests that have no domain with this one")
    parser.add_argument(
        "--skip-bad", action="store_true", help="skip malformed rows (counted) instead of failing"
    )
    parser.add_argument(
        "--keep-failed", action="store_true", help="keep requests with 0 output tokens (failed requests)"
    )


def check_format(fmt: str) -> None:
    """``--format`` is ``auto`` or a known trace format (before any file is opened)."""
    from specrouter.cli import InputError
    from traces.formats import ALIASES

    if fmt != "auto" and ALIASES.get(fmt, fmt) not in FORMATS:
        raise InputError(f"--format {fmt!r}: unknown trace format; expected auto or one of {sorted(FORMATS)}")


def load_with_warnings(path: Path, **options: Any) -> tuple[list[Any], Any, list[str]]:
    """Load a whole trace: its requests, its load report and the loader's warnings (as lines)."""
    from traces.loaders import load_trace

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = load_trace(path, **options)
        requests = list(reader)
    return requests, reader.report, [f"warning: {w.message}" for w in caught]


def failed_requests_line(report: Any, keep_failed: bool) -> str | None:
    """``3 failed requests (0 output tokens) dropped ...``, or None when there were none.

    (Skipped malformed rows are reported by the loader's own warning, with their lines.)
    """
    if not report.failed:
        return None
    kept = "kept" if keep_failed else "dropped (--keep-failed keeps them)"
    return f"{report.failed} failed requests (0 output tokens) {kept}"


def run_stats(args: argparse.Namespace) -> int:
    from traces.stats import compute_stats, format_stats, plot_stats

    check_format(args.format)
    require_positive(args.limit, "--limit")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = load_trace(
            args.file,
            args.format,
            start=args.start,
            end=args.end,
            limit=args.limit,
            rate_scale=args.rate_scale,
            sample=args.sample,
            seed=args.seed,
            on_error="skip" if args.skip_bad else "raise",
            keep_failed=args.keep_failed,
            domain=args.domain,
        )
        stats = compute_stats(reader)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    report = reader.report
    if args.json:
        print(json.dumps({"file": str(args.file), "format": report.format, **stats.as_dict(),
                          "skipped": report.skipped, "failed": report.failed}))  # fmt: skip
    else:
        print(f"{args.file} ({report.format})")
        print(format_stats(stats))
        failed = failed_requests_line(report, args.keep_failed)
        if failed:
            print(f"{args.file}: {failed}", file=sys.stderr)
    if args.plot:
        plot_stats(stats, str(args.plot), title=args.file.name)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from specrouter.cli import InputError
    from traces.jsonfile import read_json_document
    from traces.loaders import write_trace
    from traces.synthetic import WorkloadConfigError, workload_from_dict

    out_format = generate_format(args.out, args.format)
    spec = read_json_document(args.config, WorkloadConfigError)
    if args.seed is not None and isinstance(spec, dict):
        spec["seed"] = args.seed
    try:
        workload = workload_from_dict(spec)
    except WorkloadConfigError as error:
        raise InputError(f"{args.config}: {error}") from None
    progress = tqdm(workload, total=workload.count, unit="req", desc="generating", disable=None)
    # Written beside the target and renamed at the end: an interrupted run leaves no half a trace.
    partial = args.out.with_name(f".partial-{args.out.name}")  # same suffix: .gz still compresses
    try:
        count = write_trace(progress, partial, out_format)
        partial.replace(args.out)
    finally:
        partial.unlink(missing_ok=True)
    print(f"wrote {count} requests to {args.out}")
    return 0


def generate_format(out: Path, fmt: str) -> str:
    """The format ``trace generate`` writes ``out`` in; refuses an unusable ``OUT`` before generating."""
    from specrouter.cli import InputError

    if out.is_dir():
        raise InputError(f"OUT {out}: is a directory; expected a file name such as {out}/workload.jsonl")
    if not out.parent.is_dir():
        raise InputError(f"OUT {out}: directory {out.parent} does not exist")
    if fmt != "auto":
        return fmt
    name = out.name.removesuffix(".gz")
    for suffix, chosen in ((".jsonl", "jsonl"), (".csv", "csv")):
        if name.endswith(suffix):
            return chosen
    raise InputError(
        f"OUT {out}: cannot pick a format from the name; end it in .jsonl or .csv or pass --format"
    )
