"""Pricing passes over the spread of batch widths (planner.WidthSpread): the tracker's spread, the
cube's expected read, and the convexity it exists for (a mean pass costs more than a pass at the
mean width, so drafts priced at the mean width come out too long)."""

from __future__ import annotations

import numpy as np
import pytest

from policies.contract import LadderInfo, LevelFeedback, PassTiming, RoundFeedback, Route, RouteView
from policies.cost_model import SystemLoad
from policies.estimators import LoadTracker
from policies.planner import PassCube, RoutePlanner, WidthSpread
from policies.specrouter_policy import SpecRouter
from policies.synthetic import cube_from, pass_table_from

DECODE = (0.4, 1.2, 5.0, 40.0)


def roofline(model: int, positions: int, width: float) -> float:
    """Flat while the weights stream, then compute-bound: ``max(decode, 0.1 decode N)``."""
    return max(DECODE[model], 0.1 * DECODE[model] * positions * width)


def test_one_width_has_no_spread_and_a_mix_is_counted_by_share() -> None:
    assert LoadTracker(2).width_spread() is None  # not counting
    tracker = LoadTracker(2, count_widths=True)
    for _ in range(50):
        tracker.see_pass(0, 3)
        tracker.see_pass(1, 3)
    assert tracker.width_spread() is None
    for _ in range(30):
        tracker.see_pass(1, 12)  # model 1: 50 passes at 3, 30 at 12 -> mean 6.375
    spread = tracker.width_spread()
    assert spread is not None
    np.testing.assert_allclose(spread.weights[1, :2], [50 / 80, 30 / 80])
    np.testing.assert_allclose(spread.factors[1, :2], [3 / 6.375, 12 / 6.375])
    assert spread.weights[0] @ spread.factors[0] == pytest.approx(1.0)  # model 0: all at its mean
    assert spread.weights[1] @ spread.factors[1] == pytest.approx(1.0)


def test_a_spread_read_is_the_expected_pass_time_over_the_widths() -> None:
    cube = cube_from(roofline, 4, 6)
    spread = WidthSpread(np.array([[0.5, 1.5]] * 4), np.array([[0.5, 0.5]] * 4))
    spread_cube = PassCube(cube.seconds, spread)
    models, widths = np.array([3, 3]), np.array([8.0, 16.0])
    expected = 0.5 * cube.read(models, widths * 0.5, 6) + 0.5 * cube.read(models, widths * 1.5, 6)
    np.testing.assert_allclose(spread_cube.read(models, widths, 6), expected)
    point = PassCube(cube.seconds, WidthSpread(np.ones((4, 1)), np.ones((4, 1))))
    np.testing.assert_allclose(point.read(models, widths, 6), cube.read(models, widths, 6))
    # convex in the width: the mean pass costs more than the pass at the mean width
    assert (spread_cube.read(models, widths, 6)[:, 1:] >= cube.read(models, widths, 6)[:, 1:]).all()


def test_a_spread_of_widths_shortens_the_drafts_it_prices() -> None:
    """At a mean width where verifying is still nearly free, passes twice as wide are compute-bound:
    priced at the mean width the planner hands the target long verifies; over the spread, shorter."""
    planner = RoutePlanner(4)
    alpha = np.array([[1, 0.7, 0.65, 0.6], [1, 1, 0.8, 0.7], [1, 1, 1, 0.85], [1, 1, 1, 1]])
    cube = cube_from(roofline, 4, planner.columns)
    load = SystemLoad((2.0,) * 4, 2.0, caps=(64.0,) * 4, iterations=3)
    table = pass_table_from(lambda m, n: roofline(m, n, 2.0), 4, planner.columns)
    at_mean = planner.plan(alpha, table, load, cube)
    spread = WidthSpread(np.array([[0.5, 1.5]] * 4), np.array([[0.5, 0.5]] * 4))
    over_spread = planner.plan(alpha, table, load, PassCube(cube.seconds, spread))
    verified = lambda plan: plan.route.lookaheads[-1]  # noqa: E731  # what the target verifies per round
    assert not at_mean.route.is_target_only
    assert verified(over_spread) < verified(at_mean), (at_mean.route, over_spread.route)
    assert over_spread.t_eff > at_mean.t_eff  # and it knows the round costs more


def test_specrouter_prices_over_the_spread_only_when_asked() -> None:
    seen: dict[bool, list[float]] = {}
    for flag in (False, True):
        policy = SpecRouter(width_spread=flag, learn_every=1)
        ladder = LadderInfo(("a", "b"))
        policy.route(RouteView(0, 8, 0, 64, None, 0.0, ladder, (1, 1), (0, 0)))
        for i in range(40):  # passes alternately alone and 8 wide; the target's compute-bound when wide
            width = 1 if i % 2 else 8
            levels = (
                LevelFeedback(0, 2, 0, 0, (PassTiming(0, 1, width, 1e-3),)),
                LevelFeedback(1, 2, 1, 2, (PassTiming(1, 3, width, 1e-2 * (1 if width == 1 else 6)),)),
            )
            policy.observe(RoundFeedback(0, None, Route((0, 1), (2,), 1), 0.0, 0.02, levels, (), False))
        assert policy.tracker is not None and (policy.tracker.width_spread() is not None) == flag
        state = next(iter(policy._domains.values()))
        plans = policy.chain_plans(state)
        seen[flag] = [p.t_eff for p in plans]
    assert seen[False] != seen[True]
