"""``specrouter compare``: routing policies x scenarios, a table and plots.

In the simulator (default) every policy replays every shipped scenario (``--scenario``; see
``specrouter/scenarios/*.json``) on the first ``--requests`` requests of its trace.  With
``--backend real`` the same workloads (clipped to the ladder's context window, outputs
capped by ``--output-tokens``) run on a real ladder instead; the scenario's simulated events
(slowdowns, acceptance overrides) do not exist there and are ignored.

Prints mean / p99 time per output token and TTFT, throughput, and the speed-up over
target-only and over the best static chain; writes records per run under
``OUT/<scenario>/<policy>/``, ``OUT/comparison.json``, and plots (PNG + SVG) per scenario:
TPOT CDFs of all policies, and chain usage and per-pair acceptance over time of each policy
that switches chains, with the scenario's shift / slowdown marked.  Finished runs are kept
on a rerun.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from specrouter.commands.options import add_command, add_options

if TYPE_CHECKING:
    from specrouter.experiments.compare import Runner
    from specrouter.experiments.runs import RunOutput

EXAMPLES = """examples:
  specrouter compare                                  # every shipped scenario, default policies
  specrouter compare --scenario slowdown --policy specrouter --policy bandit --policy oracle
  specrouter compare --scenario domain_shift --requests 2000 --out runs/shift
  specrouter compare --backend real --scenario stationary --requests 6 --policy specrouter
"""

DEFAULT_POLICIES = ("target-only", "STATIC", "dynamic-lookahead", "bandit", "specrouter", "oracle")


def register(subparsers: argparse._SubParsersAction) -> None:
    summary = "run policies x scenarios (simulator or real backend); table and plots"
    parser = add_command(subparsers, "compare", summary, __doc__, EXAMPLES)
    add_options(
        parser, "ladder", "seed",
        policy={"action": "append", "default": None, "help": "policy (repeatable); default: target-only, "
                "every static chain, dynamic-lookahead, bandit, specrouter, oracle (sim only)"},
        requests={"help": "first N requests, N >= 1 (default 400; real 6)"},
        output_tokens={"help": "--backend real: cap on tokens per request (default %(default)s)"},
        max_batch={"help": "--backend real: running requests at most (default %(default)s)"},
        out={"default": Path("runs/compare")},
        ngram={"help": "--backend real: add a model-free n-gram lookup drafter as member 0 (MIN:MAX "
               "n-gram sizes, e.g. 2:4; the networks move up one index)"},
    )  # fmt: skip
    parser.add_argument(
        "--scenario", action="append", default=None, help="scenario (repeatable); default: all"
    )
    parser.add_argument(
        "--backend", choices=("sim", "real"), default="sim", help="where to run (default sim)"
    )
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from policies.registry import check_fits, check_spec, policy_head
    from specrouter.cli import InputError
    from specrouter.commands.options import check_flags
    from specrouter.experiments.compare import compare, format_comparison
    from specrouter.scenarios import scenario_names

    check_flags(args, "--requests", "--output-tokens", "--max-batch")
    scenarios = args.scenario or scenario_names()
    unknown = [s for s in scenarios if s not in scenario_names()]
    if unknown:
        raise InputError(f"unknown scenario(s) {', '.join(unknown)}; shipped: {', '.join(scenario_names())}")
    real = args.backend == "real"
    if args.ngram is not None and not real:
        raise InputError("--ngram: only with --backend real (the simulator's ladder is its cluster)")
    requested = args.policy or list(DEFAULT_POLICIES)
    for policy in expand_policies(requested, None, real):  # names and knobs: before any world loads
        check_spec(policy, simulated=not real)
    runner, ladder_size = real_runner(args) if real else sim_runner(args, scenarios[0])
    policies = expand_policies(requested, ladder_size, real)
    for policy in policies:
        if policy_head(policy) != "oracle":
            check_fits(policy, ladder_size)
    result = compare(policies, scenarios, args.out, runner, plot=not args.no_plots)
    print(format_comparison(result))
    print(f"wrote {args.out}/comparison.json, per-run records and {len(result.figures)} figure files")
    return 0


def expand_policies(requested: list[str], ladder_size: int | None, real: bool) -> list[str]:
    """Replace ``STATIC`` by every static chain of the ladder (none while its size is not known);
    drop the default oracle on real hardware."""
    from policies.registry import every_static_chain

    out: list[str] = []
    for name in requested:
        if name == "STATIC":
            out.extend(every_static_chain(ladder_size) if ladder_size else [])
        elif not (real and name == "oracle" and requested == list(DEFAULT_POLICIES)):
            out.append(name)
    return out


def sim_runner(args: argparse.Namespace, scenario: str) -> tuple[Runner, int]:
    """Runs in the simulator, and the ladder size of ``scenario``'s cluster."""
    from specrouter.experiments.runs import RecordSink, run_simulated, shipped_scenario

    world, _ = shipped_scenario(scenario, limit=2)
    limit = args.requests or 400

    def runner(scenario: str, policy: str, run_dir: Path) -> RunOutput:
        simulated, requests = shipped_scenario(scenario, limit, args.seed)
        settings = {"scenario": scenario, "policy": policy, "params": {}, "seed": args.seed, "limit": limit}
        return run_simulated(simulated, policy, requests, RecordSink(run_dir, settings))

    return runner, len(world.cluster.models)


def real_runner(args: argparse.Namespace) -> tuple[Runner, int]:
    """Runs on the real ladder (``--ladder``), and its size."""
    from backend.engine import EngineConfig
    from backend.ladder import load_ladder
    from backend.replay import ClipReport, clip_to_context, context_window
    from specrouter.commands.options import ladder_dir, lookup_from_args
    from specrouter.experiments.runs import RealWorld, RecordSink, run_real, shipped_scenario

    lookup = lookup_from_args(args)
    directory = ladder_dir(args.ladder)
    ladder = load_ladder(directory).with_lookup(lookup)
    window = context_window(ladder.models)
    limit = args.requests or 6
    world = RealWorld(ladder, EngineConfig(max_batch=args.max_batch, replay="fast"), seed=args.seed)

    def runner(scenario: str, policy: str, run_dir: Path) -> RunOutput:
        report = ClipReport(window)
        requests = [
            clip_to_context(
                r._replace(output_tokens=min(r.output_tokens, args.output_tokens)), window, report
            )
            # the scenario's workload transforms (domain shifts, load ramps) apply as in the simulator
            for r in shipped_scenario(scenario, limit, args.seed)[1]
        ]
        settings = {
            "scenario": scenario,
            "policy": policy,
            "seed": args.seed,
            "limit": limit,
            "ladder": str(directory.resolve()),
            "output_tokens": args.output_tokens,
            "ngram": args.ngram,
        }
        return run_real(world, policy, requests, RecordSink(run_dir, settings))

    return runner, ladder.size
