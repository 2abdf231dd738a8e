"""Routes by the target's queue when a round starts (``SpecRouter(queue_routes=True)``,
``estimators.QueueReach``, ``planner.TargetWait.reach``).

A round that starts while the target has calls queued reaches a target that is still busy: the
time until it takes the round's verify, ``rho P_T`` after the round starts, covers the drafting,
so drafting is free up to it.  The router keeps the measured ``rho`` per queue bucket and plans
the rounds that start with a busy target on those samples: ``wait = E max(0, rho P_T - P_D)``.
"""

from __future__ import annotations

import numpy as np
import pytest

from policies import SpecRouter, make_policy
from policies.contract import LadderInfo, Route, RouteView
from policies.cost_model import estimate_round_parts
from policies.estimators import QueueReach
from policies.planner import TargetWait, with_target_wait
from policies.synthetic import SyntheticWorld, linear_pass_time, matrix_alpha

# rows: (drafting of two levels, target pass), seconds
PARTS = np.array(
    [
        [0.004, 0.006, 0.020],  # drafts 10 ms
        [0.010, 0.008, 0.020],  # drafts 18 ms
        [0.200, 0.100, 0.020],  # drafts 300 ms
    ]
)


def test_queue_buckets_are_octaves_of_the_calls_waiting() -> None:
    assert [QueueReach.bucket(q) for q in (0, 1, 2, 3, 4, 7, 8, 1000)] == [0, 1, 2, 2, 3, 3, 4, 4]


def test_the_ring_keeps_the_last_samples_and_answers_once_it_holds_enough() -> None:
    reach = QueueReach(size=4)
    for i in range(3):
        reach.add(2, drafting=0.01 * i, wait=0.02, target=0.01)
    assert reach.samples(2, least=4) is None
    for i in range(3, 10):
        reach.add(2, drafting=0.01 * i, wait=0.02, target=0.01)
    # rho = (drafting + wait) / target of the last four rounds, in any order
    assert sorted(reach.samples(2, least=4)) == pytest.approx([8.0, 9.0, 10.0, 11.0])
    assert reach.samples(0, least=1) is None  # other buckets untouched
    reach.add(1, drafting=0.01, wait=-0.001, target=0.01)  # a negative wait is no measurement
    reach.add(1, drafting=0.01, wait=0.0, target=0.0)  # nor a round without a target pass
    assert reach.samples(1, least=1) is None


def test_a_row_waits_for_what_its_drafting_does_not_cover() -> None:
    rho = np.array([1.0, 3.0, 5.0])  # the target free 20, 60 or 100 ms after the round starts
    waits = TargetWait(reach=rho).rows(PARTS)
    assert waits[0] == pytest.approx(np.mean([0.010, 0.050, 0.090]))
    assert waits[1] == pytest.approx(np.mean([0.002, 0.042, 0.082]))
    assert waits[2] == 0.0  # drafting longer than any wait: the round is its passes
    assert with_target_wait(None, PARTS, TargetWait(reach=rho)) == pytest.approx(waits)


def test_one_reach_is_the_all_hidden_wait() -> None:
    """A single ``rho`` is ``TargetWait``'s fully hidden case with ``c + d = rho``."""
    hidden = TargetWait(2.0, hidden=1.0, drafting_per_target_second=1.5).rows(PARTS)
    assert TargetWait(reach=np.array([3.5])).rows(PARTS) == pytest.approx(hidden)


def train(
    devices: tuple[int, ...] | None, spec: str = "specrouter:queue_routes=true"
) -> tuple[SpecRouter, SyntheticWorld]:
    """A router trained on a 3-model world whose bigger drafter is better but dearer."""
    alpha = [[1, 0.8, 0.55], [1, 1, 0.8], [1, 1, 1]]
    world = SyntheticWorld(
        3, matrix_alpha(alpha), linear_pass_time((0.001, 0.004, 0.02), (0, 0, 1e-4)), batch_size=4
    )
    world.ladder = LadderInfo(world.ladder.names, devices=devices)
    policy = make_policy(spec)
    assert isinstance(policy, SpecRouter)
    world.run(policy, 40)
    return policy, world


def view(world: SyntheticWorld, request_id: int, queued: int) -> RouteView:
    k = world.ladder.size
    return RouteView(
        request_id, 64, 8, 128, None, world.now, world.ladder, (4,) * k, (0,) * (k - 1) + (queued,)
    )


def expected(route: Route, world: SyntheticWorld) -> tuple[float, float]:
    """Expected seconds of a route's passes below the target, and its tokens per round, in the
    training world."""
    parts = estimate_round_parts(
        route,
        lambda lower, upper: world.alpha(lower, upper, None, 0.0),
        lambda m, n: world.pass_time(m, n, 4, 0.0),
    )
    return sum(parts.level_time[:-1]), parts.tokens


def test_rounds_that_start_with_a_busy_target_draft_more() -> None:
    policy, world = train((0, 1, 2))
    calm = policy.route(view(world, 1000, queued=0))
    for _ in range(32):  # the target takes a verify 10 target passes after the round starts
        policy.reach.add(QueueReach.bucket(5), drafting=0.01, wait=0.19, target=0.02)
    busy = policy.route(view(world, 1001, queued=5))
    assert busy != calm
    (calm_drafting, calm_tokens), (busy_drafting, busy_tokens) = expected(calm, world), expected(busy, world)
    assert busy_drafting > calm_drafting and busy_tokens > calm_tokens
    assert policy.route(view(world, 1002, queued=0)) == calm  # a calm target: the plan as before
    # a bucket without samples plans as a calm one
    assert policy.route(view(world, 1003, queued=1)) == calm


def test_the_queue_changes_nothing_on_one_device_or_when_off() -> None:
    for devices, spec in (
        ((0, 0, 0), "specrouter:queue_routes=true"),
        ((0, 1, 2), "specrouter:queue_routes=false"),
    ):
        policy, world = train(devices, spec)
        calm = policy.route(view(world, 1000, queued=0))
        for _ in range(32):
            policy.reach.add(QueueReach.bucket(5), drafting=0.01, wait=0.19, target=0.02)
        assert policy.route(view(world, 1001, queued=5)) == calm
