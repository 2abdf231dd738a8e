"""``specrouter validate``: is the simulator right about this ladder?  Profile -> simulate -> run -> compare.

Profiles the ladder (or loads ``--profile``), simulates a short workload with the simulator
calibrated from that profile, runs the same workload on the real backend with the same
policy and seed, and prints the fidelity table: predicted vs measured mean and p99 time per
output token, TTFT, throughput, acceptance per model pair, and how often both worlds chose
the same chain.  Writes ``OUT/profile.json``, ``OUT/sim/`` and ``OUT/real/`` (request and
round records), ``OUT/fidelity.{json,txt}`` and ``OUT/predicted_vs_measured.{png,svg}``.
Rerun the same command after an interruption: finished steps are kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from specrouter.commands.options import add_command, add_options

EXAMPLES = """examples:
  specrouter validate --policy specrouter
  specrouter validate --ladder backend/zoo/default --policy static:0>2:4 --requests 16 --rate 2
  specrouter validate --policy specrouter --profile runs/profile.json --out runs/validate-sr
  specrouter validate --ngram 2:4 --policy 'static:0>1>3:4,2' --out runs/validate-ngram
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    summary = "profile a ladder, simulate, run for real with the same policy, print the fidelity table"
    parser = add_command(subparsers, "validate", summary, __doc__, EXAMPLES)
    add_options(
        parser, "ladder", "policy", "output_tokens", "max_batch", "seed", "device", "lean", "ngram",
        requests={"default": 8, "help": "requests in the workload (default 8)"},
        out={"default": Path("runs/validate")},
    )  # fmt: skip
    parser.add_argument("--profile", default=None, help="use this world profile instead of profiling")
    parser.add_argument("--full-profile", action="store_true", help="full profiling grid (default: quick)")
    parser.add_argument("--prompt-tokens", type=int, default=48, help="prompt length (default 48)")
    parser.add_argument("--rate", type=float, default=0.0, help="Poisson arrivals per second (0: at once)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from specrouter.commands.options import check_flags, ladder_dir
    from specrouter.experiments.fidelity import format_table
    from specrouter.experiments.validate import ValidateConfig, validate

    check_flags(args, "--requests", "--output-tokens", "--max-batch", "--prompt-tokens")
    config = ValidateConfig(
        ladder=str(ladder_dir(args.ladder)),
        policy=args.policy,
        out=str(args.out),
        profile=args.profile,
        quick_profile=not args.full_profile,
        requests=args.requests,
        prompt_tokens=args.prompt_tokens,
        output_tokens=args.output_tokens,
        rate=args.rate,
        max_batch=args.max_batch,
        seed=args.seed,
        device=args.device,
        lean=args.lean,
        ngram=args.ngram,
    )
    result = validate(config, progress=lambda step: print(f"validate: {step}", file=sys.stderr))
    print(format_table(result.rows))
    reused = [name for name, run in (("simulation", result.sim), ("real run", result.real)) if run.reused]
    if reused:
        print(f"(kept the finished {' and '.join(reused)} from {args.out}; delete them to redo)")
    print(f"wrote {args.out}/fidelity.json, fidelity.txt, sim/, real/ and predicted_vs_measured.png/.svg")
    return 0
