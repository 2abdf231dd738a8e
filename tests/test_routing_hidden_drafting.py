"""Drafting that hides in the wait at a busy target (``planner.TargetWait``,
``ChainOverhead.hidden_share``, ``SpecRouter(hide_drafting=True)``).

A request that drafts longer reaches a busy target later, and the target's next pass starts
when it starts: it waits less.  The share that hides is read from the rounds (the slope of a
round's excess on its drafting, about short-horizon means), and the planner's wait at the
target becomes ``max(0, c P_T + h (d P_T - P_D))``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from policies import SpecRouter, make_policy
from policies.contract import LadderInfo
from policies.estimators import ChainOverhead
from policies.planner import TargetWait, with_target_wait

# rows: (drafting of two levels, target pass), seconds
PARTS = np.array(
    [
        [0.004, 0.006, 0.020],  # drafts 10 ms: what the measured rounds drafted (d = 0.5)
        [0.010, 0.008, 0.020],  # drafts 18 ms: 8 more
        [0.001, 0.001, 0.020],  # drafts 2 ms: 8 less
        [0.200, 0.100, 0.020],  # drafts far longer than the wait
    ]
)


def test_nothing_hidden_is_the_wait_per_target_second() -> None:
    assert TargetWait(per_target_second=3.0).rows(PARTS) == pytest.approx(3.0 * PARTS[:, -1])
    half_known = TargetWait(3.0, hidden=0.0, drafting_per_target_second=0.5)
    assert with_target_wait(None, PARTS, half_known) == pytest.approx(3.0 * PARTS[:, -1])


def test_all_hidden_the_round_lasts_the_targets_cycle_whatever_the_drafting() -> None:
    waits = TargetWait(3.0, hidden=1.0, drafting_per_target_second=0.5).rows(PARTS)
    assert waits[0] == pytest.approx(0.060)  # drafted what the rounds drafted: c P_T
    latency = PARTS.sum(axis=1) + waits
    assert latency[:3] == pytest.approx([0.090, 0.090, 0.090])  # 8 ms more or less drafting: same round
    assert waits[3] == 0.0  # drafting beyond the wait is not hidden: the round is its passes
    assert latency[3] == pytest.approx(0.320)


def test_half_hidden_splits_the_difference() -> None:
    waits = TargetWait(3.0, hidden=0.5, drafting_per_target_second=0.5).rows(PARTS)
    assert waits[1] == pytest.approx(0.060 - 0.004)
    assert waits[2] == pytest.approx(0.060 + 0.004)


def test_no_wait_measured_adds_nothing() -> None:
    existing = np.array([0.001, 0.002, 0.003, 0.004])
    assert with_target_wait(existing, PARTS, TargetWait(0.0, 1.0, 0.5)) is existing
    assert with_target_wait(None, PARTS, TargetWait()) is None


def feed(overhead: ChainOverhead, hidden: float, swing: float = 0.0, samples: int = 6000) -> None:
    """Rounds whose drafting varies round to round, of which ``hidden`` comes off the wait; with a
    ``swing``, the load also rises and falls slowly, moving drafting and (ten times as much) the wait."""
    rng = np.random.default_rng(0)
    for i in range(samples):
        load = 1.0 + swing * math.sin(2 * math.pi * i / 2000)
        drafting = 0.010 * load + rng.uniform(-0.004, 0.004)
        excess = 0.100 * load - hidden * (drafting - 0.010 * load) + rng.normal(0.0, 0.001)
        target = 0.020 * load
        overhead.add((0, 1, 2), latency=drafting + target + excess, passes=drafting + target, target=target)


@pytest.mark.parametrize("hidden", [0.0, 0.5, 1.0])
def test_the_hidden_share_is_read_from_the_rounds(hidden: float) -> None:
    overhead = ChainOverhead()
    feed(overhead, hidden)
    assert overhead.hidden_share() == pytest.approx(hidden, abs=0.1)
    assert overhead.draft_factor() == pytest.approx(0.5, rel=0.05)


def test_under_a_load_swing_the_share_reads_low_but_never_the_swings_sign() -> None:
    """Across the swing the wait rises with the drafting (slope ~ +10): a plain regression would
    read that as 'drafting costs waiting'.  About the short-horizon means it reads the round-to-
    round share, attenuated (the means lag the swing), and orders the shares right."""
    readings = []
    for hidden in (0.0, 0.5, 1.0):
        overhead = ChainOverhead()
        feed(overhead, hidden, swing=0.8)
        readings.append(overhead.hidden_share())
    assert readings[0] == 0.0
    assert 0.0 < readings[1] < readings[2] <= 1.0
    assert readings[2] == pytest.approx(0.5, abs=0.2)  # attenuated: the docstring says so


def test_a_wait_that_grows_with_the_drafting_hides_nothing() -> None:
    overhead = ChainOverhead()
    feed(overhead, hidden=-1.0)  # drafting longer makes it wait longer: clipped to nothing hidden
    assert overhead.hidden_share() == 0.0
    assert ChainOverhead().hidden_share() == 0.0  # nothing measured yet


def trained(devices: tuple[int, ...], spec: str = "specrouter") -> SpecRouter:
    policy = make_policy(spec)
    assert isinstance(policy, SpecRouter)
    policy._domain(None, LadderInfo(("a", "b", "c"), devices=devices))
    assert policy.overhead is not None
    feed(policy.overhead, hidden=1.0)
    return policy


def test_specrouter_hides_drafting_only_where_the_models_run_on_several_devices() -> None:
    pipelined = trained((0, 1, 2)).target_wait()
    assert pipelined.hidden == pytest.approx(1.0, abs=0.1)
    assert pipelined.drafting_per_target_second == pytest.approx(0.5, rel=0.05)
    # one device (the lockstep loop): drafting is that device's own time, nothing overlaps it
    lockstep = trained((0, 0, 0)).target_wait()
    assert lockstep.hidden == 0.0 and lockstep.per_target_second == pipelined.per_target_second > 0
    assert trained((0, 1, 2), "specrouter:hide_drafting=false").target_wait().hidden == 0.0
