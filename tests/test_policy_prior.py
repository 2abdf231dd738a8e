"""SpecRouter's warm start from a world profile (policies/prior.py): the prior is read right,
the first plan is the profile's best route, a short run gains from it, feedback overrides a wrong
prior, and the prior's pass times are rescaled to what the serving loop really pays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from policies.contract import LadderInfo, Route, RouteView
from policies.cost_model import enumerate_routes, estimate_round
from policies.estimators import PassTimeProfile
from policies.prior import RoutingPrior, load_prior, prior_from_profile
from policies.registry import PolicySpecError, check_fits, make_policy, policy_knobs
from policies.specrouter_policy import SpecRouter
from policies.synthetic import SyntheticWorld, linear_pass_time, matrix_alpha
from traces.world_profile import ModelProfile, PairProfile, PassTimeTable, WorldProfile, save_world_profile

DECODE = (0.35, 1.1, 5.5, 42.0)
PER_POSITION = (0.005, 0.02, 0.08, 0.6)
ALPHA: list[list[float]] = [[1, 0.75, 0.65, 0.6], [1, 1, 0.8, 0.72], [1, 1, 1, 0.85], [1, 1, 1, 1]]
NAMES = ("M0", "M1", "M2", "M3")


def truth_prior(alpha: list[list[float]] = ALPHA, scale: float = 1.0) -> RoutingPrior:
    """A prior that is the synthetic world's truth (pass times ``scale`` x the truth)."""
    timing = linear_pass_time(DECODE, PER_POSITION)
    times = tuple(tuple((float(n), scale * timing(m, n, 1, 0.0)) for n in range(1, 10)) for m in range(4))
    pairs: dict[tuple[str | None, int, int], float] = {
        (None, i, j): float(alpha[i][j]) for i in range(4) for j in range(i + 1, 4)
    }
    return RoutingPrior(NAMES, times, pairs, "truth")


def first_route(policy: SpecRouter) -> Route:
    view = RouteView(0, 64, 0, 128, None, 0.0, LadderInfo(NAMES), (1,) * 4, (0,) * 4)
    return policy.route(view)


def true_t_eff(route: Route) -> float:
    timing = linear_pass_time(DECODE, PER_POSITION)
    return estimate_round(route, lambda i, j: ALPHA[i][j], lambda m, n: timing(m, n, 1, 0.0)).t_eff


def test_prior_from_a_profile_averages_cells_by_positions_and_skips_model_free_members() -> None:
    table = PassTimeTable((1, 2), (1, 2), ((1.0, 2.0), (3.0, 4.0)), 64)
    lookup = PassTimeTable((1,), (1,), ((1e-5,),), 64)
    profile = WorldProfile(
        "test",
        (
            ModelProfile("lookup", 0.0, lookup, "ngram"),
            ModelProfile("a", 1e6, table),
            ModelProfile("b", 1e7, table),
        ),
        (
            PairProfile(0, 2, 0.9, "edit"),
            PairProfile(1, 2, 0.7),
            PairProfile(1, 2, 0.6, "edit"),
            PairProfile(1, 2, 0.5, mode="sampling"),
        ),
    )
    prior = prior_from_profile(profile)
    assert prior.names == ("lookup", "a", "b")
    assert prior.pass_times[0] == ()  # a lookup pass is timed by rows: learned online
    # N = n b: (1,1) -> 1; (1,2) and (2,1) -> 2, averaged; (2,2) -> 4
    assert prior.pass_times[1] == ((1.0, 1.0), (2.0, 2.5), (4.0, 4.0))
    assert prior.alpha("edit", 1, 2) == 0.6
    assert prior.alpha("chat", 1, 2) == 0.7  # falls back to all domains
    assert prior.alpha("edit", 0, 2) is None  # the lookup's pairs are not seeded
    assert prior_from_profile(profile, "sampling").alpha(None, 1, 2) == 0.5
    with pytest.raises(ValueError, match="mode"):
        prior_from_profile(profile, "beam")


def test_the_first_plan_of_a_warm_start_is_the_profile_best_route() -> None:
    policy = SpecRouter(prior=truth_prior(), prior_trials=1e6, optimism=0.0)
    route = first_route(policy)
    timing = linear_pass_time(DECODE, PER_POSITION)
    best = min(
        estimate_round(r, lambda i, j: ALPHA[i][j], lambda m, n: timing(m, n, 1, 0.0)).t_eff
        for r in enumerate_routes(4, 8)
        if len(r.chain) < 4 or max(r.lookaheads[1:]) <= 2  # the planner's grid on 4-level chains
    )
    assert true_t_eff(route) == pytest.approx(best, rel=1e-9)
    # cold, the same planner plans on the uninformed prior (alpha 0.5, times scaled by params)
    assert true_t_eff(first_route(SpecRouter())) > 1.1 * best


