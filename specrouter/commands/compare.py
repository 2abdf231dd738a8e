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
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from specrouter.experiments.compare import Runner
    from specrouter.experiments.worlds import RunOutput

EXAMPLES = """examples:
  specrouter compare                                  # every shipped scenario, default policies
  specrouter compare --scenario slowdown --policy specrouter --policy bandit --policy oracle
  specrouter compare --scenario domain_shift --requests 2000 --out runs/shift
  specrouter compare --backend real --scenario stationary --requests 6 --policy specrouter
"""

DEFAULT_POLICIES = ("target-only", "STATIC", "dynamic-lookahead", "bandit", "specrouter", "oracle")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="run policies x scenarios (simulator or real backend); table and plots",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--policy",
        action="append",
        default=None,
        help="policy (repeatable); default: target-only, every static chain, dynamic-lookahead, "
        "bandit, specrouter, oracle (sim only)",
    )
    parser.add_argument(
        "--scenario", action="append", default=None, help="scenario (repeatable); default: all"
    )
    parser.add_argument(
        "--requests", type=int, default=None, help="first N requests, N >= 1 (default 400; real 6)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the worlds and policies")
    parser.add_argument(
        "--backend", choices=("sim", "real"), default="sim", help="where to run (default sim)"
    )
    parser.add_argument(
        "--ladder", default=None, help="ladder directory for --backend real (default embedded)"
    )
    parser.add_argument(
        "--output-tokens", type=int, default=32, help="--backend real: cap on tokens per request"
    )
    parser.add_argument("--max-batch", type=int, default=4, help="--backend real: running requests at most")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"), help="output directory")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from policies.contract import LadderInfo
    from specrouter.cli import refuse_existing_file, require_positive
    from specrouter.experiments.compare import compare, format_comparison
    from specrouter.experiments.policies import UnknownPolicyError, check_policy_name, policy_head
    from specrouter.experiments.validate import check_policy_fits
    from specrouter.experiments.worlds import scenario_names

    for flag, value in (("--requests", args.requests), ("--output-tokens", args.output_tokens),
                        ("--max-batch", args.max_batch)):  # fmt: skip
        require_positive(value, flag)
    refuse_existing_file(args.out, "--out")
    scenarios = args.scenario or scenario_names()
    unknown = [s for s in scenarios if s not in scenario_names()]
    if unknown:
        print(
            f"specrouter compare: unknown scenario(s) {', '.join(unknown)}; "
            f"shipped: {', '.join(scenario_names())}",
            file=sys.stderr,
        )
        return 2
    real = args.backend == "real"
    requested = args.policy or list(DEFAULT_POLICIES)
    try:
        for policy in requested:
            if policy != "STATIC" and not (
                real and requested == list(DEFAULT_POLICIES) and policy == "oracle"
            ):
                check_policy_name(policy, real_backend=real)
        runner, ladder_size = real_runner(args) if real else sim_runner(args, scenarios[0])
        policies = expand_policies(requested, ladder_size, real)
        ladder = LadderInfo(tuple(f"M{i}" for i in range(ladder_size)))
        for policy in policies:
            if policy_head(policy) != "oracle":
                check_policy_fits(policy, ladder)
    except (UnknownPolicyError, ValueError) as error:
        print(f"specrouter compare: {error}", file=sys.stderr)
        return 2
    result = compare(policies, scenarios, args.out, runner, plot=not args.no_plots)
    print(format_comparison(result))
    print(f"wrote {args.out}/comparison.json, per-run records and {len(result.figures)} figure files")
    return 0


def expand_policies(requested: list[str], ladder_size: int, real: bool) -> list[str]:
    """Replace ``STATIC`` by every static chain of the ladder; drop the default oracle on real hardware."""
    from policies.registry import every_static_chain

    out: list[str] = []
    for name in requested:
        if name == "STATIC":
            out.extend(every_static_chain(ladder_size))
        elif not (real and name == "oracle" and requested == list(DEFAULT_POLICIES)):
            out.append(name)
    return out


def sim_runner(args: argparse.Namespace, scenario: str) -> tuple[Runner, int]:
    """Runs in the simulator, and the ladder size of ``scenario``'s cluster."""
    from specrouter.experiments.worlds import simulate_scenario
    from specrouter.scenarios import load_scenario_config
    from specrouter.scenarios.runner import build_world

    world, _ = build_world(load_scenario_config(scenario), limit=2)
    limit = args.requests or 400

    def runner(scenario: str, policy: str, run_dir: Path) -> RunOutput:
        return simulate_scenario(scenario, policy, args.seed, run_dir, limit)

    return runner, len(world.cluster.models)


def real_runner(args: argparse.Namespace) -> tuple[Runner, int]:
    """Runs on the real ladder (``--ladder``), and its size."""
    from backend.ladder import load_ladder
    from backend.replay import ClipReport, clip_to_context, context_window
    from specrouter.commands.validate import default_ladder
    from specrouter.experiments.validate import run_real
    from specrouter.scenarios import load_scenario_config
    from specrouter.scenarios.runner import build_world

    ladder_dir = args.ladder or default_ladder()
    if not (Path(ladder_dir) / "ladder.json").exists():
        raise ValueError(
            f"no ladder at {ladder_dir}: build it with `specrouter zoo build` or pass --ladder DIR"
        )
    ladder = load_ladder(ladder_dir)
    window = context_window(ladder.models)
    limit = args.requests or 6

    def runner(scenario: str, policy: str, run_dir: Path) -> RunOutput:
        report = ClipReport(window)
        requests = [
            clip_to_context(
                r._replace(output_tokens=min(r.output_tokens, args.output_tokens)), window, report
            )
            # the scenario's workload hooks (domain shifts, load ramps) apply as in the simulator
            for r in build_world(load_scenario_config(scenario), limit, args.seed)[1]
        ]
        settings = {
            "scenario": scenario,
            "policy": policy,
            "seed": args.seed,
            "limit": limit,
            "ladder": str(Path(ladder_dir).resolve()),
            "output_tokens": args.output_tokens,
        }
        return run_real(ladder, requests, policy, args.seed, args.max_batch, run_dir, settings)

    return runner, ladder.size
