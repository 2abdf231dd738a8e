"""``specrouter demo``: the whole loop on the embedded ladder, in a few minutes on a 2-core CPU.

1. profiles the embedded ladder (quick grid: pass times, pair acceptance);
2. compares routing policies -- target-only, every static chain, dynamic lookahead, a bandit,
   SpecRouter and the oracle -- in the simulator calibrated from that profile, replaying a
   sample of the Azure LLM inference trace 2023 (bundled, CC-BY 4.0) time-scaled to half of
   what target-only decoding can serve;
3. validates the simulator: the same policy and seed on the real backend for a short
   workload, with the fidelity table (predicted vs measured).

Prints both tables and writes records, tables and plots (PNG + SVG) under ``--out``.  A rerun
keeps finished steps (delete ``--out`` to start over).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from specrouter.commands.options import add_command, add_options

EXAMPLES = """examples:
  specrouter demo
  specrouter demo --trace-requests 2000 --load 0.8 --out runs/demo-long
  specrouter demo --ladder path/to/ladder --validate-requests 4
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    summary = "the whole loop on the embedded ladder: profile, compare policies in the sim, validate for real"
    parser = add_command(subparsers, "demo", summary, __doc__, EXAMPLES)
    add_options(
        parser, "ladder", "max_batch", "seed",
        out={"default": Path("runs/demo")},
        output_tokens={"help": "tokens per validate request (default %(default)s)"},
        policy={"action": "append", "default": None, "help": "compare only these policies (repeatable)"},
    )  # fmt: skip
    parser.add_argument(
        "--trace-requests", type=int, default=1000, help="trace requests simulated (default 1000)"
    )
    parser.add_argument(
        "--load", type=float, default=0.5, help="offered load / target-only capacity (default 0.5)"
    )
    parser.add_argument("--validate-requests", type=int, default=8, help="requests run for real (default 8)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from policies.registry import check_spec
    from specrouter.commands.options import check_flags, ladder_dir
    from specrouter.experiments.compare import format_comparison
    from specrouter.experiments.demo import DemoConfig, run_demo
    from specrouter.experiments.fidelity import format_table

    check_flags(args, "--trace-requests", "--validate-requests", "--max-batch", "--output-tokens")
    ladder = ladder_dir(args.ladder)
    for policy in args.policy or ():
        check_spec(policy)
    config = DemoConfig(
        ladder=str(ladder),
        out=str(args.out),
        trace_requests=args.trace_requests,
        load=args.load,
        max_batch=args.max_batch,
        validate_requests=args.validate_requests,
        validate_output_tokens=args.output_tokens,
        seed=args.seed,
        policies=tuple(args.policy or ()),
    )
    started = time.perf_counter()
    result = run_demo(config, progress=lambda step: print(f"demo: {step}", file=sys.stderr))
    print(
        f"\n== policy comparison in the simulator: {args.trace_requests} Azure 2023 conversation requests,"
        f" time-scaled x{result.time_scale:.3g} to load {args.load:g}"
        f" ({result.clipped} clipped to the context window)"
    )
    print(format_comparison(result.comparison))
    print(
        "(vs target / vs static: speed-up in mean time per output token over target-only / "
        "the best static chain)"
    )
    print(
        "\n== simulator vs real backend: specrouter warm-started from the profile,"
        f" {args.validate_requests} requests"
        f" x {args.output_tokens} tokens"
    )
    print(format_table(result.validation.rows))
    figures = [*result.comparison.figures, *result.validation.figures]
    print(f"\nwrote records, tables and {len(figures)} figure files under {args.out} "
          f"({time.perf_counter() - started:.0f}s)")  # fmt: skip
    return 0
