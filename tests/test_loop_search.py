"""The policy search: deterministic across pools and interruptions, resumable from its storage."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from policies.registry import PolicySpecError, check_spec, make_policy
from specrouter.experiments.pools import LocalPool, make_pool
from specrouter.experiments.search import (
    Knob,
    SearchConfig,
    default_knobs,
    evaluate_trial,
    parse_knob,
    run_search,
)

PLAN = "specrouter.experiments.objectives:plan_metric"
INTERRUPT_AFTER: dict[str, int] = {}


def config(trials: int = 6, seed: int = 3, evaluator: str = PLAN) -> SearchConfig:
    return SearchConfig(
        policy="dynamic-lookahead",
        knobs=(Knob("initial", 1, 8, integer=True), Knob("maximum", 8, 24, integer=True)),
        scenarios=("plan-stationary", "plan-weak-middle"),
        trials=trials,
        seed=seed,
        seeds=(0, 1),
        batch_size=2,
        evaluator=evaluator,
        options={"requests": 3, "output_tokens": 24},
    )


def interrupting_metric(policy: str, params: dict, scenario: str, seed: int, options: dict) -> float:
    """The plan metric, but raises KeyboardInterrupt once a set number of evaluations ran."""
    from specrouter.experiments.objectives import plan_metric

    if "left" in INTERRUPT_AFTER:
        INTERRUPT_AFTER["left"] -= 1
        if INTERRUPT_AFTER["left"] < 0:
            del INTERRUPT_AFTER["left"]
            raise KeyboardInterrupt
    return plan_metric(policy, params, scenario, seed, options)


def values(result) -> list[tuple[int, dict, float | None]]:
    return [(row["number"], row["params"], row["value"]) for row in result.trials]


def test_knob_specs_parse_and_reject_bad_input() -> None:
    assert parse_knob("ema=0.01:0.5:log") == Knob("ema", 0.01, 0.5, log=True)
    assert parse_knob("lookahead=2:8:int") == Knob("lookahead", 2, 8, integer=True)
    for bad in ("ema", "ema=0.5", "ema=a:b", "ema=0.5:0.1", "ema=0:1:log", "ema=0:1:cube"):
        with pytest.raises(ValueError, match="knob"):
            parse_knob(bad)


def test_policy_names_resolve_or_say_what_exists() -> None:
    route = make_policy("static:0>2>3:3,2").route(_view())
    assert (route.chain, route.lookaheads) == ((0, 2, 3), (3, 2))
    tuned = make_policy("dynamic-lookahead", initial=3, maximum=9)
    assert tuned.route(_view()).lookaheads == (3,)
    assert default_knobs("specrouter") and default_knobs("specrouter:hysteresis=0.1") == default_knobs(
        "specrouter"
    )
    with pytest.raises(PolicySpecError, match="known: target-only"):
        check_spec("no-such-policy")
    with pytest.raises(PolicySpecError, match="unknown knob 'bogus'"):
        make_policy("specrouter", bogus=1)
    with pytest.raises(PolicySpecError, match="maximum=0.*out of range"):
        make_policy("dynamic-lookahead", maximum=0)  # ill-typed or out of range: refused before a run
    with pytest.raises(PolicySpecError, match="simulator"):
        check_spec("oracle", simulated=False)
    check_spec("oracle")  # the simulator builds it once the world's truth exists


def _view():
    from policies.contract import LadderInfo, RouteView

    return RouteView(0, 1, 0, 8, None, 0.0, LadderInfo(("a", "b", "c", "d")), (0,) * 4, (0,) * 4)


def test_a_failing_trial_is_recorded_not_fatal() -> None:
    from specrouter.experiments.search import TrialTask

    bad = TrialTask(
        0, "dynamic-lookahead", {"initial": 9, "maximum": 2}, ("plan-stationary",), (0,), PLAN, {}
    )
    outcome = evaluate_trial(bad)
    assert outcome.value is None and "initial <= maximum" in outcome.error
    good = evaluate_trial(bad._replace(params={"initial": 2, "maximum": 8}, seeds=(0, 1)))
    assert good.value is not None and len(good.runs) == 2
    assert good.value == pytest.approx(math.sqrt(math.prod(good.runs.values())), rel=1e-12)  # geometric mean


def test_same_seed_same_trials_inline_and_on_a_process_pool() -> None:
    inline = run_search(config(), LocalPool(1))
    pool = LocalPool(2)
    try:
        pooled = run_search(config(), pool)
    finally:
        pool.close()
    assert values(inline) == values(pooled)
    assert len({json.dumps(p, sort_keys=True) for _, p, _ in values(inline)}) > 1  # it explores
    other_seed = run_search(config(seed=4), LocalPool(1))
    assert values(other_seed) != values(inline)


def test_interrupted_search_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    uninterrupted = run_search(config(), LocalPool(1))
    storage = tmp_path / "study.journal"
    # one batch and one evaluation of the next, then Ctrl-C: trial 2 is left RUNNING
    INTERRUPT_AFTER["left"] = 2 * 4 + 1
    with pytest.raises(KeyboardInterrupt):
        run_search(config(evaluator="test_loop_search:interrupting_metric"), LocalPool(1), storage)
    resumed = run_search(config(evaluator="test_loop_search:interrupting_metric"), LocalPool(1), storage)
    assert resumed.resumed_trials == 2
    assert values(resumed) == values(uninterrupted)
    # asking for more trials continues the same study; a different search is refused
    longer = run_search(
        config(trials=8, evaluator="test_loop_search:interrupting_metric"), LocalPool(1), storage
    )
    assert values(longer)[:6] == values(uninterrupted) and len(longer.trials) == 8
    with pytest.raises(ValueError, match="different search.*seed"):
        run_search(config(seed=9, evaluator="test_loop_search:interrupting_metric"), LocalPool(1), storage)


@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="ray is not installed: pip install -e '.[ray]'"
)
def test_the_ray_pool_gives_the_same_trials_as_the_local_pool() -> None:
    local = run_search(config(trials=4), LocalPool(1))
    ray_pool = make_pool("ray", workers=2)
    try:
        assert ray_pool.workers == 2
        on_ray = run_search(config(trials=4), ray_pool)
    finally:
        ray_pool.close()
    assert values(on_ray) == values(local)


def test_the_simulator_objective_scores_specrouter_knobs_on_a_scenario() -> None:
    search = SearchConfig(
        policy="specrouter",
        knobs=(Knob("hysteresis", 0.0, 0.2), Knob("max_lookahead", 2, 6, integer=True)),
        scenarios=("stationary",),
        trials=2,
        batch_size=2,
        options={"requests": 30},
    )
    result = run_search(search, LocalPool(1))
    assert [row["state"] for row in result.trials] == ["COMPLETE", "COMPLETE"]
    runs = [row["runs"]["stationary/0"] for row in result.trials]
    # each trial's value is the mean TPOT of that trial's knobs on the scenario, recomputed here
    # from the simulated request records: (finish - first token) / (output tokens - 1)
    recomputed = [independent_tpot_mean(row["params"]) for row in result.trials]
    assert runs == pytest.approx(recomputed, rel=1e-9)
    assert [row["value"] for row in result.trials] == pytest.approx(runs, rel=1e-12)  # one scenario x seed
    # the knobs reach the policy: through the same objective, far-apart knobs give different TPOT
    # (the two sampled trials may land on knobs that route alike)
    from specrouter.experiments.search import TrialTask

    def scored(params: dict) -> float | None:
        task = TrialTask(0, "specrouter", params, ("stationary",), (0,), search.evaluator, search.options)
        return evaluate_trial(task).value

    assert scored({"hysteresis": 0.0, "max_lookahead": 1}) != scored({"hysteresis": 0.1, "max_lookahead": 6})
    assert result.best_value == pytest.approx(min(runs), rel=1e-12)  # exp(mean(log)) of one value


def independent_tpot_mean(params: dict) -> float:
    from specrouter.scenarios import run_scenario

    result = run_scenario(
        "stationary", lambda truth: make_policy("specrouter", world=truth, **params), limit=30, seed=0
    )
    tpots = [
        (r.finish - r.first_token) / (r.output_tokens - 1) for r in result.requests if r.output_tokens > 1
    ]
    assert len(tpots) >= 20
    return sum(tpots) / len(tpots)
