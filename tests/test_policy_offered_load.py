"""Pricing routes in the load arrivals are heading for (``SpecRouter(offered_load=True)``).

While arrivals ramp up, the committed-token rate ``Lambda`` lags the demand: Little's law on it
prices every route at the requests in flight of a few seconds ago.  The demand is known at
admission (each request's ``max_new_tokens``), so the tracker keeps the offered token rate beside
the committed one and, when it leads, prices routes at a ``Lambda`` and an in-flight ceiling grown
by the ratio."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from policies.contract import LadderInfo, LevelFeedback, PassTiming, RoundFeedback, Route, RouteView
from policies.cost_model import SystemLoad
from policies.estimators import LoadTracker
from policies.oracle import Oracle
from policies.planner import RoutePlanner
from policies.specrouter_policy import SpecRouter
from policies.synthetic import cube_from

LADDER = LadderInfo(("draft", "target"))
DECODE = (1e-3, 20e-3)


def view(request_id: int, budget: int, generated: int = 0) -> RouteView:
    return RouteView(request_id, 16, generated, budget, None, 0.0, LADDER, (1, 1), (0, 0))


def round_done(request_id: int, finished: float, committed: int) -> RoundFeedback:
    target = LevelFeedback(1, 0, 0, committed, (PassTiming(1, 1, 1, 0.02),))
    route = Route.target_only(1)
    return RoundFeedback(request_id, None, route, finished - 0.02, finished, (target,), (), False)


def fed(
    admit: Callable[[RouteView], object],
    finish: Callable[[RoundFeedback], None],
    budgets_per_second: int,
    committed_per_second: int,
    seconds: int,
) -> None:
    """Admit a request asking for ``budgets_per_second`` tokens each second while the rounds commit
    ``committed_per_second`` (8 rounds a second: the tracker updates its rates every 8 rounds);
    ``admit`` and ``finish`` are a tracker's ``see_view`` / ``see_round`` or a policy's ``route`` /
    ``observe``."""
    for request in range(seconds):
        admit(view(request, budgets_per_second))
        for k in range(8):
            finish(round_done(request, request + (k + 1) / 8, committed_per_second // 8))


def test_the_offered_rate_is_the_admitted_budgets_per_second() -> None:
    tracker = LoadTracker(2)
    fed(tracker.see_view, tracker.see_round, budgets_per_second=400, committed_per_second=200, seconds=60)
    assert tracker.offered_rate == pytest.approx(400, rel=0.02)
    assert tracker.token_rate == pytest.approx(200, rel=0.02)
    tracker.see_view(view(99, 10_000, generated=5))  # a later round of a request: no new demand
    assert tracker.offered_rate == pytest.approx(400, rel=0.02)


def test_a_leading_demand_grows_the_rate_and_the_ceiling_of_the_requests_in_flight() -> None:
    tracker = LoadTracker(2)
    fed(tracker.see_view, tracker.see_round, budgets_per_second=400, committed_per_second=200, seconds=60)
    carried = tracker.system_load(3)
    heading = tracker.system_load(3, offered=True)
    growth = tracker.offered_rate / tracker.token_rate
    assert heading.token_rate == pytest.approx(carried.token_rate * growth)
    assert heading.max_in_flight == pytest.approx(max(carried.max_in_flight, carried.in_flight * growth))
    assert heading.batch_sizes == carried.batch_sizes and heading.in_flight == carried.in_flight


def test_a_demand_that_is_met_changes_nothing() -> None:
    tracker = LoadTracker(2)
    fed(
        tracker.see_view, tracker.see_round, budgets_per_second=200, committed_per_second=400, seconds=60
    )  # budgets cut short
    assert tracker.system_load(3, offered=True) == tracker.system_load(3)


def roofline(model: int, positions: int, width: float) -> float:
    """Flat while the weights stream, then compute-bound from 64 positions on."""
    return DECODE[model] * max(1.0, positions * width / 64)


def test_speculation_shortens_and_switches_off_as_the_demand_leads() -> None:
    """At 20 requests in flight a drafter's long verifies are nearly free and win; priced at the
    load a demand 2x, 4x, 8x the committed rate heads for, the verifies turn compute-bound: the
    lookahead shortens, then plain decoding wins."""
    planner = RoutePlanner(2)
    alpha = np.array([[1.0, 0.8], [1.0, 1.0]])
    cube = cube_from(roofline, 2, planner.columns)
    table = cube.read(np.array([0, 1]), np.array([20.0, 20.0]), planner.columns)

    def best(growth: float) -> Route:
        load = SystemLoad((20.0, 20.0), 20.0, caps=(256.0, 256.0), iterations=3,
                          token_rate=800.0 * growth, max_in_flight=20.0 * growth)  # fmt: skip
        plans = planner.plan_chains(alpha, table, None, load, cube)
        return min(plans, key=lambda p: p.t_eff).route

    routes = [best(growth) for growth in (1.0, 2.0, 4.0, 8.0)]
    assert [r.chain for r in routes[:3]] == [(0, 1)] * 3
    drafted = [r.lookaheads[0] for r in routes[:3]]
    assert drafted[0] >= 4 and drafted[0] > drafted[1] > drafted[2]
    assert routes[3].chain == (1,)


class _TwoModelTruth:
    """A world's truth for the oracle: a fixed acceptance and the decode pass times."""

    def alpha(self, lower: int, upper: int, domain: str | None, now: float) -> float:
        return 0.7

    def pass_time(self, model: int, tokens: int, batch_size: int, now: float) -> float:
        return DECODE[model]


def specrouter(offered_load: bool) -> SpecRouter | Oracle:
    return SpecRouter(offered_load=offered_load)


def oracle(offered_load: bool) -> SpecRouter | Oracle:
    return Oracle(_TwoModelTruth(), offered_load=offered_load)


@pytest.mark.parametrize("build", [specrouter, oracle])
def test_specrouter_and_the_oracle_price_in_the_offered_load_unless_told_not_to(
    build: Callable[[bool], SpecRouter | Oracle],
) -> None:
    """The same stream of admissions and rounds: by default SpecRouter and the truth planner (one
    objective) price at the demand, the ablation (``offered_load=False``) at the committed rate."""
    routers = {flag: build(flag) for flag in (True, False)}
    for router in routers.values():
        fed(router.route, router.observe, budgets_per_second=400, committed_per_second=200, seconds=60)
    heading, carried = routers[True].system_load(), routers[False].system_load()
    assert carried.token_rate == pytest.approx(200, rel=0.02)
    assert heading.token_rate == pytest.approx(400, rel=0.02)
    assert heading.max_in_flight > carried.max_in_flight
