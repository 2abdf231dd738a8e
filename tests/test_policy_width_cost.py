"""The width as its own axis of the pass-time model (``PassTimeProfile(width_cost=True)``,
``specrouter:width_cost=true``): ``V(n, b) = f(N) + c (b - 1)``, ``c`` a per-sequence cost
learned by least squares within cells of (positions, width) medians."""

from __future__ import annotations

import numpy as np
import pytest

from policies.contract import LadderInfo
from policies.estimators import PassTimeProfile
from policies.prior import prior_from_profile
from policies.registry import PolicySpecError, make_policy
from policies.specrouter_policy import SpecRouter
from traces.world_profile import ModelProfile, PassTimeTable, WorldProfile

BASE, PER_POSITION, PER_SEQUENCE = 5e-3, 1e-4, 7e-4


def world(n: int, b: int) -> float:
    """A CPU-like pass: a fixed cost, one per position and one per sequence in the batch."""
    return BASE + PER_POSITION * n * b + PER_SEQUENCE * (b - 1)


def fed(profile: PassTimeProfile, passes: int, noise: float, seed: int = 0, widths: int = 4) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(passes):
        b, n = int(rng.integers(1, widths + 1)), int(rng.integers(1, 6))
        profile.update(0, n, b, world(n, b) * float(np.exp(noise * rng.standard_normal())), n * b)


def test_recovers_a_known_per_sequence_cost_from_mixed_widths() -> None:
    profile = PassTimeProfile(1, 0.02, None, 9, width_cost=True)
    fed(profile, 40_000, noise=0.05)
    assert abs(profile.fit_sequence_cost(0) - PER_SEQUENCE) < 0.1 * PER_SEQUENCE
    noiseless = PassTimeProfile(1, 0.02, None, 9, width_cost=True)
    fed(noiseless, 40_000, noise=0.0)
    assert abs(noiseless.fit_sequence_cost(0) - PER_SEQUENCE) < 0.05 * PER_SEQUENCE
    # a table read refits it (every COST_REFIT passes)
    late = PassTimeProfile(1, 0.02, None, 9, width_cost=True)
    fed(late, 4_000, noise=0.0)
    late.table([2.0], 6)
    assert abs(late.sequence_cost[0] - PER_SEQUENCE) < 0.1 * PER_SEQUENCE


def test_reads_each_width_closer_to_the_world_than_one_pooled_curve() -> None:
    pooled = PassTimeProfile(1, 0.02, None, 9)
    split = PassTimeProfile(1, 0.02, None, 9, width_cost=True)
    fed(pooled, 40_000, noise=0.0)
    fed(split, 40_000, noise=0.0)
    for b in (1, 2, 4):
        truth = np.array([world(max(n, 1), b) for n in range(6)])
        error_pooled = np.abs(pooled.table([b], 6)[0] - truth).mean()
        error_split = np.abs(split.table([b], 6)[0] - truth).mean()
        assert error_split < error_pooled
        assert error_split < 0.03 * truth.mean()
    # the cube (widths following the route) reads the same model
    cube = split.cube(np.array([1.0, 2.0, 4.0]), 6)
    for row, b in enumerate((1, 2, 4)):
        assert np.allclose(cube[0, row], split.table([b], 6)[0])


def test_batch_one_passes_read_the_pooled_curve_exactly() -> None:
    pooled = PassTimeProfile(1, 0.02, None, 9)
    split = PassTimeProfile(1, 0.02, None, 9, width_cost=True)
    rng = np.random.default_rng(1)
    for _ in range(2_000):
        n = int(rng.integers(1, 9))
        seconds = world(n, 1) * float(np.exp(0.1 * rng.standard_normal()))
        pooled.update(0, n, 1, seconds, n)
        split.update(0, n, 1, seconds, n)
    assert split.fit_sequence_cost(0) == 0.0  # no width ever differed from a cell's
    for b in (1.0, 2.5, 4.0):
        assert np.array_equal(split.table([b], 9), pooled.table([b], 9))


def test_a_width_that_never_meets_another_leaves_the_cost_at_zero() -> None:
    """Drafter-like passes (one position, the width alone sets N): nothing identifies ``c``,
    and the pooled curve in N is already exact for them."""
    split = PassTimeProfile(1, 0.02, None, 9, width_cost=True)
    for i in range(4_000):
        b = 1 + i % 4
        split.update(0, 1, b, world(1, b), b)
    assert split.fit_sequence_cost(0) == 0.0
    for b in (1, 2, 4):
        assert abs(split.table([b], 2)[0, 1] - world(1, b)) < 0.02 * world(1, b)


def test_the_prior_carries_the_profile_per_sequence_cost() -> None:
    seconds = tuple(tuple(world(n, b) for n in (1, 2, 4, 8)) for b in (1, 2, 4))
    table = PassTimeTable((1, 2, 4), (1, 2, 4, 8), seconds, 64)
    profile = WorldProfile("test", (ModelProfile("d", 1e5, table), ModelProfile("a", 1e6, table)), ())
    prior = prior_from_profile(profile)
    assert abs(prior.sequence_costs[0] - PER_SEQUENCE) < 1e-9
    totals = [total for total, _ in prior.pass_times[0]]
    assert totals[:4] == [1.0, 2.0, 4.0, 8.0]
    assert prior.pass_widths[0][:4] == (1.0, 1.5, 7 / 3, 7 / 3)  # N=4: widths 1, 2, 4
    policy = SpecRouter(prior=prior, width_cost="on")
    policy._domain(None, LadderInfo(("d", "a")))
    assert policy.profile is not None
    assert policy.profile.sequence_cost == list(prior.sequence_costs)
    table_read = policy.profile.table([4.0, 4.0], 3)[1]
    assert abs(table_read[1] - world(1, 4)) < 0.05 * world(1, 4)
    assert abs(table_read[2] - world(2, 4)) < 0.05 * world(2, 4)


def test_the_option_parses_from_a_spec_and_is_one_device_by_default() -> None:
    policy = make_policy("specrouter:width_cost=on")
    assert isinstance(policy, SpecRouter) and policy.width_cost == "on"
    assert SpecRouter().width_cost == "one_device"
    with pytest.raises(PolicySpecError):
        make_policy("specrouter:width_cost=sometimes")


def test_one_device_turns_the_width_axis_on_only_where_the_ladder_shares_one_device() -> None:
    for devices, axis in ((None, False), ((0, 1), False), ((0, 0), True)):
        policy = SpecRouter(width_cost="one_device")
        policy._domain(None, LadderInfo(("d", "a"), devices=devices))
        assert policy.profile is not None
        assert policy.profile.width_cost is axis
        assert policy._file_prefill is not axis  # one device: filed in decode positions
    on = SpecRouter(width_cost="on")
    on._domain(None, LadderInfo(("d", "a"), devices=(0, 1)))
    assert on.profile is not None and on.profile.width_cost and on._file_prefill