def test_a_warm_start_gains_on_a_short_run() -> None:
    """Two short requests: the warm start's time per token is near the best route's, the cold
    start's is not (it explores); both over five seeds."""
    timing = linear_pass_time(DECODE, PER_POSITION)
    best = min(
        true_t_eff(r) for r in enumerate_routes(4, 8) if len(r.chain) < 4 or max(r.lookaheads[1:]) <= 2
    )
    cold: list[float] = []
    warm: list[float] = []
    for seed in range(5):
        for policy, into in ((SpecRouter(), cold), (SpecRouter(prior=truth_prior()), warm)):
            world = SyntheticWorld(4, matrix_alpha(ALPHA), timing, seed=seed)
            into.append(world.run(policy, 2, 64).time_per_token)
    assert np.mean(warm) <= 1.10 * best
    assert np.mean(warm) < 0.9 * np.mean(cold)


def test_feedback_overrides_a_wrong_prior() -> None:
    """The profile says M2 drafts perfectly for M3; in the world it is useless there."""
    broken = [row[:] for row in ALPHA]
    broken[2][3] = 0.05
    wrong = truth_prior(alpha=[[1, 0.75, 0.65, 0.6], [1, 1, 0.8, 0.72], [1, 1, 1, 0.99], [1, 1, 1, 1]])
    policy = SpecRouter(prior=wrong)
    assert first_route(policy).chain[-2] == 2  # trusts the profile at first
    world = SyntheticWorld(4, matrix_alpha(broken), linear_pass_time(DECODE, PER_POSITION), seed=1)
    world.run(policy, 40, 64)
    late = world.run(policy, 5, 64).routes
    assert all(route.chain[-2] != 2 for route in late), late


def test_prior_pass_times_are_rescaled_to_the_measured_cells() -> None:
    profile = PassTimeProfile(1, rate=0.05)
    profile.seed(0, [(1.0, 1.0), (4.0, 2.0), (16.0, 8.0)])
    assert profile.measured(0)
    np.testing.assert_allclose(np.asarray(profile.curve(0, 1.0, 2)), [1.0, 1.0])
    for _ in range(20):  # the loop pays 1.5x what the profile measured, seen at N = 4 only
        profile.update(0, 4, 1, 3.0)
    points = profile.points(0)
    assert points is not None
    totals, times = points
    assert list(totals) == [1.0, 4.0, 16.0]
    np.testing.assert_allclose(times, [1.5, 3.0, 12.0], rtol=1e-6)
    for total in (2, 3):  # three known cells: the model's own curve, the prior dropped
        for _ in range(4):
            profile.update(0, total, 1, 2.0)
    points = profile.points(0)
    assert points is not None
    totals, times = points
    assert list(totals) == [2.0, 3.0, 4.0]


def test_a_prior_of_another_ladder_is_refused_and_records_name_its_source(tmp_path: Path) -> None:
    other = truth_prior()._replace(names=("a", "b", "c", "d"))
    with pytest.raises(ValueError, match="profiled on the ladder"):
        first_route(SpecRouter(prior=other))
    table = PassTimeTable((1,), (1, 2), ((1e-3, 1.5e-3),), 64)
    profile = WorldProfile(
        "test",
        tuple(ModelProfile(n, 1e6 * (i + 1), table) for i, n in enumerate(NAMES)),
        (PairProfile(0, 3, 0.8),),
    )
    path = tmp_path / "profile.json"
    save_world_profile(profile, path)
    policy = make_policy(f"specrouter:prior={path}")
    assert isinstance(policy, SpecRouter) and policy.prior == load_prior(path)
    assert policy_knobs(f"specrouter:prior={path}")["prior"] == str(path)
    assert policy_knobs("specrouter", prior=load_prior(path))["prior"] == str(path)
    check_fits(f"specrouter:prior={path}", 4)  # before the weights load: the size only
    check_fits(f"specrouter:prior={path}", 4, NAMES)
    with pytest.raises(PolicySpecError, match="profiled on the ladder"):
        check_fits(f"specrouter:prior={path}", 4, ("a", "b", "c", "d"))
    with pytest.raises(PolicySpecError, match="missing.json"):
        make_policy(f"specrouter:prior={tmp_path / 'missing.json'}")
