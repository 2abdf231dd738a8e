"""Routing quality of every policy on every shipped scenario, and SpecRouter's own cost.

    python3 bench/policy_quality.py [--quick] [--limit N] [--scenarios a,b] [--out results.json]

For each scenario (``specrouter/scenarios/*.json``: Azure 2023 code trace arrivals on the
Llama-style 68M/1B/8B/70B preset) it runs target-only, every static chain with lookaheads
tuned by the oracle's planner at the scenario's start, the two-level dynamic-lookahead
heuristic (drafter of the best two-level static chain), the discounted-UCB chain bandit,
SpecRouter and the oracle, and reports per policy the mean and p99 TPOT and the ratios to
the oracle and to the best static chain (in hindsight: the static with the lowest mean
TPOT in that scenario).  ``load_ramp`` also reports the saturated phase (requests arriving
in the last quarter) against target-only.

It then times SpecRouter's ``route()`` + ``observe()`` on a synthetic 5-model ladder
(policies.synthetic, TV samples for every chain pair), amortised over all rounds
including re-plans, and the cost of one full re-plan (see :func:`policy_cost`).

The last line printed is one JSON object with all figures and the goal checks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policies.baselines import TargetOnly  # noqa: E402
from policies.contract import RoundFeedback, Route, RouteView  # noqa: E402
from policies.specrouter_policy import SpecRouter  # noqa: E402
from policies.synthetic import SyntheticWorld, linear_pass_time, matrix_alpha  # noqa: E402
from specrouter.scenarios import run_scenario, scenario_names, tuned_static_specs  # noqa: E402

NON_STATIONARY = ("domain_shift", "slowdown", "load_ramp", "useless_middle")


def tpot_of(records: list[Any], since: float = -1.0) -> np.ndarray:
    values = [
        (r.finish - r.first_token) / (r.output_tokens - 1)
        for r in records
        if r.output_tokens > 1 and r.arrival >= since
    ]
    return np.array(values)


def run_one(scenario: str, spec: str, limit: int | None) -> dict[str, Any]:
    result = run_scenario(scenario, spec, limit=limit, progress=True)
    row: dict[str, Any] = {
        "tpot_mean_ms": result.summary["tpot_mean"] * 1e3,
        "tpot_p99_ms": result.summary["tpot_p99"] * 1e3,
        "rounds": result.rounds,
        "wall_s": round(result.wall_seconds, 2),
    }
    if scenario == "load_ramp":
        arrivals = [r.arrival for r in result.requests]
        saturated = tpot_of(result.requests, since=float(np.percentile(arrivals, 75)))
        row["saturated_tpot_mean_ms"] = float(saturated.mean()) * 1e3
    replans = getattr(result.policy_object, "replans", None)
    if replans is not None:
        row["replans"] = replans
    return row


def quality(scenarios: list[str], limit: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scenario in scenarios:
        statics = tuned_static_specs(scenario, limit)
        two_level = [s for s in statics if s.count(">") == 1]
        drafter = two_level[0].split(":")[1].split(">")[0] if two_level else "0"
        specs = ["target-only", *statics, f"dynamic-lookahead:{drafter}", "bandit", "specrouter", "oracle"]
        rows = {}
        for spec in specs:
            rows[spec] = run_one(scenario, spec, limit)
            print(f"{scenario:15s} {spec:28s} tpot mean {rows[spec]['tpot_mean_ms']:9.2f} ms", flush=True)
        best_static = min(statics, key=lambda s: rows[s]["tpot_mean_ms"])
        oracle = rows["oracle"]["tpot_mean_ms"]
        for row in rows.values():
            row["ratio_to_oracle"] = row["tpot_mean_ms"] / oracle
            row["ratio_to_best_static"] = row["tpot_mean_ms"] / rows[best_static]["tpot_mean_ms"]
        out[scenario] = {"best_static": best_static, "policies": rows}
    return out


def goals(results: dict[str, Any]) -> dict[str, Any]:
    checks: dict[str, Any] = {}

    def row(scenario: str, spec: str) -> dict[str, Any]:
        return results[scenario]["policies"][spec]

    if "stationary" in results:
        ratio = row("stationary", "specrouter")["ratio_to_oracle"]
        checks["stationary_within_5pct_of_oracle"] = {"ratio": ratio, "met": ratio <= 1.05}
    for scenario in ("domain_shift", "slowdown"):
        if scenario in results:
            ratio = row(scenario, "specrouter")["ratio_to_best_static"]
            checks[f"{scenario}_15pct_better_than_best_static"] = {"ratio": ratio, "met": ratio <= 0.85}
    if "load_ramp" in results:
        ours = row("load_ramp", "specrouter")["saturated_tpot_mean_ms"]
        plain = row("load_ramp", "target-only")["saturated_tpot_mean_ms"]
        checks["saturation_at_most_3pct_worse_than_target_only"] = {
            "ratio": ours / plain,
            "met": ours <= 1.03 * plain,
        }
    for scenario in NON_STATIONARY:
        if scenario in results:
            ours, bandit = (
                row(scenario, "specrouter")["tpot_mean_ms"],
                row(scenario, "bandit")["tpot_mean_ms"],
            )
            checks[f"{scenario}_better_than_bandit"] = {"ratio": ours / bandit, "met": ours < bandit}
    return checks


class Recorder:
    """Wraps a policy, timing its route() and observe() calls and recording the stream."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.name = policy.name
        self.seconds = 0.0
        self.rounds = 0
        self.stream: list[tuple[bool, Any]] = []

    def route(self, view: RouteView) -> Route:
        started = time.process_time()
        route = self.policy.route(view)
        self.seconds += time.process_time() - started
        self.stream.append((True, view))
        return route

    def observe(self, feedback: RoundFeedback) -> None:
        started = time.process_time()
        self.policy.observe(feedback)
        self.seconds += time.process_time() - started
        self.rounds += 1
        self.stream.append((False, feedback))


