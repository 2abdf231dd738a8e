"""``specrouter simulate``: replay a trace through the SimPy world under one routing policy.

Prints the request summary (TTFT / TPOT / E2E, throughput), the round statistics (rounds,
target tokens per round, chain usage) and the simulator's speed; with ``--out DIR`` writes
``requests.parquet``, ``rounds.parquet`` (unless ``--no-rounds``) and ``run.json``.

The cluster is a preset (``llama``, ``qwen``, ``cpu``) or a cluster JSON file; the scenario
(noise, acceptance, slowdowns, domain shifts, load ramps) is a JSON file, see docs/sim.md.

Everything is checked before the simulation starts: the policy and its knobs against the
cluster's ladder, every trace row, ``--out``.  Malformed rows skipped (``--skip-bad``) and
failed requests dropped (BurstGPT's 0-token responses, unless ``--keep-failed``) are reported on
stderr and in ``run.json``; requests longer than ``--max-tokens`` are clipped with a warning.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specrouter.commands.options import add_command, add_options
from specrouter.commands.trace import add_load_options

if TYPE_CHECKING:
    from specrouter.experiments.runs import RunOutput, SimWorld

EXAMPLES = """examples:
  specrouter simulate --trace AzureLLMInferenceTrace_conv.csv --cluster llama --policy specrouter
  specrouter simulate --trace conv.csv --cluster llama --policy static:0>2>3:4,1 \\
      --limit 500 --out runs/a
  specrouter simulate --trace conv.csv --cluster cpu --profile world.json --policy oracle
