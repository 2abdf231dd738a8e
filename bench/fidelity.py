"""Simulator fidelity where it matters: a matrix of policies x batch limits on the embedded ladder.

    python3 bench/fidelity.py               # 3 policies x --max-batch 1, 4, 8; 16 requests x 32 tokens
    python3 bench/fidelity.py --quick       # one cell: static:0>2:4 at --max-batch 4 (<= 3 minutes)
    python3 bench/fidelity.py --policy specrouter --max-batch 4 --requests 16

The ladder is profiled once (pass-time grid up to the largest batch, acceptance at the
workload's operating point, the engine's loop overhead on the profiler's own calibration
workload -- never on the runs predicted here).  Then, per cell, interleaved so the machine's
drift hits both sides: real run A -> simulate -> real run B, same workload, policy and seed.
"Measured" is the median of the real runs (A and B by default; ``--repeats N`` for more, half
before and half after the simulation); the cell's **noise floor** is ``(max - min) / median`` of
their mean time per output token (``|A - B| / mean`` for two).  A cell whose noise floor
exceeds 5% is **not judged** (the machine was too busy to tell a 5% error from noise); its
figures are printed but its goals say ``"met": null``.

Goals per judged cell (issue 11): mean TPOT error <= max(5%, noise floor), p99 TPOT <= 15%,
mean TTFT <= 15%, chain agreement >= 0.9 for ``specrouter``.  The load average before and
after is printed and recorded.  The last line is one JSON object with the ``goals`` map.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from policies.registry import check_fits
from specrouter.experiments.fidelity import fidelity_rows, format_table, relative_error, write_table
from specrouter.experiments.runs import RecordSink, run_real, run_simulated
from specrouter.experiments.validate import (
    ValidateConfig,
    ensure_profile,
    real_world,
    simulated_world,
    workload,
)

POLICIES = ("static:0>2:4", "static:0>1>2:4,1", "specrouter")
BATCHES = (1, 4, 8)
QUICK = (("static:0>2:4",), (4,))
NOISE_LIMIT = 0.05


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def goal(value: float | None, target: str, met: bool | None, why: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "value": None if value is None else round(value, 4),
        "target": target,
        "met": met,
    }
    if why:
        entry["why"] = why
    return entry


def cell_goals(cell: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's goals for one cell; ``met`` is None when the cell's noise floor is too high."""
    name = f"{cell['policy']}@b{cell['max_batch']}"
    noise = cell["noise_floor"]
    judged = noise <= NOISE_LIMIT
    why = None if judged else f"noise floor {noise:.1%} > {NOISE_LIMIT:.0%}: machine too busy to judge"
    mean_limit = max(NOISE_LIMIT, noise)
    goals = {
        f"{name} mean_tpot_error": goal(
            abs(cell["mean_tpot_error"]), f"<= {mean_limit:.3f}", abs(cell["mean_tpot_error"]) <= mean_limit
        ),
        f"{name} p99_tpot_error": goal(
            abs(cell["p99_tpot_error"]), "<= 0.15", abs(cell["p99_tpot_error"]) <= 0.15
        ),
        f"{name} ttft_error": goal(abs(cell["ttft_error"]), "<= 0.15", abs(cell["ttft_error"]) <= 0.15),
        f"{name} noise_floor": goal(noise, f"<= {NOISE_LIMIT}", judged),
    }
    if cell["policy"].startswith("specrouter"):
        agreement = cell["chain_agreement"]
        goals[f"{name} chain_agreement"] = goal(agreement, ">= 0.9", agreement >= 0.9)
    if not judged:
        for key, entry in goals.items():
            if not key.endswith("noise_floor"):
                entry["met"] = None
                entry["why"] = why
    return goals


