"""Objectives the search can score a trial with: ``(policy, params, scenario, seed, options) -> metric``.

* :func:`scenario_metric` -- run the policy on a shipped scenario in the simulator
  (:func:`specrouter.experiments.runs.run_simulated`) and return a metric of the run (mean
  TPOT by default; ``options["metric"]`` picks any :func:`traces.summary.summarize` key).
* :func:`plan_metric` -- a tiny, fast world for tests and smoke runs: requests served one
  after another by the shared serving loop (:mod:`policies.serving`) with i.i.d. acceptance
  and fixed pass times (prefill and catch-up priced by the positions fed).  Returns ms per
  output token.  Scenarios: ``plan-stationary`` and ``plan-weak-middle`` (the middle model's
  acceptance to the target is poor).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policies.contract import LadderInfo, Policy, WorldTruth
from policies.registry import make_policy
from policies.serving import Pass, ServingConfig, serve
from traces.request import Request

PLAN_PROMPT_TOKENS = 64
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
    from specrouter.experiments.runs import RecordSink, run_simulated, shipped_scenario

    metric = str(options.get("metric", "tpot_mean"))
    world, requests = shipped_scenario(scenario, int(options.get("requests", 400)), seed)

    def trial_policy(truth: WorldTruth | None) -> Policy:
        return make_policy(policy, world=truth, **params)

    result = run_simulated(world, trial_policy, requests, RecordSink(record_rounds=False))
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
        make_policy(policy, **params),
        PLAN_ALPHA[scenario],
        int(options.get("requests", 8)),
        int(options.get("output_tokens", 64)),
        seed,
    )


def plan_world_tpot(
    policy: Policy, alpha: dict[tuple[int, int], float], requests: int, output_tokens: int, seed: int
) -> float:
    """Serve ``requests`` requests one after another through the shared serving loop; ms per token.

    The loop (:func:`policies.serving.serve`, one slot) forms every pass as in both worlds; this
    world charges ``PLAN_PASS_MS[m] + PLAN_EXTRA_POSITION_MS[m] * (width - 1)`` per pass and
    accepts each candidate with the pair's ``alpha`` (i.i.d., stop at the first rejection).
    """
    rng = np.random.default_rng(seed)
    ladder = LadderInfo(("68M", "1B", "8B", "70B"))
    workload = [Request(rid, 0.0, PLAN_PROMPT_TOKENS, output_tokens) for rid in range(requests)]
    loop = serve(workload, policy, ladder, ServingConfig(slots=1))
    clock = 0.0
    try:
        action = next(loop)
        while True:
            if isinstance(action, Pass):
                for index, slot in enumerate(action.rows):
                    candidates = slot.call_candidates
                    if candidates > 0:
                        a = alpha[(slot.chain[slot.call_level - 1], action.model)]
                        accepted = rng.geometric(1.0 - a) - 1 if a < 1 else candidates
                        action.accepted[index] = int(min(candidates, accepted))
                model = action.model
                ms = PLAN_PASS_MS[model] + PLAN_EXTRA_POSITION_MS[model] * (action.width - 1)
                action.seconds = ms / 1e3
                clock += action.seconds
            action = loop.send(clock)
    except StopIteration:
        pass
    return clock * 1e3 / (requests * output_tokens)
