"""Exploring pays over the output left to use it (``SpecRouter(explore_horizon=...)``).

The optimism bonus buys information whose worth is the rounds left to use it.  At zero evidence it
is 0.43 on every pair: a cold router plans as if every untried pair accepted ~93% and drafts long,
unmeasured lookaheads, which a short job (the real bench's 8 requests x 32 tokens) never earns back.
The serving loops tell a policy the work a closed input still asks for (``RouteView.work_left``);
SpecRouter scales the bonus by ``sqrt(min(1, H / explore_horizon))``, ``H`` the larger of that and
the tokens it has committed.  An open input (``work_left`` ``None``) explores in full, so the trace
replays plan as before until their last arrival.
"""

from __future__ import annotations

import dataclasses
import statistics

import numpy as np
import pytest

from policies.baselines import StaticChain
from policies.contract import LadderInfo, RoundFeedback, Route, RouteView
from policies.specrouter_policy import SpecRouter, _DomainState
from policies.synthetic import SyntheticWorld, linear_pass_time, matrix_alpha
from sim.engine import Simulation
from sim.presets import preset
from sim.scenario import Scenario
from sim.world import World
from traces.request import Request

LADDER = LadderInfo(("draft", "mid", "target"))
UPPER = np.triu_indices(3, 1)


def first_state(router: SpecRouter, work_left: int | None) -> _DomainState:
    """The router's state after the first view of a job with ``work_left`` tokens to go."""
    router.route(RouteView(0, 16, 0, 32, None, 0.0, LADDER, (1, 1, 1), (0, 0, 0), 0, work_left))
    return router._domains[None]


@pytest.mark.parametrize("work_left", [None, 0, 64, 512, 2048, 100_000])
def test_the_bonus_scales_with_the_square_root_of_the_work_left(work_left: int | None) -> None:
    router = SpecRouter()
    state = first_state(router, work_left)
    alpha = router.alpha_matrix(state)
    estimate = router.alpha_matrix(state, optimism=0.0)
    full = SpecRouter(explore_horizon=0)
    reference = full.alpha_matrix(first_state(full, work_left))
    share = 1.0 if work_left is None else min(1.0, work_left / 2048) ** 0.5
    assert router.exploration_scale() == pytest.approx(share)
    np.testing.assert_allclose(alpha[UPPER], estimate[UPPER] + share * (reference - estimate)[UPPER])
    np.testing.assert_allclose(estimate[UPPER], 0.5)  # no evidence: the prior
    if work_left is not None and work_left < 2048:
        assert (alpha[UPPER] < reference[UPPER]).all()


def test_the_work_left_counts_down_and_an_old_router_explores_in_full() -> None:
    router = SpecRouter()
    first_state(router, 1024)
    tracker = router.tracker
    assert tracker is not None
    assert tracker.work_left == 1024
    tracker.committed_total += 300  # rounds committed 300 tokens since the view
    assert tracker.work_left == 724
    assert router.exploration_scale() == pytest.approx((724 / 2048) ** 0.5)
    tracker.committed_total += 3000  # past the horizon: a router this old expects as much again
    assert tracker.work_left == 0
    assert router.exploration_scale() == 1.0


def test_a_cold_router_explores_less_in_a_short_job() -> None:
    """Two requests of 32 tokens on a ladder whose drafters cost a CPU's share of the target (a
    third and a half of its pass), mean over 6 seeds: with the bonus in full the router spends the
    job on long exploratory lookaheads."""
    alpha: list[list[float]] = [[1, 0.62, 0.55], [1, 1, 0.7], [1, 1, 1]]
    timing = linear_pass_time((0.003, 0.005, 0.01), (1e-4, 2e-4, 4e-4))

    def time_per_token(router: SpecRouter, seed: int) -> float:
        world = SyntheticWorld(3, matrix_alpha(alpha), timing, seed=seed)
        return world.run(router, 2, tokens_per_request=32).time_per_token

    horizon = [time_per_token(SpecRouter(), seed) for seed in range(6)]
    full = [time_per_token(SpecRouter(explore_horizon=0), seed) for seed in range(6)]
    assert statistics.mean(horizon) < 0.95 * statistics.mean(full)


class WorkRecorder(StaticChain):
    """A static chain that keeps ``(work_left, tokens committed so far)`` of every view."""

    def __init__(self) -> None:
        super().__init__((0, 3), (3,))
        self.views: list[tuple[int | None, int]] = []
        self.committed = 0

    def route(self, view: RouteView) -> Route:
        self.views.append((view.work_left, self.committed))
        return super().route(view)

    def observe(self, feedback: RoundFeedback) -> None:
        self.committed += feedback.levels[-1].emitted

    needs_feedback = True


@pytest.mark.parametrize("scheduler", ["lockstep", "pipelined"])
def test_both_loops_tell_the_work_left_once_the_input_is_closed(scheduler: str) -> None:
    cluster = dataclasses.replace(preset("llama"), scheduler=scheduler)
    budgets = [20 + 7 * i for i in range(6)]
    # three requests at once, then three more later: the input closes at the last arrival
    requests = [Request(i, 0.0 if i < 3 else 0.5 + 0.1 * i, 50, budget) for i, budget in enumerate(budgets)]
    policy = WorkRecorder()
    result = Simulation(World(cluster, Scenario(seed=1)), policy).run(requests)
    assert len(result.requests) == 6
    total = sum(budgets)
    known = [(left, committed) for left, committed in policy.views if left is not None]
    assert policy.views[0][0] is None  # more requests are coming
    assert known and all(left == total - committed for left, committed in known)
    # once known, it stays known
    first_known = next(i for i, (left, _) in enumerate(policy.views) if left is not None)
    assert all(left is not None for left, _ in policy.views[first_known:])


def test_a_fixed_prompt_set_is_closed_from_the_first_round() -> None:
    cluster = dataclasses.replace(preset("llama"), scheduler="lockstep")
    requests = [Request(i, 0.0, 40, 30) for i in range(4)]
    policy = WorkRecorder()
    Simulation(World(cluster, Scenario(seed=2)), policy).run(requests)
    assert policy.views[0] == (120, 0)
    assert all(left == 120 - committed for left, committed in policy.views)
