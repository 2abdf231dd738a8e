"""SpecRouter never emits an invalid route and never plans with NaN, whatever it observes.

Hypothesis drives it with random feedback streams: random domains and batch sizes,
acceptance from none to all, TV samples anywhere in [0, 1] (or none), and pass times from
0 to 1e6 seconds (extreme but finite), with prefill-sized passes mixed in.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.bandit import ChainBandit
from policies.contract import LadderInfo, LevelFeedback, PairTV, PassTiming, RoundFeedback, Route, RouteView
from policies.specrouter_policy import SpecRouter

seconds = st.sampled_from([0.0, 1e-9, 1e6]) | st.floats(0.0, 1e6, allow_nan=False)
fraction = st.floats(0.0, 1.0)


@st.composite
def round_outcome(draw: st.DrawFn, route: Route) -> RoundFeedback:
    levels = []
    below = 0
    for j, model in enumerate(route.chain):
        batch = draw(st.integers(1, 4096))
        if j == 0 and len(route.chain) > 1:
            emitted = draw(st.integers(0, route.lookaheads[0] * 3))
            passes = tuple(PassTiming(model, 1, batch, draw(seconds)) for _ in range(min(emitted, 4)))
            levels.append(LevelFeedback(model, 0, 0, emitted, passes))
            below = emitted
            continue
        proposed = below
        accepted = draw(st.integers(0, proposed))
        verifies = draw(st.integers(1, 3))
        emitted = accepted + verifies
        tokens = draw(st.sampled_from([proposed + 1, 1, 5000]))
        passes = tuple(PassTiming(model, tokens, batch, draw(seconds)) for _ in range(verifies))
        levels.append(LevelFeedback(model, proposed, accepted, emitted, passes))
        below = emitted
    tv = tuple(
        PairTV(route.chain[j - 1], route.chain[j], tuple(draw(st.lists(fraction, max_size=6))))
        for j in range(1, len(route.chain))
    )
    domain = draw(st.sampled_from([None, "code", "chat"]))
    return RoundFeedback(0, domain, route, 0.0, 1.0, tuple(levels), tv, draw(st.booleans()))


def check_route(route: Route, size: int, max_lookahead: int) -> None:
    assert route.target == size - 1 and route.chain[-1] == size - 1
    assert all(0 <= m < size for m in route.chain)
    assert all(b > a for a, b in zip(route.chain, route.chain[1:]))
    assert len(route.lookaheads) == len(route.chain) - 1
    assert all(1 <= g <= max_lookahead for g in route.lookaheads)


@settings(max_examples=25, deadline=None)
@given(size=st.integers(1, 5), data=st.data())
def test_random_feedback_streams_never_produce_an_invalid_route_or_nan(
    size: int, data: st.DataObject
) -> None:
    ladder = LadderInfo(tuple(f"m{i}" for i in range(size)))
    policy = SpecRouter(min_replan_gap=1, replan_every=7, max_lookahead=6)
    bandit = ChainBandit()
    for step in range(data.draw(st.integers(4, 25))):
        domain = data.draw(st.sampled_from([None, "code", "chat"]))
        batches = tuple(data.draw(st.integers(0, 500)) for _ in range(size))
        view = RouteView(step, 10, 0, 100, domain, float(step), ladder, batches, (0,) * size)
        for router in (policy, bandit):
            route = router.route(view)
            check_route(route, size, 6 if router is policy else 8)
            feedback = data.draw(round_outcome(route))
            router.observe(feedback._replace(domain=domain))
    for state in policy._domains.values():
        alpha = policy.alpha_matrix(state)
        assert np.isfinite(alpha).all() and (alpha >= 0).all() and (alpha <= 1).all()
    table = policy.pass_table()
    assert np.isfinite(table).all() and (table >= 0).all()


def test_zero_acceptance_stream_ends_in_target_only() -> None:
    """Every draft rejected: speculation can only cost, so the policy must stop it."""
    ladder = LadderInfo(("a", "b", "c"))
    policy = SpecRouter(min_replan_gap=4)
    times = (0.3, 0.6, 2.0)  # drafting costs 15% of a target pass: clearly worse than the 3% hysteresis
    for step in range(400):
        view = RouteView(step, 10, 0, 100, None, float(step), ladder, (1, 1, 1), (0, 0, 0))
        route = policy.route(view)
        levels = []
        below = 0
        for j, model in enumerate(route.chain):
            if j == 0 and len(route.chain) > 1:
                g = route.lookaheads[0]
                levels.append(
                    LevelFeedback(
                        model, 0, 0, g, tuple(PassTiming(model, 1, 1, times[model]) for _ in range(g))
                    )
                )
                below = g
            else:
                levels.append(
                    LevelFeedback(model, below, 0, 1, (PassTiming(model, below + 1, 1, times[model]),))
                )
                below = 1
        tv = tuple(PairTV(route.chain[j - 1], route.chain[j], (1.0,) * 3) for j in range(1, len(route.chain)))
        # Each step is a one-round request (done): one request in flight at a time, as at
        # batch size 1.  (400 requests left open would be a backlog at batch 1, where the
        # system objective rightly buys any token the bottleneck's pass can add.)
        policy.observe(RoundFeedback(step, None, route, 0.0, 1.0, tuple(levels), tv, True))
    final = policy.route(RouteView(0, 10, 0, 100, None, 400.0, ladder, (1, 1, 1), (0, 0, 0)))
    assert final.is_target_only