"""

# A sane bound on a request's length in the simulator, which has no context window of its own: a
# 10^9-token output would otherwise run for hours.  128k is the longest context of the presets' models.
DEFAULT_MAX_TOKENS = 131_072


def register(subparsers: argparse._SubParsersAction) -> None:
    summary = "replay a trace in the simulator under a routing policy"
    parser = add_command(subparsers, "simulate", summary, __doc__, EXAMPLES)
    parser.add_argument("--trace", type=Path, required=True, help="trace file (any traces.loaders format)")
    parser.add_argument(
        "--cluster", default="llama", help="preset name (llama, qwen, cpu) or cluster JSON file"
    )
    add_options(
        parser, "limit", "rate_scale", "csv",
        policy={"help": "policy registry name, e.g. static:0>2>3:4,1, oracle (default %(default)s)"},
        out={"help": "write records and run.json into this directory"},
        seed={"default": None, "help": "override the scenario's seed"},
    )  # fmt: skip
    parser.add_argument("--scenario", type=Path, help="scenario JSON (docs/sim.md)")
    parser.add_argument("--profile", help="world profile JSON: table latency (and --empirical acceptance)")
    parser.add_argument("--empirical", action="store_true", help="replay the profile's acceptance statistics")
    parser.add_argument("--no-rounds", action="store_true", help="do not record per-round records")
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        help=f"clip prompt + output to this many tokens, with a warning (default {DEFAULT_MAX_TOKENS})",
    )
    add_load_options(parser, window=False)
    parser.set_defaults(func=run)


def sim_world(args: argparse.Namespace) -> SimWorld:
    """The cluster (a preset or a file) and the scenario the flags name."""
    from dataclasses import replace

    from sim.config import ConfigError, load_cluster
    from sim.presets import PRESETS, preset
    from sim.scenario import Scenario, load_scenario
    from sim.world import World
    from specrouter.experiments.runs import SimWorld

    scenario = load_scenario(args.scenario) if args.scenario else Scenario()
    overrides: dict[str, Any] = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.empirical:
        overrides["acceptance_mode"] = "empirical"
    if overrides:
        scenario = replace(scenario, **overrides)
    if args.cluster in PRESETS:
        cluster = preset(args.cluster, profile=args.profile)
    elif Path(args.cluster).is_file():
        cluster = load_cluster(args.cluster)
        if args.profile:
            cluster = replace(cluster, profile=args.profile)
    else:
        raise ConfigError(f"--cluster {args.cluster!r}: neither a preset ({', '.join(PRESETS)}) nor a file")
    World(cluster, scenario)  # refuses a scenario that does not fit the cluster, before the trace is read
    return SimWorld(cluster, scenario)


def run(args: argparse.Namespace) -> int:
    from policies.registry import check_fits, check_spec, policy_knobs
    from specrouter.experiments.runs import RecordSink, run_simulated

    check_arguments(args)
    world = sim_world(args)
    cluster = world.cluster
    check_spec(args.policy)
    check_fits(args.policy, len(cluster.models))
    requests, load = load_requests(args, world)
    if cluster.scheduler == "pipelined":  # said once the input is known good: bad input is one line
        print(
            f"note: cluster {cluster.name!r} runs the pipelined scheduler (one server per model, "
            "co-placed models share their GPU): simulated only -- the real backend runs the lockstep "
            "serving loop on one device",
            file=sys.stderr,
        )
    metadata = run_metadata(args, world, policy_knobs(args.policy), load)
    sink = RecordSink(args.out, None, metadata, not args.no_rounds, args.csv, progress=True)
    result = run_simulated(world, args.policy, requests, sink)
    print_results(world, result)
    return 0


def check_arguments(args: argparse.Namespace) -> None:
    """The flags that need no file: refused before the cluster, the trace or the policy is read."""
    from specrouter.commands.options import check_flags
    from specrouter.commands.trace import check_format

    check_flags(args, "--limit", "--max-tokens")
    check_format(args.format)


def load_requests(args: argparse.Namespace, world: SimWorld) -> tuple[list[Any], dict[str, Any]]:
    """The trace's requests (workload transforms applied, clipped to ``--max-tokens``) and what the
    load did, for ``run.json``; dropped, skipped and clipped requests are reported on stderr."""
    from backend.replay import ClipReport, clip_to_context
    from specrouter.commands.trace import failed_requests_line, load_with_warnings
    from traces.loaders import file_sha256

    options: dict[str, Any] = {
        "format": args.format,
        "rate_scale": args.rate_scale,
        "limit": args.limit,
        "on_error": "skip" if args.skip_bad else "raise",
        "keep_failed": args.keep_failed,
    }
    loaded, report, warnings = load_with_warnings(args.trace, **options)
    for line in warnings:
        print(line, file=sys.stderr)
    failed = failed_requests_line(report, args.keep_failed)
    if failed:
        print(f"{args.trace}: {failed}", file=sys.stderr)
    clip = ClipReport(args.max_tokens)
    hooked = world.scenario.workload.apply(loaded) if world.scenario else loaded
    requests = [clip_to_context(request, args.max_tokens, clip) for request in hooked]
    if clip.any:
        print(
            f"warning: {clip.prompts_clipped} prompt(s) and {clip.outputs_clipped} output length(s) clipped "
            f"to --max-tokens {args.max_tokens} (e.g. {'; '.join(clip.examples[:3])})",
            file=sys.stderr,
        )
    load = {
        "trace_sha256": file_sha256(args.trace),
        "trace_load": report.as_dict(),
        "clipped": {
            "max_tokens": args.max_tokens,
            "prompts": clip.prompts_clipped,
            "outputs": clip.outputs_clipped,
            "examples": clip.examples,
        },
    }
    return requests, load


def run_metadata(
    args: argparse.Namespace, world: SimWorld, knobs: dict[str, Any], load: dict[str, Any]
) -> dict[str, Any]:
    """What ``run.json`` records about this run, besides the policy, the world and the environment."""
    from dataclasses import asdict

    return {
        "trace": str(args.trace),
        "cluster": world.cluster.name,
        "cluster_parameters": asdict(world.cluster),
        "policy_knobs": knobs,
        "scenario": str(args.scenario) if args.scenario else None,
        "profile": args.profile,
        "seed": world.scenario.seed if world.scenario else None,
        "limit": args.limit,
        "rate_scale": args.rate_scale,
        "loader": {"format": args.format, "skip_bad": args.skip_bad, "keep_failed": args.keep_failed},
        **load,
    }


def print_results(world: SimWorld, result: RunOutput) -> None:
    from traces.records import format_summary

    cluster = world.cluster
    print(f"policy {result.policy} on {cluster.name} ({', '.join(cluster.names)})")
    print(format_summary(result.summary))
    rounds = max(result.rounds_total, 1)
    print(f"rounds {result.rounds_total}  target tokens/round {result.tokens_total / rounds:.2f}")
    chains = Counter(record.chain for record in result.rounds)
    if chains:
        usage = ", ".join(f"{chain} {count / rounds:.1%}" for chain, count in chains.most_common(5))
        print(f"chains: {usage}")
    wall = max(result.wall_seconds, 1e-9)
    print(
        f"simulated {result.world_seconds:.1f}s in {wall:.2f}s wall "
        f"({len(result.requests) / wall:.0f} req/s, {result.rounds_total / wall:.0f} rounds/s)"
    )
    if result.out_dir:
        print(f"records written to {result.out_dir}")
