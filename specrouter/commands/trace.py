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

from traces.formats import FORMATS


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


def add_load_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default="auto", help=f"auto or one of {', '.join(sorted(FORMATS))}")
    parser.add_argument("--start", type=float, help="keep requests at or after this many seconds")
    parser.add_argument("--end", type=float, help="keep requests before this many seconds")
    parser.add_argument("--limit", type=int, help="keep the first N requests")
    parser.add_argument("--rate-scale", type=float, default=1.0, help="multiply the request rate")
    parser.add_argument("--sample", type=float, default=1.0, help="keep each request with this probability")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample")
    parser.add_argument(
        "--skip-bad", action="store_true", help="skip malformed rows (counted) instead of failing"
    )
    parser.add_argument("--keep-failed", action="store_true", help="keep requests with 0 output tokens")
    parser.add_argument("--domain", help="tag requests that have no domain with this one")


def run_stats(args: argparse.Namespace) -> int:
    from traces.loaders import EmptyTraceError, TraceFormatError, load_trace
    from traces.stats import compute_stats, format_stats, plot_stats

    try:
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
    except (TraceFormatError, EmptyTraceError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    report = reader.report
    if args.json:
        print(json.dumps({"file": str(args.file), "format": report.format, **stats.as_dict(),
                          "skipped": report.skipped, "failed": report.failed}))  # fmt: skip
    else:
        print(f"{args.file} ({report.format})")
        print(format_stats(stats))
        if report.skipped or report.failed:
            kept = "kept" if args.keep_failed else "dropped"
            print(f"skipped {report.skipped} malformed rows; {report.failed} failed requests {kept}")
    if args.plot:
        plot_stats(stats, str(args.plot), title=args.file.name)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from traces.loaders import write_trace
    from traces.synthetic import workload_from_dict

    try:
        spec = json.loads(args.config.read_text())
        if args.seed is not None:
            spec["seed"] = args.seed
        workload = workload_from_dict(spec)
    except (OSError, json.JSONDecodeError, ValueError) as error:
        print(f"error: {args.config}: {error}", file=sys.stderr)
        return 1
    total = workload.count
    progress = tqdm(workload, total=total, unit="req", desc="generating", disable=None)
    count = write_trace(progress, args.out, args.format)
    print(f"wrote {count} requests to {args.out}")
    return 0
