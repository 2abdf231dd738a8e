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
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="replay a trace on a real model ladder with a routing policy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "example:\n  specrouter run --trace specrouter/experiments/data/azure_code_2023_sample.csv "
            "--limit 20 \\\n      --rate-scale 0.05 --policy 'static:M0[4]>M2' --out runs/static"
        ),
    )
    parser.add_argument("--ladder", default=None, help="ladder directory (default: the embedded ladder)")
    parser.add_argument(
        "--trace", required=True, help="workload file (Azure/BurstGPT CSV, Mooncake JSONL, ...)"
    )
    parser.add_argument("--policy", default="target-only", help="routing policy name (see above)")
    parser.add_argument("--out", required=True, help="directory for the records")
    parser.add_argument(
        "--limit", type=int, default=None, help="replay only the first N requests (N >= 1; default all)"
    )
    parser.add_argument("--rate-scale", type=float, default=1.0, help="multiply the trace's request rate")
    parser.add_argument("--domain", default=None, help="domain tag for requests without one (code, prose)")
    parser.add_argument("--max-batch", type=int, default=8, help="most requests in flight at once")
    parser.add_argument(
        "--replay", choices=("wall", "fast"), default="wall", help="arrival clock (see above)"
    )
    parser.add_argument("--time-scale", type=float, default=1.0, help="wall replay: seconds per trace second")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-k", type=int, default=0, help="top-k filter (0 = off)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus filter (1 = off)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16, float16 or float64")
    parser.add_argument(
        "--lean", action="store_true", help="lean forward path (Llama-family weights; see docs/backend.md)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for prompts and sampling")
    parser.add_argument("--csv", action="store_true", help="also write CSV copies of the records")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from backend.engine import Engine, EngineConfig, replay_executor
    from backend.ladder import ladder_paths, load_ladder
    from backend.replay import prompt_source_for
    from backend.sampling import SamplingConfig
    from policies.registry import check_fits, policy_knobs
    from specrouter.cli import InputError, refuse_existing_file, require_positive
    from specrouter.experiments.policies import check_policy_name, make_policy
    from traces.loaders import file_sha256, load_trace
    from traces.records import RecordWriter, format_summary, read_records, summarize

    require_positive(args.limit, "--limit")
    require_positive(args.max_batch, "--max-batch")
    refuse_existing_file(args.out, "--out")
    ladder_dir = Path(args.ladder) if args.ladder else _default_ladder()
    try:
        check_policy_name(args.policy, real_backend=True)
        policy = make_policy(args.policy)
    except ValueError as error:
        raise InputError(f"--policy: {error}") from None
    # The whole trace is read (and refused on a bad row) before the models load.
    reader = load_trace(args.trace, limit=args.limit, rate_scale=args.rate_scale, domain=args.domain)
    requests = list(reader)
    check_fits(args.policy, len(ladder_paths(ladder_dir)))  # from ladder.json, before any weights
    ladder = load_ladder(ladder_dir, device=args.device, dtype=args.dtype)
    prompts = prompt_source_for(ladder, args.seed, ladder_dir)
    sampling = SamplingConfig(args.temperature, args.top_k, args.top_p)
    config = EngineConfig(max_batch=args.max_batch, replay=args.replay, time_scale=args.time_scale)
    engine = Engine(
        ladder, replay_executor(ladder, sampling, args.seed, lean=args.lean), policy, prompts, config
    )
    metadata = {
        "world": "backend",
        "command": "specrouter run",
        "ladder": str(ladder_dir.resolve()),
        "models": list(ladder.names),
        "trace": str(args.trace),
        "trace_sha256": file_sha256(args.trace),
        "trace_load": reader.report.as_dict(),
        "policy": policy.name,
        "policy_knobs": policy_knobs(args.policy),
        "ladder_parameters": {"names": list(ladder.names), "params": list(ladder.params or ())},
        "seed": args.seed,
        "sampling": {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p},
        "engine": {"max_batch": args.max_batch, "replay": args.replay, "time_scale": args.time_scale},
        "prompt_source": prompts.name,
        "device": str(ladder.device),
        "forward_path": "lean" if args.lean else "huggingface",
        "dtype": str(ladder.dtype),
    }
    started = time.perf_counter()
    print(
        f"replaying {len(requests)} requests on {'/'.join(ladder.names)} with {policy.name} "
        f"({args.replay} clock, batch <= {args.max_batch})",
        file=sys.stderr,
    )
    with RecordWriter(args.out, metadata, write_csv=args.csv) as writer:
        result = engine.run(requests, writer)
        assert result.clipped is not None
        writer.run_metadata["clipped"] = {
            "window": result.clipped.window,
            "prompts": result.clipped.prompts_clipped,
            "outputs": result.clipped.outputs_clipped,
            "examples": result.clipped.examples,
        }
        writer.run_metadata["unknown_domains"] = getattr(prompts, "unknown_domains", {})
    if result.clipped.any:
        print(result.clipped.message(), file=sys.stderr)
    unknown = getattr(prompts, "unknown_domains", {})
    if unknown:
        print(
            f"note: domains {sorted(unknown)} are not in the prompt corpus; drew a corpus domain",
            file=sys.stderr,
        )
    print(format_summary(summarize(read_records(args.out, rounds=False).requests)))
    print(
        f"{policy.name}: {result.requests} requests, {result.tokens} tokens in {result.rounds} rounds, "
        f"{result.tokens / max(result.rounds, 1):.2f} tokens/round, {result.tokens_per_second:.1f} tokens/s "
        f"over the run clock ({time.perf_counter() - started:.1f}s wall); records in {args.out}"
    )
    return 0


def _default_ladder() -> Path:
    from backend.zoo import default_ladder_dir
    from specrouter.cli import InputError

    path = default_ladder_dir()
    if not (path / "ladder.json").is_file():
        raise InputError(
            f"no ladder given and the embedded ladder is missing ({path}/ladder.json): "
            "pass --ladder DIR or build it with `specrouter zoo build`"
        )
    return path