def replay_seconds(policy: Any, stream: list[tuple[bool, Any]]) -> float:
    route, observe = policy.route, policy.observe
    started = time.process_time()
    for is_view, item in stream:
        if is_view:
            route(item)
        else:
            observe(item)
    return time.process_time() - started


def policy_cost(requests: int, repeats: int = 5) -> dict[str, Any]:
    """µs per round of route()+observe() on a 5-model ladder, and ms per full re-plan.

    ``live_us_per_round`` is measured while the policy routes a synthetic world (its
    learning phase included); ``us_per_round`` replays the recorded stream of views and
    feedback through fresh policies ``repeats`` times and keeps the fastest (the minimum
    is robust to other load on a shared machine).  ``target_only_us_per_round`` replays
    the same stream through the trivial policy: the floor of the measurement.
    ``replan_ms`` is the fastest of ``10 * repeats`` full re-plans of a trained policy.
    All times are process CPU time (``time.process_time``), so other jobs on a shared
    machine inflate them less than wall time would.
    """
    alpha = [
        [1, 0.8, 0.72, 0.66, 0.6],
        [1, 1, 0.8, 0.74, 0.68],
        [1, 1, 1, 0.82, 0.75],
        [1, 1, 1, 1, 0.86],
        [1, 1, 1, 1, 1],
    ]
    timing = linear_pass_time((0.0002, 0.0006, 0.0012, 0.005, 0.02), (2e-6, 5e-6, 1e-5, 5e-5, 2e-4))
    world = SyntheticWorld(5, matrix_alpha(alpha), timing, seed=0)
    recorder = Recorder(SpecRouter())
    world.run(recorder, requests)  # type: ignore[arg-type]
    rounds = recorder.rounds
    replays = [replay_seconds(SpecRouter(), recorder.stream) for _ in range(repeats)]
    floor = min(replay_seconds(TargetOnly(), recorder.stream) for _ in range(repeats))
    trained = recorder.policy
    state = next(iter(trained._domains.values()))
    replans = []
    for _ in range(10 * repeats):
        started = time.process_time()
        trained._replan(state)
        replans.append(time.process_time() - started)
    return {
        "ladder_models": 5,
        "rounds": rounds,
        "us_per_round": min(replays) / rounds * 1e6,
        "us_per_round_median_replay": float(np.median(replays)) / rounds * 1e6,
        "live_us_per_round": recorder.seconds / rounds * 1e6,
        "target_only_us_per_round": floor / rounds * 1e6,
        "replans_in_stream": recorder.policy.replans - 10 * repeats,
        "replan_ms": min(replans) * 1e3,
        "replan_share_us_per_round": (recorder.policy.replans - 10 * repeats)
        * float(np.median(replans))
        / rounds
        * 1e6,
        "goal_us_per_round": 5.0,
        "goal_replan_ms": 1.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="first 800 requests of the trace per scenario")
    parser.add_argument("--limit", type=int, default=None, help="first N requests (default: the whole trace)")
    parser.add_argument("--scenarios", default=",".join(scenario_names()), help="comma-separated names")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    limit = args.limit if args.limit is not None else (800 if args.quick else None)
    started = time.perf_counter()
    results = quality([s for s in args.scenarios.split(",") if s], limit)
    cost = policy_cost(150 if args.quick else 1000)
    report = {
        "bench": "policy_quality",
        "limit": limit,
        "results": results,
        "goals": goals(results),
        "policy_cost": cost,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
