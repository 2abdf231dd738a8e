"""Simulator fidelity: validate on the embedded ladder, with the noise floor of the machine.

    python3 bench/fidelity.py                       # embedded ladder, specrouter, 12 x 32 tokens
    python3 bench/fidelity.py --policy static:0>2:4 --requests 16 --full-profile
    python3 bench/fidelity.py --ladder path/to/ladder --out runs/fidelity

Order, interleaved so the machine's drift hits both sides: real run A -> profile -> simulate
-> real run B, all on the same workload, policy and seed.  "Measured" is the mean of A and B;
the **noise floor** is the relative difference in mean TPOT between A and B,
``|A - B| / ((A + B) / 2)`` -- on a shared CPU the prediction cannot be judged finer than that.

Printed: the fidelity table (against run A's records), then diagnostics that say which part of
the model is off:

* ``pass_time_ratio`` per model -- mean seconds per forward pass, simulated / real (the
  profiled pass-time table vs what passes cost during the run);
* ``overhead_share`` -- in the real run, the fraction of round wall time spent outside
  forward passes (Python, KV bookkeeping, sampling, scheduling); the simulator charges only
  pass times, so this share shows up as under-prediction;
* ``rounds_per_request`` -- sim vs real (acceptance and routing).

The last line is one JSON object with at least ``mean_tpot_error``, ``p99_tpot_error``,
``throughput_error`` (relative, predicted vs measured), ``chain_agreement`` and ``noise_floor``.
Goal: mean TPOT within 5% (or within the noise floor), p99 within 15%, chain agreement >= 90%.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from specrouter.experiments.fidelity import fidelity_rows, format_table, relative_error, write_table
from specrouter.experiments.validate import (
    ValidateConfig,
    check_policy_fits,
    ensure_profile,
    mode_profile,
    run_real,
    workload,
)
from specrouter.experiments.worlds import cluster_for_profile, simulate_requests
from traces.records import RoundRecord


def mean_pass_seconds(rounds: list[RoundRecord]) -> dict[int, float]:
    """Per ladder model: total pass seconds / passes over every round."""
    seconds: dict[int, float] = defaultdict(float)
    passes: dict[int, int] = defaultdict(int)
    for record in rounds:
        for model, spent, count in zip(record.chain_models, record.pass_seconds, record.passes):
            seconds[model] += spent
            passes[model] += count
    return {m: seconds[m] / passes[m] for m in sorted(seconds) if passes[m]}


def overhead_share(rounds: list[RoundRecord]) -> float:
    wall = sum(r.latency for r in rounds)
    in_passes = sum(sum(r.pass_seconds) for r in rounds)
    return (wall - in_passes) / wall if wall > 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ladder", default=None, help="ladder directory (default: the embedded ladder)")
    parser.add_argument("--policy", default="specrouter")
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--prompt-tokens", type=int, default=48)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="Poisson arrivals per second (0: all at once)"
    )
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--full-profile", action="store_true", help="full profiling grid (default quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lean", action="store_true", help="backend's lean forward path (profile and runs)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-fidelity"))
    args = parser.parse_args()

    from backend.ladder import load_ladder
    from backend.replay import context_window, prompt_source_for, source_domains
    from backend.zoo import default_ladder_dir
    from sim.scenario import Scenario

    ladder_dir = Path(args.ladder) if args.ladder else default_ladder_dir()
    if not (ladder_dir / "ladder.json").exists():
        raise SystemExit(f"no ladder at {ladder_dir}: build it with `specrouter zoo build` or pass --ladder")
    if args.out.exists():
        shutil.rmtree(args.out)  # a benchmark measures afresh: nothing is reused
    config = ValidateConfig(
        str(ladder_dir), args.policy, str(args.out), None, not args.full_profile, args.requests,
        args.prompt_tokens, args.output_tokens, args.rate, args.max_batch, args.seed, lean=args.lean,
    )  # fmt: skip
    started = time.perf_counter()
    ladder = load_ladder(ladder_dir)
    check_policy_fits(args.policy, ladder.info)
    requests = workload(
        config, source_domains(prompt_source_for(ladder, args.seed)), context_window(ladder.models)
    )
    settings = config.settings()
    real_a = run_real(
        ladder, requests, args.policy, args.seed, args.max_batch, args.out / "real_a", settings, args.lean
    )
    profile = ensure_profile(config, ladder, print)
    sim_profile = mode_profile(profile, "greedy", args.out / "sim_profile.json")
    cluster = cluster_for_profile(sim_profile, args.max_batch, ladder_dir, max_running=args.max_batch)
    context = args.prompt_tokens + args.output_tokens // 2  # what the oracle's pass times assume
    scenario = Scenario(seed=args.seed, acceptance_mode="empirical", correlation=0.0, truth_context=context)
    sim = simulate_requests(cluster, scenario, requests, args.policy, args.out / "sim", settings)
    real_b = run_real(
        ladder, requests, args.policy, args.seed, args.max_batch, args.out / "real_b", settings, args.lean
    )

    rows = fidelity_rows(sim.requests, real_a.requests, sim.rounds, real_a.rounds)
    write_table(rows, args.out)
    print(format_table(rows))
    measured = {k: (real_a.summary[k] + real_b.summary[k]) / 2 for k in real_a.summary}
    sim_pass, real_pass = mean_pass_seconds(sim.rounds), mean_pass_seconds(real_a.rounds)
    diagnostics: dict[str, Any] = {
        "pass_time_ratio": {f"M{m}": sim_pass[m] / real_pass[m] for m in sim_pass if m in real_pass},
        "overhead_share_real": overhead_share(real_a.rounds),
        "overhead_share_sim": overhead_share(sim.rounds),
        "rounds_per_request": {
            "sim": len(sim.rounds) / len(sim.requests),
            "real": len(real_a.rounds) / len(real_a.requests),
        },
    }
    print(json.dumps(diagnostics, indent=1))
    agreement = next(r["measured"] for r in rows if r["metric"] == "chain_agreement")
    result = {
        "ladder": str(ladder_dir),
        "policy": args.policy,
        "requests": args.requests,
        "output_tokens": args.output_tokens,
        "mean_tpot_error": relative_error(sim.summary["tpot_mean"], measured["tpot_mean"]),
        "p99_tpot_error": relative_error(sim.summary["tpot_p99"], measured["tpot_p99"]),
        "ttft_error": relative_error(sim.summary["ttft_mean"], measured["ttft_mean"]),
        "throughput_error": relative_error(
            sim.summary["throughput_tokens_per_s"], measured["throughput_tokens_per_s"]
        ),
        "chain_agreement": agreement,
        "noise_floor": abs(real_a.summary["tpot_mean"] - real_b.summary["tpot_mean"]) / measured["tpot_mean"],
        "measured_tpot_ms": measured["tpot_mean"] * 1e3,
        "predicted_tpot_ms": sim.summary["tpot_mean"] * 1e3,
        **diagnostics,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
