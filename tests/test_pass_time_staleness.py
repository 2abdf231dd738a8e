"""Pass-time cells left behind follow the shift of the cells passes moved to
(``PassTimeProfile(follow_shifts=True)``, SpecRouter's default where the curve is filed with the
prefill term).  (Not reading such cells at all, ``stale_passes``, was tried and removed:
docs/policies.md, "Stale pass-time cells under a slowdown".)

Where a pass is filed moves with the world: under a slowdown every pass takes longer and the prompt
positions filed with it (``prefill_rate * seconds``) carry it up the curve, so the cells it left
keep the old, fast times and a short verify reads far cheaper than it is.
"""

from __future__ import annotations

import pytest

from policies import SpecRouter, make_policy
from policies.contract import LadderInfo
from policies.estimators import PassTimeProfile, median_step


def file_passes(profile: PassTimeProfile, total: int, seconds: float, count: int) -> None:
    for _ in range(count):
        profile.update(0, 1, total, seconds)  # one position per sequence, `total` sequences


def shifted(follow: bool, factor: float) -> PassTimeProfile:
    """Settled cells at N = 10, 20, 150, 200; after a snapshot only 150 and 200 see passes, at
    ``factor`` times their old time; then the next snapshot."""
    profile = PassTimeProfile(1, 0.02, None, 64, follow_shifts=follow)
    for total, seconds in ((10, 0.020), (20, 0.022), (150, 0.040), (200, 0.045)):
        file_passes(profile, total, seconds, 100)
    profile.snapshot()
    for _ in range(100):
        file_passes(profile, 150, 0.040 * factor, 1)
        file_passes(profile, 200, 0.045 * factor, 1)
    profile.snapshot()
    return profile


def test_cells_left_behind_follow_the_shift_of_the_cells_passes_moved_to() -> None:
    followed, kept = shifted(True, 2.0), shifted(False, 2.0)
    followed_curve, kept_curve = followed.curve(0, 1.0, 64), kept.curve(0, 1.0, 64)
    assert followed_curve is not None and kept_curve is not None
    assert kept_curve[10] == pytest.approx(0.020, rel=0.01)
    assert followed_curve[10] == pytest.approx(0.040, rel=0.05)  # moved 2x, like the cells reached
    assert followed_curve[20] == pytest.approx(0.044, rel=0.05)
    assert followed.follow_shift(0) == 1.0  # nothing filed since: nothing moves again


def test_a_shift_within_the_noise_moves_nothing() -> None:
    small = shifted(True, 1.08)
    curve = small.curve(0, 1.0, 64)
    assert curve is not None and curve[10] == pytest.approx(0.020, rel=0.01)


def test_specrouter_follows_shifts_only_where_the_curve_is_filed_with_the_prefill_term() -> None:
    pipelined = SpecRouter()
    pipelined._domain(None, LadderInfo(("a", "b", "c"), devices=(0, 1, 2)))
    one_device = SpecRouter()  # the lockstep loop: filed in decode positions, no term to shift passes
    one_device._domain(None, LadderInfo(("a", "b", "c"), devices=(0, 0, 0)))
    assert pipelined.profile is not None and pipelined.profile.follow_shifts
    assert one_device.profile is not None and not one_device.profile.follow_shifts
    off = make_policy("specrouter:follow_shifts=false")
    assert isinstance(off, SpecRouter)
    off._domain(None, LadderInfo(("a", "b", "c"), devices=(0, 1, 2)))
    assert off.profile is not None and not off.profile.follow_shifts


def test_a_young_cell_stays_within_its_samples() -> None:
    """The first steps of a cell's median (1/c) never pass the sample: a second pass 8% faster
    than the first used to halve the cell (21.2 -> 10.6 ms), and short verifies then looked
    40% cheaper than they are."""
    profile = PassTimeProfile(4)
    samples = [0.02115, 0.01948, 0.02061, 0.01935, 0.01985, 0.02012]
    for seconds in samples:
        profile.update(3, 3, 1, seconds, positions=3)
        assert min(samples) <= profile._time[3][3] <= max(samples)
    assert median_step(0.02115, 0.01948, 0.5, clip=True) == 0.01948
    assert median_step(0.02115, 0.01948, 0.5, clip=False) == pytest.approx(0.010575)  # the old step
    assert median_step(0.020, 0.030, 0.05, clip=False) == pytest.approx(0.021)  # settled: a plain step
