"""A cold router's first estimates: pass widths from the first pass, plans priced off the measured
pass times re-checked at once.

On the real models at batch 4 (8 requests x 32 tokens, ~100 rounds: the whole job is the cold
start) SpecRouter lost 25% to the best static chain: its pass widths started at 1 and crept towards
4 at the EMA's rate (3.2 by the end), so every verify was priced at a third of its positions; and
its first target cells, measured at 36 positions, extrapolated plain decoding at 1.1 ms a pass (it
costs 7.9), so it decoded plainly for the next 32-114 rounds until a re-plan.
"""

from __future__ import annotations

import pytest

from policies.contract import LadderInfo, Route, RouteView
from policies.estimators import LoadTracker, PassTimeProfile
from policies.specrouter_policy import SpecRouter
from policies.synthetic import SyntheticWorld, linear_pass_time, matrix_alpha

LADDER = LadderInfo(("draft", "mid", "target"))


def test_a_width_starts_at_the_first_pass_and_becomes_an_ema() -> None:
    tracker = LoadTracker(3, rate=0.05)
    tracker.see_pass(2, 4)
    assert tracker.widths[2] == 4.0  # not 1 + 0.05 * 3
    tracker.see_pass(2, 2)
    assert tracker.widths[2] == pytest.approx(3.0)  # the mean of the first passes
    for _ in range(100):
        tracker.see_pass(2, 8)
    before = tracker.widths[2]
    tracker.see_pass(2, 0)
    assert tracker.widths[2] == pytest.approx(before * 0.95)  # then the EMA's rate
    assert tracker.widths[0] == 1.0  # a model never seen keeps the default


def profile_measured(cells: dict[int, list[int]]) -> PassTimeProfile:
    """A profile whose model ``m`` has passes filed at the totals ``cells[m]`` (batches of one)."""
    profile = PassTimeProfile(3)
    for model, totals in cells.items():
        for total in totals:
            profile.update(model, total, 1, 0.001 * (1 + total / 64))
    return profile


def router_with(profile: PassTimeProfile, widths: tuple[float, ...]) -> SpecRouter:
    router = SpecRouter()
    router.route(RouteView(0, 16, 0, 32, None, 0.0, LADDER, (1, 1, 1), (0, 0, 0)))
    router.profile = profile
    assert router.tracker is not None
    router.tracker.widths = list(widths)
    return router


def test_a_route_is_extrapolated_where_its_passes_leave_the_measured_range() -> None:
    profile = profile_measured({0: [4], 1: [], 2: [16, 20, 24, 36]})
    router = router_with(profile, (4.0, 4.0, 4.0))
    assert profile.known_span(2) == (16.0, 36.0) and profile.known_span(1) is None
    assert router._extrapolated(Route((2,), (), 2))  # plain decoding: 4 positions, measured from 16
    assert not router._extrapolated(Route((0, 2), (4,), 2))  # drafts at 4, verifies at 20
    assert not router._extrapolated(Route((0, 2), (8,), 2))  # a verify of 9 x 4 = 36: the last cell
    assert router._extrapolated(Route((0, 2), (11,), 2))  # 48 > 36 * 1.25
    assert router._extrapolated(Route((1, 2), (3,), 2))  # the middle model was never measured


def test_the_slack_and_a_prior_count_as_measured() -> None:
    profile = profile_measured({0: [4], 1: [8], 2: [16, 40]})
    router = router_with(profile, (4.0, 4.0, 4.0))
    assert not router._extrapolated(Route((0, 2), (9,), 2))  # 40 positions: the last cell
    assert not router._extrapolated(Route((0, 2), (11,), 2))  # 48 <= 40 * 1.25
    assert router._extrapolated(Route((0, 2), (12,), 2))  # 52 > 50
    profile.seed(2, [(1.0, 0.001), (64.0, 0.002)])
    assert profile.known_span(2) == (0.0, float("inf"))  # a warm start knows the whole curve
    assert not router._extrapolated(Route((2,), (), 2))


