from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies import LadderInfo, Route, RouteView, StaticChain, TargetOnly
from policies.contract import Policy


def test_valid_routes_and_str() -> None:
    route = Route((0, 2, 3), (4, 1), 3)
    assert str(route) == "M0[4]>M2[1]>M3"
    assert Route.target_only(3).is_target_only
    assert str(Route.target_only(3)) == "M3"


@pytest.mark.parametrize(
    "chain, lookaheads, target, message",
    [
        ((2, 1, 3), (1, 1), 3, "not strictly increasing"),
        ((1, 1, 3), (1, 1), 3, "not strictly increasing"),
        ((0, 2), (3,), 3, "does not end at the target"),
        ((0, 3), (0,), 3, "lookaheads must be integers >= 1"),
        ((0, 3), (), 3, "needs 1"),
        ((), (), 3, "empty"),
        ((-1, 3), (1,), 3, "negative"),
    ],
)
def test_invalid_routes_raise_clear_value_errors(chain, lookaheads, target, message) -> None:
    with pytest.raises(ValueError, match=message):
        Route(chain, lookaheads, target)


@given(
    st.integers(2, 6).flatmap(
        lambda k: st.tuples(
            st.just(k), st.lists(st.integers(0, k - 1), max_size=k), st.lists(st.integers(-2, 9), max_size=k)
        )
    )
)
def test_route_accepts_exactly_the_valid_ones(case) -> None:
    k, chain_list, lookaheads_list = case
    chain, lookaheads = tuple(chain_list), tuple(lookaheads_list)
    valid = (
        len(chain) >= 1
        and all(b > a for a, b in zip(chain, chain[1:]))
        and chain[-1] == k - 1
        and len(lookaheads) == len(chain) - 1
        and all(g >= 1 for g in lookaheads)
    )
    if valid:
        assert Route(chain, lookaheads, k - 1).chain == chain
    else:
        with pytest.raises(ValueError):
            Route(chain, lookaheads, k - 1)


def test_route_is_immutable() -> None:
    route = Route((0, 1), (2,), 1)
    with pytest.raises(AttributeError):
        route.chain = (1,)  # type: ignore[misc]


def test_baselines_satisfy_the_policy_protocol() -> None:
    ladder = LadderInfo(("a", "b", "c"))
    view = RouteView(1, 10, 0, 5, None, 0.0, ladder, (1, 1, 1), (0, 0, 0))
    for policy in (TargetOnly(), StaticChain((0, 2), (3,))):
        assert isinstance(policy, Policy)
        assert policy.route(view).chain[-1] == ladder.target


def test_static_chain_refuses_a_ladder_with_another_target() -> None:
    view = RouteView(1, 10, 0, 5, None, 0.0, LadderInfo(("a", "b", "c", "d")), (), ())
    with pytest.raises(ValueError, match="target"):
        StaticChain((0, 2), (3,)).route(view)
