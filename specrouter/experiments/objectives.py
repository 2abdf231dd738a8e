"""Objectives the search can score a trial with: ``(policy, params, scenario, seed, options) -> metric``.

* :func:`scenario_metric` -- run the policy on a shipped scenario in the simulator
  (:func:`specrouter.scenarios.run_scenario`) and return a metric of the run (mean TPOT
  by default; ``options["metric"]`` picks any :func:`traces.summary.summarize` key).
* :func:`plan_metric` -- a tiny, fast world for tests and smoke runs: requests decoded one
  after another by executing the round plan (:mod:`policies.plan`) with i.i.d. acceptance
  and fixed pass times.  Returns ms per output token.  Scenarios: ``plan-stationary`` and
  ``plan-weak-middle`` (the middle model's acceptance to the target is poor).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policies.contract import LadderInfo, LevelFeedback, PassTiming, Policy, RoundFeedback, RouteView
from policies.plan import Call, Verify, drive
from specrouter.experiments.policies import make_policy

PLAN_PASS_MS = (0.35, 1.1, 5.5, 42.0)
PLAN_EXTRA_POSITION_MS = (0.005, 0.02, 0.08, 0.6)
PLAN_ALPHA: dict[str, dict[tuple[int, int], float]] = {
    "plan-stationary": {(0, 1): 0.75, (0, 2): 0.65, (0, 3): 0.6, (1, 2): 0.8, (1, 3): 0.72, (2, 3): 0.85},
    "plan-weak-middle": {(0, 1): 0.75, (0, 2): 0.3, (0, 3): 0.6, (1, 2): 0.3, (1, 3): 0.72, (2, 3): 0.3},
}


def scenario_metric(
    policy: str, params: dict[str, Any], scenario: str, seed: int, options: dict[str, Any]
) -> float:
    """The policy's ``options["metric"]`` (default ``tpot_mean``, seconds) on a shipped scenario.

    ``options["requests"]`` keeps the first requests of the scenario's trace (default 400).
    """
    from specrouter.scenarios import run_scenario

    metric = str(options.get("metric", "tpot_mean"))
    limit = int(options.get("requests", 400))
    result = run_scenario(scenario, lambda truth: make_policy(policy, params, truth), limit=limit, seed=seed)
    if metric not in result.summary:
        raise ValueError(f"unknown metric {metric!r}: choose one of {', '.join(sorted(result.summary))}")
    return float(result.summary[metric])


def plan_metric(
    policy: str, params: dict[str, Any], scenario: str, seed: int, options: dict[str, Any]
) -> float:
    """Milliseconds per output token of ``policy`` in the plan world (module doc)."""
    if scenario not in PLAN_ALPHA:
        raise ValueError(f"unknown plan-world scenario {scenario!r}: choose one of {', '.join(PLAN_ALPHA)}")
    return plan_world_tpot(
        make_policy(policy, params),
        PLAN_ALPHA[scenario],
        int(options.get("requests", 8)),
        int(options.get("output_tokens", 64)),
        seed,
    )


def plan_world_tpot(
    policy: Policy, alpha: dict[tuple[int, int], float], requests: int, output_tokens: int, seed: int
) -> float:
    """Decode ``requests`` requests one after another through the round plan; ms per token."""
    rng = np.random.default_rng(seed)
    ladder = LadderInfo(("68M", "1B", "8B", "70B"))
    idle = (0,) * ladder.size
    clock = 0.0
    for rid in range(requests):
        generated = 0
        while generated < output_tokens:
            view = RouteView(rid, 64, generated, output_tokens, None, clock, ladder, idle, idle)
            route = policy.route(view)
            started = clock

            def answer(call: Call, chain: tuple[int, ...] = route.chain) -> int | None:
                if not isinstance(call, Verify):
                    return None
                if call.candidates == 0:
                    return 0
                a = alpha[(chain[call.level - 1], call.model)]
                return int(min(call.candidates, rng.geometric(1.0 - a) - 1)) if a < 1 else call.candidates

            calls, counts = drive(route, output_tokens - generated, answer)
            passes: list[list[PassTiming]] = [[] for _ in route.chain]
            for call in calls:
                positions = call.candidates + 1 if isinstance(call, Verify) else 1
                ms = PLAN_PASS_MS[call.model] + PLAN_EXTRA_POSITION_MS[call.model] * (positions - 1)
                passes[call.level].append(PassTiming(call.model, positions, 1, ms / 1e3))
                clock += ms / 1e3
            generated += counts.emitted[-1]
            levels = tuple(
                LevelFeedback(m, counts.proposed[j], counts.accepted[j], counts.emitted[j], tuple(passes[j]))
                for j, m in enumerate(route.chain)
            )
            done = generated >= output_tokens
            policy.observe(RoundFeedback(rid, None, route, started, clock, levels, (), done))
    return clock * 1e3 / (requests * output_tokens)
