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
import time
from collections import Counter
from pathlib import Path
from typing import Any

from specrouter.commands.trace import add_load_options

# A sane bound on a request's length in the simulator, which has no context window of its own: a
# 10^9-token output would otherwise run for hours.  128k is the longest context of the presets' models.
DEFAULT_MAX_TOKENS = 131_072


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="replay a trace in the simulator under a routing policy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  specrouter simulate --trace AzureLLMInferenceTrace_conv.csv --cluster llama --policy specrouter\n"
        "  specrouter simulate --trace conv.csv --cluster llama --policy static:0>2>3:4,1 \\\n"
        "      --limit 500 --out runs/a\n"
        "  specrouter simulate --trace conv.csv --cluster cpu --profile world.json --policy oracle",
    )
    parser.add_argument("--trace", type=Path, required=True, help="trace file (any traces.loaders format)")
    parser.add_argument(
        "--cluster", default="llama", help="preset name (llama, qwen, cpu) or cluster JSON file"
    )
    parser.add_argument("--policy", default="specrouter", help="registry name, e.g. static:0>2>3:4,1, oracle")
    parser.add_argument("--scenario", type=Path, help="scenario JSON (docs/sim.md)")
    parser.add_argument("--profile", help="world profile JSON: table latency (and --empirical acceptance)")
    parser.add_argument("--empirical", action="store_true", help="replay the profile's acceptance statistics")
    parser.add_argument("--out", type=Path, help="write records and run.json into this directory")
    parser.add_argument("--no-rounds", action="store_true", help="do not record per-round records")
    parser.add_argument("--csv", action="store_true", help="also write CSV copies of the records")
    parser.add_argument("--limit", type=int, help="replay only the first N requests (N >= 1; default all)")
    parser.add_argument("--rate-scale", type=float, default=1.0, help="multiply the trace's request rate")
    parser.add_argument("--seed", type=int, help="override the scenario's seed")
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        help=f"clip prompt + output to this many tokens, with a warning (default {DEFAULT_MAX_TOKENS})",
    )
    add_load_options(parser, window=False)
    parser.set_defaults(func=run)


def build_world(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from sim.config import ConfigError, load_cluster
    from sim.presets import PRESETS, preset
    from sim.scenario import Scenario, load_scenario
    from sim.world import World

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
    return World(cluster, scenario)


def run(args: argparse.Namespace) -> int:
    from policies.registry import check_fits, make_policy, policy_knobs
    from sim.engine import Simulation

    check_arguments(args)
    world = build_world(args)
    if world.cluster.scheduler == "pipelined":
        print(
            f"note: cluster {world.cluster.name!r} runs the pipelined scheduler (one server per model, "
            "co-placed models share their GPU): simulated only -- the real backend runs the lockstep "
            "serving loop on one device",
            file=sys.stderr,
        )
    check_fits(args.policy, len(world.cluster.models))
    policy = make_policy(args.policy, world=world.truth)
    knobs = policy_knobs(args.policy)
    requests, load = load_requests(args, world)
    from tqdm import tqdm

    chains: Counter[str] = Counter()
    committed: list[int] = []

    def count_round(record: Any) -> None:
        chains[record.chain] += 1
        committed.append(record.committed)

    record_rounds = not args.no_rounds
    metadata = run_metadata(args, world, policy.name, knobs, load)
    started = time.perf_counter()
    with tqdm(total=len(requests), desc=policy.name, unit="req", mininterval=1.0, file=sys.stderr) as bar:
        if args.out:
            from traces.records import RecordWriter

            with RecordWriter(args.out, metadata, write_csv=args.csv, record_rounds=record_rounds) as writer:

                def sink(record: Any) -> None:
                    count_round(record)
                    writer.add_round(record)

                sim = Simulation(
                    world,
                    policy,
                    record_rounds=record_rounds,
                    round_sink=sink,
                    request_sink=writer.add_request,
                    progress=bar.update,
                )
                result = sim.run(requests)
                records = None
        else:
            sim = Simulation(
                world, policy, record_rounds=record_rounds, round_sink=count_round, progress=bar.update
            )
            result = sim.run(requests)
            records = result.requests
    wall = time.perf_counter() - started
    print_results(args, world, policy.name, result, records, chains, wall)
    return 0


def check_arguments(args: argparse.Namespace) -> None:
    """The flags that need no file: refused before the cluster, the trace or the policy is read."""
    from specrouter.cli import refuse_existing_file, require_positive
    from specrouter.commands.trace import check_format

    require_positive(args.limit, "--limit")
    require_positive(args.max_tokens, "--max-tokens")
    check_format(args.format)
    if args.out is not None:
        refuse_existing_file(args.out, "--out")


def load_requests(args: argparse.Namespace, world: Any) -> tuple[list[Any], dict[str, Any]]:
    """The trace's requests (workload hooks applied, clipped to ``--max-tokens``) and what the
    load did, for ``run.json``; dropped, skipped and clipped requests are reported on stderr."""
    from backend.replay import ClipReport, clip_to_context
    from sim.scenario import apply_workload_hooks
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
    hooked = apply_workload_hooks(loaded, world.scenario)
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
    args: argparse.Namespace, world: Any, policy: str, knobs: dict[str, Any], load: dict[str, Any]
) -> dict[str, Any]:
    """What ``run.json`` records about this run, besides the environment the writer adds."""
    from dataclasses import asdict

    return {
        "world": "sim",
        "trace": str(args.trace),
        "cluster": world.cluster.name,
        "cluster_parameters": asdict(world.cluster),
        "policy": policy,
        "policy_knobs": knobs,
        "scenario": str(args.scenario) if args.scenario else None,
        "profile": args.profile,
        "seed": world.scenario.seed,
        "limit": args.limit,
        "rate_scale": args.rate_scale,
        "loader": {"format": args.format, "skip_bad": args.skip_bad, "keep_failed": args.keep_failed},
        **load,
    }


def print_results(
    args: argparse.Namespace,
    world: Any,
    policy: str,
    result: Any,
    records: Any,
    chains: Counter[str],
    wall: float,
) -> None:
    from traces.records import format_summary, read_records, summarize

    if records is None:
        records = read_records(args.out, rounds=False).requests
    print(f"policy {policy} on {world.cluster.name} ({', '.join(world.cluster.names)})")
    print(format_summary(summarize(records)))
    tokens_per_round = result.tokens_total / max(result.rounds_total, 1)
    print(f"rounds {result.rounds_total}  target tokens/round {tokens_per_round:.2f}")
    if chains:
        usage = ", ".join(
            f"{chain} {count / result.rounds_total:.1%}" for chain, count in chains.most_common(5)
        )
        print(f"chains: {usage}")
    print(
        f"simulated {result.sim_seconds:.1f}s in {wall:.2f}s wall "
        f"({len(records) / wall:.0f} req/s, {result.rounds_total / wall:.0f} rounds/s)"
    )
    if args.out:
        print(f"records written to {args.out}")