def run_cell(
    ladder: Any, ladder_dir: Path, profile: Path, policy: str, max_batch: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Real A -> simulate -> real B for one (policy, batch) cell."""
    from backend.replay import context_window, prompt_source_for, source_domains

    out = args.out / f"{policy.replace(':', '_').replace('>', '-')}_b{max_batch}"
    config = ValidateConfig(
        str(ladder_dir), policy, str(out), str(profile), True, args.requests, args.prompt_tokens,
        args.output_tokens, args.rate, max_batch, args.seed, args.device,
    )  # fmt: skip
    check_fits(policy, ladder.size, ladder.info.names)
    requests = workload(
        config, source_domains(prompt_source_for(ladder, args.seed)), context_window(ladder.models)
    )
    settings = config.settings()
    load_before = load_average()
    real = real_world(config, ladder)

    # progress=True: the engine's progress bar, as before the run functions
    def real_run(index: int) -> Any:
        name = "real_a" if index == 0 else "real_b" if index == 1 else f"real_{index + 1}"
        return run_real(real, policy, requests, RecordSink(out / name, settings, progress=True))

    # real runs on both sides of the simulation, so the machine's drift hits both
    before = (args.repeats + 1) // 2
    reals = [real_run(i) for i in range(before)]
    simulated = simulated_world(config, profile)
    sim = run_simulated(simulated, policy, requests, RecordSink(out / "sim", settings))
    reals += [real_run(i) for i in range(before, args.repeats)]
    real_a = reals[0]
    rows = fidelity_rows(sim.requests, real_a.requests, sim.rounds, real_a.rounds)
    write_table(rows, out)
    measured = {k: float(np.median([run.summary[k] for run in reals])) for k in real_a.summary}
    tpots = [run.summary["tpot_mean"] for run in reals]
    agreement = next(r["measured"] for r in rows if r["metric"] == "chain_agreement")
    return {
        "policy": policy,
        "max_batch": max_batch,
        "mean_tpot_error": relative_error(sim.summary["tpot_mean"], measured["tpot_mean"]),
        "p99_tpot_error": relative_error(sim.summary["tpot_p99"], measured["tpot_p99"]),
        "ttft_error": relative_error(sim.summary["ttft_mean"], measured["ttft_mean"]),
        "throughput_error": relative_error(
            sim.summary["throughput_tokens_per_s"], measured["throughput_tokens_per_s"]
        ),
        "chain_agreement": agreement,
        "noise_floor": (max(tpots) - min(tpots)) / measured["tpot_mean"],
        "real_runs": len(reals),
        "measured_tpot_ms": measured["tpot_mean"] * 1e3,
        "predicted_tpot_ms": sim.summary["tpot_mean"] * 1e3,
        "rounds_per_request": {
            "sim": len(sim.rounds) / len(sim.requests),
            "real": len(real_a.rounds) / len(real_a.requests),
        },
        "load_before": load_before,
        "load_after": load_average(),
        "table": format_table(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ladder", default=None, help="ladder directory (default: the embedded ladder)")
    parser.add_argument(
        "--policy", action="append", help=f"policy (repeatable; default {', '.join(POLICIES)})"
    )
    parser.add_argument(
        "--max-batch", type=int, action="append", help="engine slots (repeatable; default 1, 4, 8)"
    )
    parser.add_argument("--quick", action="store_true", help="one cell: static:0>2:4 at --max-batch 4")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=48)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="Poisson arrivals per second (0: all at once)"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="real runs per cell around the simulation (default 2: A, B)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device of the real runs and the profile")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch's default; 1 on a shared machine)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench-fidelity"))
    args = parser.parse_args()
    if args.repeats < 2:
        raise SystemExit("bench/fidelity.py: --repeats must be >= 2 (the noise floor needs two real runs)")

    import torch

    from backend.ladder import load_ladder
    from backend.zoo import default_ladder_dir

    if args.threads:
        torch.set_num_threads(args.threads)

    policies, batches = (
        QUICK if args.quick else (tuple(args.policy or POLICIES), tuple(args.max_batch or BATCHES))
    )
    ladder_dir = Path(args.ladder) if args.ladder else default_ladder_dir()
    if not (ladder_dir / "ladder.json").exists():
        raise SystemExit(f"no ladder at {ladder_dir}: build it with `specrouter zoo build` or pass --ladder")
    if args.out.exists():
        shutil.rmtree(args.out)  # a benchmark measures afresh: nothing is reused
    started = time.perf_counter()
    load_start = load_average()
    print(f"load average before: {load_start} ({os.cpu_count()} CPUs)", flush=True)
    ladder = load_ladder(ladder_dir, device=args.device)
    profile_config = ValidateConfig(
        str(ladder_dir), policies[0], str(args.out), None, True, args.requests, args.prompt_tokens,
        args.output_tokens, args.rate, max(batches), args.seed, args.device,
    )  # fmt: skip
    profile = ensure_profile(profile_config, ladder, print)
    cells = []
    for max_batch in batches:
        for policy in policies:
            cell = run_cell(ladder, ladder_dir, profile, policy, max_batch, args)
            load = f"load {cell['load_before']} -> {cell['load_after']}"
            print(f"\n== {policy} at --max-batch {max_batch} ({load})")
            print(cell.pop("table"))
            predicted, measured = cell["predicted_tpot_ms"], cell["measured_tpot_ms"]
            print(
                f"mean TPOT predicted {predicted:.2f} ms vs measured {measured:.2f} ms "
                f"({cell['mean_tpot_error']:+.1%}), noise floor {cell['noise_floor']:.1%}",
                flush=True,
            )
            cells.append(cell)
    goals: dict[str, dict[str, Any]] = {}
    for cell in cells:
        goals.update(cell_goals(cell))
    print(
        json.dumps(
            {
                "goals": goals,
                "cells": cells,
                "requests": args.requests,
                "output_tokens": args.output_tokens,
                "ladder": str(ladder_dir),
                "load_average": {"start": load_start, "end": load_average()},
                "torch_threads": torch.get_num_threads(),
                "wall_s": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
