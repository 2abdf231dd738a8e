"""``specrouter run``: replay a workload on a real model ladder, every round routed by a policy.

Requests arrive as the trace says (``--replay wall``: real wall-clock waits, ``--time-scale``
stretches the trace clock; ``--replay fast``: idle gaps are skipped), are batched
continuously (``--max-batch``), get prompts of their requested length and domain from the
ladder's prompt corpus (random token ids for a ladder without one), and decode until their
trace output length.  Lengths beyond the ladder's context window are clipped with a warning.
Records (``requests.parquet``, ``rounds.parquet``, ``run.json``) go to ``--out``; an
interrupted run keeps what it finished.

Policies (``policies.registry``): ``target-only``, ``static:0>2>3:4,1`` or
``static:M0[4]>M2[1]>M3`` (ladder indices, target last; lookahead per non-target member),
``dynamic-lookahead[:D]``, ``specrouter[:k=v,...]``, ``bandit[:k=v,...]``, ``bandit-ucb1``
(the oracle needs the simulator's truth and is refused here).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from specrouter.commands.options import add_command, add_options

EXAMPLES = (
    "example:\n  specrouter run --trace specrouter/experiments/data/azure_code_2023_sample.csv "
    "--limit 20 \\\n      --rate-scale 0.05 --policy 'static:M0[4]>M2' --out runs/static"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    summary = "replay a trace on a real model ladder with a routing policy"
    parser = add_command(subparsers, "run", summary, __doc__, EXAMPLES)
    parser.add_argument(
        "--trace", required=True, help="workload file (Azure/BurstGPT CSV, Mooncake JSONL, ...)"
    )
    add_options(
        parser, "ladder", "limit", "rate_scale", "device", "dtype", "lean", "csv", "ngram",
        policy={"default": "target-only"},
        out={"required": True, "help": "directory for the records"},
        max_batch={"default": 8},
        seed={"help": "seed for prompts and sampling (default 0)"},
    )  # fmt: skip
    parser.add_argument("--domain", default=None, help="domain tag for requests without one (code, prose)")
    parser.add_argument(
        "--replay", choices=("wall", "fast"), default="wall", help="arrival clock (see above)"
    )
    parser.add_argument("--time-scale", type=float, default=1.0, help="wall replay: seconds per trace second")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-k", type=int, default=0, help="top-k filter (0 = off)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus filter (1 = off)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from backend.engine import EngineConfig
    from backend.ladder import ladder_paths, load_ladder
    from backend.replay import prompt_source_for
    from backend.sampling import SamplingConfig
    from policies.registry import check_fits, check_spec
    from specrouter.commands.options import check_flags, ladder_dir, lookup_from_args
    from specrouter.experiments.runs import RealWorld, RecordSink, run_real
    from traces.loaders import file_sha256, load_trace
    from traces.records import format_summary

    check_flags(args, "--limit", "--max-batch")
    lookup = lookup_from_args(args)
    directory = ladder_dir(args.ladder)
    check_spec(args.policy, simulated=False)
    # The whole trace is read (and refused on a bad row) before the models load.
    reader = load_trace(args.trace, limit=args.limit, rate_scale=args.rate_scale, domain=args.domain)
    requests = list(reader)
    members = len(ladder_paths(directory)) + (lookup is not None)
    check_fits(args.policy, members)  # from ladder.json, before any weights
    ladder = load_ladder(directory, device=args.device, dtype=args.dtype).with_lookup(lookup)
    check_fits(args.policy, ladder.size, ladder.info.names)  # a warm-start prior: profiled on this ladder?
    prompts = prompt_source_for(ladder, args.seed, directory)
    world = RealWorld(
        ladder,
        EngineConfig(max_batch=args.max_batch, replay=args.replay, time_scale=args.time_scale),
        SamplingConfig(args.temperature, args.top_k, args.top_p),
        args.seed,
        args.lean,
        prompts,
    )
    metadata = {
        "command": "specrouter run",
        "ladder": str(directory.resolve()),
        "trace": str(args.trace),
        "trace_sha256": file_sha256(args.trace),
        "trace_load": reader.report.as_dict(),
    }
    print(
        f"replaying {len(requests)} requests on {'/'.join(ladder.info.names)} with {args.policy} "
        f"({args.replay} clock, batch <= {args.max_batch})",
        file=sys.stderr,
    )
    sink = RecordSink(Path(args.out), metadata=metadata, write_csv=args.csv, progress=True)
    result = run_real(world, args.policy, requests, sink)
    if result.clipped is not None and result.clipped.any:
        print(result.clipped.message(), file=sys.stderr)
    unknown = getattr(prompts, "unknown_domains", {})
    if unknown:
        print(
            f"note: domains {sorted(unknown)} are not in the prompt corpus; drew a corpus domain",
            file=sys.stderr,
        )
    print(format_summary(result.summary))
    tokens, rounds = result.tokens_total, max(result.rounds_total, 1)
    print(
        f"{result.policy}: {len(result.requests)} requests, {tokens} tokens in {result.rounds_total} rounds, "
        f"{tokens / rounds:.2f} tokens/round, {tokens / max(result.world_seconds, 1e-9):.1f} tokens/s "
        f"over the run clock ({result.wall_seconds:.1f}s wall); records in {args.out}"
    )
    return 0