def test_an_extrapolated_plan_is_priced_again_after_its_route_was_measured() -> None:
    """A cold router's first plan reads nothing measured; it re-plans after the route's first learned
    round, and once the passes it routes are measured such re-plans stop."""
    alpha: list[list[float]] = [[1, 0.75, 0.65], [1, 1, 0.8], [1, 1, 1]]
    world = SyntheticWorld(3, matrix_alpha(alpha), linear_pass_time((0.001, 0.003, 0.01), (1e-5, 3e-5, 1e-4)))
    checked, unchecked = SpecRouter(), SpecRouter(check_extrapolated=False)
    world.run(checked, 1, tokens_per_request=40)
    assert checked.replan_causes["extrapolated"] >= 1
    early = checked.replans
    SyntheticWorld(3, matrix_alpha(alpha), linear_pass_time((0.001, 0.003, 0.01), (1e-5, 3e-5, 1e-4))).run(
        unchecked, 1, tokens_per_request=40
    )
    assert unchecked.replan_causes["extrapolated"] == 0 and unchecked.replans < early
    world.run(checked, 40, tokens_per_request=64)
    assert checked.replan_causes["extrapolated"] <= 12  # settles: not one per learned round


def test_an_old_router_leaves_new_widths_to_the_rate_limited_re_plans() -> None:
    """Past ``explore_horizon`` committed tokens the check is off: under a growing load new widths
    appear all the time, and those re-plans are rate-limited (observe's fresh cells)."""
    router = router_with(PassTimeProfile(3), (1.0, 1.0, 1.0))  # nothing measured: every route extrapolates
    state = router._domains[None]
    assert router.tracker is not None
    router._replan(state)
    assert state.tentative
    router.tracker.committed_total = 2048
    router._replan(state)
    assert not state.tentative


def fill(profile: PassTimeProfile, total: int, seconds: float, samples: int) -> None:
    for _ in range(samples):
        profile.update(0, total, 1, seconds)


def test_a_young_curve_reads_as_the_weighted_line_through_its_cells() -> None:
    """Two cells of a few samples: the line through them (weighted by samples), not the piecewise
    segments a third, noisy cell would bend; once three cells are known, the cells again."""
    profile = PassTimeProfile(1, max_positions=64)
    fill(profile, 16, 0.0097, 3)
    fill(profile, 28, 0.0122, 3)
    fill(profile, 20, 0.0149, 1)  # one noisy sample: read piece by piece, 20 -> 28 would look free
    points = profile.points(0)
    assert points is not None
    totals, times = points
    assert list(totals) == [16.0, 28.0]  # the line's two ends
    rise = (times[1] - times[0]) / 12.0
    assert 0.0 < rise <= times[1] / 28.0
    at = profile.curve(0, 1.0, 40)
    assert at is not None and at[28] - at[20] == pytest.approx(8 * rise)  # longer verifies cost more
    for total, seconds, more in ((16, 0.0097, 1), (28, 0.0122, 1), (20, 0.0105, 3)):
        fill(profile, total, seconds, more)  # three known cells (FRESH_SAMPLES each): read piece by piece
    grown = profile.points(0)
    assert grown is not None and list(grown[0]) == [16.0, 20.0, 28.0]


def test_a_young_line_never_falls_and_a_prior_keeps_its_own_reading() -> None:
    falling = PassTimeProfile(1, max_positions=64)
    fill(falling, 8, 0.012, 2)
    fill(falling, 24, 0.010, 2)  # a slower sample at fewer positions: noise, not a falling curve
    points = falling.points(0)
    assert points is not None and points[1][1] >= points[1][0]
    seeded = PassTimeProfile(1, max_positions=64)
    seeded.seed(0, [(8.0, 0.010), (24.0, 0.020), (48.0, 0.030)])
    fill(seeded, 8, 0.010, 2)
    fill(seeded, 24, 0.020, 2)
    kept = seeded.points(0)
    assert kept is not None and 48.0 in list(kept[0])  # the prior's cells fill in: no line
