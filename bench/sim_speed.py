"""Simulator speed: replay the Azure 2023 conversation trace with speculation in every round.

    python3 bench/sim_speed.py            # full trace: 19,366 requests, ~1.4M rounds
    python3 bench/sim_speed.py --quick    # the first 2,000 requests

Llama-style 4-model preset (roofline latency, 5% noise, correlated acceptance), one
static 3-level chain ``0>2>3`` (lookaheads 4, 1) and then the adaptive SpecRouter policy
(``--policies`` to change).  Per-round records are off (requests are recorded); the goal
is >= 2,000 simulated requests per wall second with the static chain and >= 1,000 with
the adaptive policy, on one core.  ``cpu_s`` / ``req_per_cpu_s`` (process CPU time) are
the fair figures when other jobs share the machine.  The last line is one JSON object (the first policy's
figures at top level, every policy under ``"policies"``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tqdm import tqdm

from policies.registry import make_policy
from sim.engine import Simulation
from sim.presets import preset
from sim.scenario import Scenario
from sim.world import World
from traces.loaders import load_trace

TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"
DEFAULT_POLICIES = ("static:0>2>3:4,1", "specrouter")


def replay(policy_name: str, trace: Path, limit: int | None, seed: int) -> dict[str, float | int | str]:
    requests = list(load_trace(trace, limit=limit) if limit else load_trace(trace))
    world = World(preset("llama"), Scenario(seed=seed, noise_sigma=0.05, correlation=0.5))
    policy = make_policy(policy_name, world=world.truth)
    with tqdm(total=len(requests), desc=policy_name, unit="req", mininterval=1.0) as bar:
        sim = Simulation(world, policy, record_rounds=False, progress=bar.update)
        started, cpu_started = time.perf_counter(), time.process_time()
        result = sim.run(requests)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "policy": policy_name,
        "requests": len(result.requests),
        "wall_s": round(wall, 3),
        "req_per_s": round(len(result.requests) / wall, 1),
        "rounds": result.rounds_total,
        "rounds_per_s": round(result.rounds_total / wall, 1),
        "cpu_s": round(cpu, 3),  # this process's CPU time: the fair figure on a shared machine
        "req_per_cpu_s": round(len(result.requests) / cpu, 1),
        "tokens": result.tokens_total,
        "simulated_s": round(result.sim_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="replay the first 2,000 requests only")
    parser.add_argument("--trace", type=Path, default=TRACE, help="Azure 2023 CSV (default: the conv trace)")
    parser.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES), help="registry policy names")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    figures = []
    for name in args.policies:
        figures.append(replay(name, args.trace, 2000 if args.quick else None, args.seed))
        print(json.dumps(figures[-1]), flush=True)
    print(json.dumps({**{k: v for k, v in figures[0].items() if k != "policy"}, "policies": figures}))


if __name__ == "__main__":
    main()
