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
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def run_script(root: Path, args: argparse.Namespace, policy: str) -> dict[str, Any]:
    """This benchmark's own figures for ``policy``, measured by the copy of it under ``root``."""
    command = [
        sys.executable,
        str(root / "bench" / "sim_speed.py"),
        "--policies",
        policy,
        "--seed",
        str(args.seed),
    ]
    command += ["--trace", str(args.trace)] + (["--quick"] if args.quick else [])
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"sim_speed at {root} failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1])["policies"][0])


def imported_root(root: Path) -> str:
    """Where a child process started like :func:`run_script` imports the simulator from."""
    probe = [sys.executable, "-c", "import pathlib, sim; print(pathlib.Path(sim.__file__).parent.parent)"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(probe, cwd=root, env=env, capture_output=True, text=True, check=True).stdout.strip()


def against(args: argparse.Namespace) -> None:
    """Run ``--against REV`` from a temporary worktree and this tree, alternately, per policy."""
    here = Path(__file__).resolve().parents[1]
    commit = subprocess.run(
        ["git", "-C", str(here), "rev-parse", "--short", args.against],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="sim-speed-") as scratch:
        tree = Path(scratch) / commit
        subprocess.run(["git", "-C", str(here), "worktree", "add", "--detach", str(tree), commit], check=True,
                       capture_output=True)  # fmt: skip
        try:
            if Path(imported_root(tree)) != tree:
                raise SystemExit(f"the worktree at {tree} does not import its own simulator")
            rows = []
            for policy in args.policies:
                old = run_script(tree, args, policy)
                new = run_script(here, args, policy)
                ratio = new["req_per_cpu_s"] / old["req_per_cpu_s"]
                rows.append(
                    {"policy": policy, "against": old, "this": new, "ratio_per_cpu_s": round(ratio, 2)}
                )
                print(
                    f"{policy}: {new['req_per_cpu_s']} vs {old['req_per_cpu_s']} req per CPU-s at {commit} "
                    f"({ratio:.2f}x)",
                    flush=True,
                )
        finally:
            subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force", str(tree)], check=False)
    targets = {"static": 3.0, "specrouter": 6.0}
    goals = {}
    for row in rows:
        kind = "specrouter" if row["policy"].startswith("specrouter") else "static"
        goals[f"{row['policy']} speed-up vs {commit}"] = {
            "value": row["ratio_per_cpu_s"],
            "target": f">= {targets[kind]}",
            "met": row["ratio_per_cpu_s"] >= targets[kind],
        }
    print(json.dumps({"goals": goals, "against": commit, "load_average": os.getloadavg()[0], "rows": rows}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="replay the first 2,000 requests only")
    parser.add_argument("--trace", type=Path, default=TRACE, help="Azure 2023 CSV (default: the conv trace)")
    parser.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES), help="registry policy names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--against", metavar="REV", help="also run git revision REV (temporary worktree) and print the ratios"
    )
    args = parser.parse_args()
    if not args.trace.exists():
        raise SystemExit(
            f"trace {args.trace} not found: pass --trace (the full Azure conv trace is in ../shared)"
        )
    if args.against:
        against(args)
        return
    figures = []
    for name in args.policies:
        figures.append(replay(name, args.trace, 2000 if args.quick else None, args.seed))
        print(json.dumps(figures[-1]), flush=True)
    goals = {
        f"{f['policy']} req_per_cpu_s": {
            "value": f["req_per_cpu_s"],
            "target": ">= 1000" if f["policy"].startswith(("specrouter", "bandit")) else ">= 2000",
            "met": f["req_per_cpu_s"] >= (1000 if f["policy"].startswith(("specrouter", "bandit")) else 2000),
        }
        for f in figures
    }
    summary = {k: v for k, v in figures[0].items() if k != "policy"}
    print(json.dumps({"goals": goals, **summary, "policies": figures, "load_average": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
