"""``specrouter simulate``: replay a trace through the SimPy world under one routing policy.

Prints the request summary (TTFT / TPOT / E2E, throughput), the round statistics (rounds,
target tokens per round, chain usage) and the simulator's speed; with ``--out DIR`` writes
``requests.parquet``, ``rounds.parquet`` (unless ``--no-rounds``) and ``run.json``.

The cluster is a preset (``llama``, ``qwen``, ``cpu``) or a cluster JSON file; the scenario
(noise, acceptance, slowdowns, domain shifts, load ramps) is a JSON file, see docs/sim.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any


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
    parser.add_argument("--limit", type=int, help="replay only the first N requests")
    parser.add_argument("--rate-scale", type=float, default=1.0, help="multiply the trace's request rate")
    parser.add_argument("--seed", type=int, help="override the scenario's seed")
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
    from policies.registry import make_policy
    from sim.config import ConfigError
    from sim.engine import Simulation
    from sim.scenario import apply_workload_hooks
    from traces.loaders import load_trace
    from traces.records import RecordWriter, format_summary, summarize
    from traces.world_profile import WorldProfileError

    try:
        world = build_world(args)
        policy = make_policy(args.policy, world=world.truth)
        options: dict[str, Any] = {"rate_scale": args.rate_scale}
        if args.limit:
            options["limit"] = args.limit
        requests = list(apply_workload_hooks(load_trace(args.trace, **options), world.scenario))
    except (ConfigError, WorldProfileError, ValueError, FileNotFoundError) as err:
        print(f"specrouter simulate: {err}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    chains: Counter[str] = Counter()
    committed: list[int] = []

    def count_round(record: Any) -> None:
        chains[record.chain] += 1
        committed.append(record.committed)

    record_rounds = not args.no_rounds
    metadata = {
        "world": "sim",
        "trace": str(args.trace),
        "cluster": world.cluster.name,
        "policy": policy.name,
        "scenario": str(args.scenario) if args.scenario else None,
        "profile": args.profile,
        "seed": world.scenario.seed,
        "limit": args.limit,
        "rate_scale": args.rate_scale,
    }
    started = time.perf_counter()
    with tqdm(total=len(requests), desc=policy.name, unit="req", mininterval=1.0, file=sys.stderr) as bar:
        if args.out:
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
    if records is None:
        from traces.records import read_records

        records = read_records(args.out, rounds=False).requests
    print(f"policy {policy.name} on {world.cluster.name} ({', '.join(world.cluster.names)})")
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
    return 0
