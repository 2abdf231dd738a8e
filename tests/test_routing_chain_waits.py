"""SpecRouter's wait per chain (policies.estimators.ChainOverhead, fed by SpecRouter.observe) is
the time a round waits between its passes -- not a request's admission and prefill.

A request's first round starts when it arrives and carries its prompt's prefill: in the demo's
world it waited 631 ms against 0.7 ms for a later round, and counting those rounds made waits of
~1 s per round look like part of every chain, so every lookahead looked cheap next to them
(SpecRouter picked lookahead 8 and backlogged the server).
"""

from __future__ import annotations

import pytest

from policies.contract import LadderInfo, LevelFeedback, PassTiming, RoundFeedback, Route, RouteView
from policies.specrouter_policy import SpecRouter

LADDER = LadderInfo(("draft", "target"))
ROUTE = Route((0, 1), (3,), 1)
DRAFT_PASS, VERIFY_PASS = 0.001, 0.004
LATER_WAIT, FIRST_WAIT = 0.0005, 0.8  # seconds between passes: a later round / a first round
PROMPT = 200  # prefill positions in a first round's verify pass


def round_of(request: int, started: float, first: bool) -> RoundFeedback:
    fed = PROMPT + 4 if first else 4
    draft = LevelFeedback(0, 0, 0, 3, tuple(PassTiming(0, 1, 1, DRAFT_PASS) for _ in range(3)))
    verify = LevelFeedback(1, 3, 2, 3, (PassTiming(1, fed, 1, VERIFY_PASS),))
    latency = 3 * DRAFT_PASS + VERIFY_PASS + (FIRST_WAIT if first else LATER_WAIT)
    return RoundFeedback(request, None, ROUTE, started, started + latency, (draft, verify), (), False)


def drive(policy: SpecRouter, requests: int, rounds_per_request: int) -> None:
    now = 0.0
    for request in range(requests):
        for index in range(rounds_per_request):
            view = RouteView(request, PROMPT, 3 * index, 100, None, now, LADDER, (1, 1), (0, 0))
            policy.route(view)
            feedback = round_of(request, now, first=index == 0)
            policy.observe(feedback)
            now = feedback.finished


def test_first_rounds_do_not_count_as_the_chains_wait() -> None:
    policy = SpecRouter(learn_every=1)
    drive(policy, requests=200, rounds_per_request=5)  # one round in five is a first round
    assert policy.overhead is not None
    # Counting first rounds would give (4 * 0.5 ms + 800 ms) / 5 = 160 ms per round.
    assert policy.overhead.wait(ROUTE.chain) == pytest.approx(LATER_WAIT, rel=0.05)


def test_a_chains_wait_is_still_learned_from_its_later_rounds() -> None:
    policy = SpecRouter(learn_every=1)
    drive(policy, requests=40, rounds_per_request=25)
    assert policy.overhead is not None
    assert policy.overhead.wait(ROUTE.chain) == pytest.approx(LATER_WAIT, rel=0.05)
    assert policy.overhead.samples > 200  # later rounds are sampled (1 in 4 learned rounds)


def test_pooled_chain_waits_ignore_each_chains_own_history() -> None:
    from policies.estimators import ChainOverhead

    own, pooled = ChainOverhead(), ChainOverhead(per_chain=False)
    for overhead in (own, pooled):
        for _ in range(50):
            overhead.add((0, 1), latency=0.010, passes=0.002)  # waited 8 ms per round (a past backlog)
            overhead.add((1,), latency=0.003, passes=0.002)  # waited 1 ms
    # the chain that ran in the backlog keeps most of its own 8 ms; pooled, both read the mean
    assert own.wait((0, 1)) > 0.006 and own.wait((1,)) < 0.003
    assert pooled.wait((0, 1)) == pytest.approx(0.0045, rel=0.05) == pooled.wait((1,))


def test_wait_per_target_second_is_pooled_over_chains() -> None:
    from policies.estimators import ChainOverhead

    overhead = ChainOverhead()
    for _ in range(50):
        overhead.add((0, 1), latency=0.014, passes=0.010, target=0.008)  # waited 4 ms on 8 ms of target
        overhead.add((1,), latency=0.003, passes=0.002, target=0.002)  # waited 1 ms on 2 ms
    assert overhead.target_factor() == pytest.approx(5 / 10)


def test_chain_waits_mode_is_checked() -> None:
    assert SpecRouter(chain_waits="pooled").chain_waits == "pooled"
    assert SpecRouter(chain_waits="target").chain_waits == "target"
    with pytest.raises(ValueError, match="chain_waits"):
        SpecRouter(chain_waits="shared")
