"""The chain bandit, the oracle and the policy registry."""

from __future__ import annotations

import collections

import pytest

from policies.bandit import ChainBandit
from policies.baselines import DynamicLookahead, StaticChain, TargetOnly
from policies.contract import WorldTruth
from policies.cost_model import estimate_round
from policies.oracle import Oracle
from policies.registry import every_static_chain, make_policy, policy_names, static_spec
from policies.specrouter_policy import SpecRouter
from policies.synthetic import SyntheticWorld, linear_pass_time, matrix_alpha

DECODE = (0.35, 1.1, 5.5, 42.0)
PER_POSITION = (0.005, 0.02, 0.08, 0.6)
ALPHA = [[1, 0.75, 0.65, 0.6], [1, 1, 0.8, 0.72], [1, 1, 1, 0.85], [1, 1, 1, 1]]


def world(seed: int = 0, alpha=None) -> SyntheticWorld:
    return SyntheticWorld(4, alpha or matrix_alpha(ALPHA), linear_pass_time(DECODE, PER_POSITION), seed=seed)


def test_bandit_settles_on_a_good_arm_and_plays_every_arm_first() -> None:
    bandit = ChainBandit(gamma=1.0)
    w = world(1)
    played = collections.Counter()
    original = bandit.route

    def spy(view):
        route = original(view)
        played[route] += 1
        return route

    bandit.route = spy  # type: ignore[method-assign]
    w.run(bandit, 120)
    assert set(played) == set(bandit.arms)  # every arm tried
    favourite = played.most_common(1)[0][0]
    timing = linear_pass_time(DECODE, PER_POSITION)
    truth = sorted(
        bandit.arms,
        key=lambda r: estimate_round(r, lambda i, j: ALPHA[i][j], lambda m, n: timing(m, n, 1, 0.0)).t_eff,
    )
    assert favourite in truth[:3], (favourite, truth[:3])


def test_oracle_plans_with_the_truth_and_follows_a_change_at_the_next_time_bucket() -> None:
    broken = [row[:] for row in ALPHA]
    broken[2][3] = 0.1
    switch = {"at": 1e9}

    def alpha(lower, upper, _domain, now):
        return (broken if now >= switch["at"] else ALPHA)[lower][upper]

    w = world(2, alpha)
    assert isinstance(w, WorldTruth)
    oracle = Oracle(w, time_bucket=50.0)
    view = w._peek_view(0, None)
    assert oracle.route(view).chain == (0, 2, 3)
    switch["at"] = 0.0
    assert oracle.route(view).chain == (0, 2, 3)  # cached within the time bucket
    later = view._replace(now=view.now + 60.0)
    assert 2 not in oracle.route(later).chain
    with pytest.raises(TypeError, match="WorldTruth"):
        Oracle(object())  # type: ignore[arg-type]


def test_registry_builds_every_named_policy() -> None:
    w = world()
    assert isinstance(make_policy("target-only"), TargetOnly)
    assert isinstance(make_policy("static:0>2>3:4,1"), StaticChain)
    assert make_policy("static:M0[4]>M2[1]>M3").route(w._peek_view(0, None)).lookaheads == (4, 1)
    assert isinstance(make_policy("dynamic-lookahead:2"), DynamicLookahead)
    router = make_policy("specrouter:acceptance=sampling,hysteresis=0.1")
    assert isinstance(router, SpecRouter) and router.hysteresis == 0.1
    assert router.acceptance_map.mode == "sampling"
    assert make_policy("specrouter", optimism=0.0).optimism == 0.0  # type: ignore[attr-defined]
    assert make_policy("bandit-ucb1").gamma == 1.0  # type: ignore[attr-defined]
    assert isinstance(make_policy("oracle", truth=w), Oracle)
    assert set(policy_names()) >= {"specrouter", "bandit", "oracle", "target-only"}
    assert static_spec((0, 3), (5,)) == "static:0>3:5"
    assert len(every_static_chain(4)) == 7


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nonsense", "unknown policy"),
        ("oracle", "world's truth"),
        ("static:0>x:1", "expected static"),
        ("static:M0>M2", "expected static"),
        ("specrouter:hysteresis", "not key=value"),
        ("specrouter:acceptance=greedy", "acceptance must be"),
        ("dynamic-lookahead:x", "ladder index"),
    ],
)
def test_registry_errors_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_policy(spec)
