"""Synthetic workloads: seeded, sorted, and statistically what they claim to be.

Statistical checks use tolerances of several standard errors so they are stable for a fixed
seed yet fail when a parameter is ignored (e.g. a gamma CV of 3 read as Poisson gives CV 1).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traces.loaders import load_trace, write_trace
from traces.synthetic import (
    Arrivals,
    Shift,
    Workload,
    domain_shift,
    empirical,
    fixed,
    gamma,
    lengths_from_trace,
    load_ramp,
    lognormal,
    on_off,
    poisson,
    workload_from_dict,
)


def arrivals_of(workload: Workload) -> np.ndarray:
    return np.array([r.arrival for r in workload])


def test_same_seed_same_workload_other_seed_other_workload() -> None:
    def make(seed: int) -> Workload:
        return Workload(gamma(20, 2), lognormal(300), lognormal(100), {"a": 1, "b": 2}, count=500, seed=seed)

    assert list(make(3)) == list(make(3))
    assert list(make(3)) != list(make(4))


def test_poisson_rate_and_exponential_gaps() -> None:
    times = arrivals_of(Workload(poisson(50), fixed(1), fixed(1), duration=400, seed=1))
    expected = 50 * 400
    assert abs(len(times) - expected) < 5 * math.sqrt(expected)
    gaps = np.diff(times)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("cv", [0.5, 3.0])
def test_gamma_arrivals_have_the_requested_coefficient_of_variation(cv: float) -> None:
    gaps = np.diff(arrivals_of(Workload(gamma(20, cv), fixed(1), fixed(1), count=40_000, seed=2)))
    assert gaps.mean() == pytest.approx(1 / 20, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.08)


def test_on_off_keeps_the_mean_rate_and_is_bursty() -> None:
    duration, rate = 20_000.0, 5.0
    times = arrivals_of(
        Workload(on_off(rate, on_seconds=2, off_seconds=6), fixed(1), fixed(1), duration=duration)
    )
    # total ON time ~ duration/4 with cycle-count noise: allow 10 % (about 4 sigma)
    assert len(times) / duration == pytest.approx(rate, rel=0.10)
    per_second = np.bincount(times.astype(np.int64), minlength=int(duration))
    dispersion = per_second.var() / per_second.mean()  # 1 for Poisson
    assert dispersion > 5
    assert (per_second == 0).mean() > 0.5  # most seconds fall in OFF periods


def test_ramp_follows_the_integrated_rate() -> None:
    workload = load_ramp(2.0, 42.0, 200.0, fixed(1), fixed(1), seed=5)
    times = arrivals_of(workload)
    for t in (50.0, 100.0, 200.0):
        expected = 2.0 * t + 0.5 * (40.0 / 200.0) * t * t  # Λ(t) = ∫ (2 + 0.2 s) ds
        assert abs((times < t).sum() - expected) < 5 * math.sqrt(expected)


def test_step_shift_changes_the_rate() -> None:
    workload = Workload(poisson(5), fixed(1), fixed(1), shifts=(Shift(300, rate=40),), duration=600, seed=9)
    times = arrivals_of(workload)
    before, after = (times < 300).sum(), (times >= 300).sum()
    assert abs(before - 1500) < 5 * math.sqrt(1500) and abs(after - 12000) < 5 * math.sqrt(12000)


def test_domain_shift_half_way_and_mix_proportions() -> None:
    workload = domain_shift(20, 400, {"chat": 3, "code": 1}, {"math": 1}, fixed(10), fixed(5), seed=4)
    requests = list(workload)
    first = [r for r in requests if r.arrival < 200]
    assert all(r.domain == "math" for r in requests if r.arrival >= 200)
    share = sum(r.domain == "code" for r in first) / len(first)
    assert abs(share - 0.25) < 5 * math.sqrt(0.25 * 0.75 / len(first))
    assert {r.domain for r in first} == {"chat", "code"}


def test_shift_changes_length_distributions() -> None:
    shift = Shift(50, prompt=fixed(7), output=fixed(3))
    requests = list(Workload(poisson(10), fixed(100), fixed(20), shifts=(shift,), duration=100, seed=1))
    assert {(r.prompt_tokens, r.output_tokens) for r in requests if r.arrival < 50} == {(100, 20)}
    assert {(r.prompt_tokens, r.output_tokens) for r in requests if r.arrival >= 50} == {(7, 3)}


def test_length_distributions() -> None:
    rng = np.random.default_rng(0)
    draws = lognormal(400, sigma=0.8, low=1).draw(rng, 200_000)
    assert draws.mean() == pytest.approx(400, rel=0.02)
    assert np.median(draws) == pytest.approx(400 * math.exp(-(0.8**2) / 2), rel=0.02)
    clipped = lognormal(400, sigma=2, low=10, high=500).draw(rng, 10_000)
    assert clipped.min() >= 10 and clipped.max() <= 500
    values = empirical([3, 3, 9]).draw(rng, 30_000)
    assert set(values.tolist()) == {3, 9} and (values == 9).mean() == pytest.approx(1 / 3, abs=0.02)


def test_empirical_lengths_from_a_trace(tmp_path: Path) -> None:
    source = Workload(poisson(10), lognormal(500), lognormal(50), count=300, seed=1)
    write_trace(source, tmp_path / "t.jsonl")
    prompt, output = lengths_from_trace(load_trace(tmp_path / "t.jsonl"))
    sampled = list(Workload(poisson(10), prompt, output, count=200, seed=2))
    assert {r.prompt_tokens for r in sampled} <= {r.prompt_tokens for r in source}


def test_count_and_duration_stop_the_workload() -> None:
    assert len(list(Workload(poisson(100), fixed(1), fixed(1), count=123))) == 123
    assert arrivals_of(Workload(poisson(100), fixed(1), fixed(1), duration=3.0)).max() < 3.0
    short = list(Workload(poisson(100), fixed(1), fixed(1), duration=1.0, count=10_000))
    assert 0 < len(short) < 10_000


def test_invalid_workloads_are_rejected() -> None:
    with pytest.raises(ValueError, match="needs duration= or count="):
        Workload(poisson(1), fixed(1), fixed(1))
    with pytest.raises(ValueError, match="sorted"):
        Workload(poisson(1), fixed(1), fixed(1), shifts=(Shift(5), Shift(2)), count=3)
    with pytest.raises(ValueError, match="would never end"):
        Workload(poisson(1), fixed(1), fixed(1), shifts=(Shift(5, rate=0),), count=3)
    with pytest.raises(ValueError, match="cv > 0"):
        Arrivals(1.0, cv=0)
    with pytest.raises(ValueError, match="domain weights"):
        list(Workload(poisson(1), fixed(1), fixed(1), {"a": -1}, count=3))


def test_workload_from_dict_matches_the_python_api_and_names_bad_keys() -> None:
    spec = {
        "arrivals": {"rate": 8, "cv": 2},
        "prompt": {"kind": "lognormal", "mean": 300, "sigma": 0.5},
        "output": {"kind": "fixed", "value": 16},
        "domains": {"chat": 1, "code": 1},
        "shifts": [{"at": 30, "rate": 16, "ramp": True, "domains": {"code": 1}}],
        "duration": 60,
        "seed": 11,
    }
    direct = Workload(
        gamma(8, 2), lognormal(300, 0.5), fixed(16), {"chat": 1, "code": 1},
        (Shift(30, rate=16, ramp=True, domains={"code": 1}),), duration=60, seed=11,
    )  # fmt: skip
    assert list(workload_from_dict(spec)) == list(direct)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['rates'\]"):
        workload_from_dict({**spec, "rates": 1})
    with pytest.raises(ValueError, match="shifts\\[0\\]"):
        workload_from_dict({**spec, "shifts": [{"at": 1, "speed": 2}]})


@settings(max_examples=30, deadline=None)
@given(
    rate=st.floats(0.5, 50),
    cv=st.floats(0.3, 4),
    ramp_to=st.floats(0, 50),
    on=st.none() | st.floats(0.1, 5),
    seed=st.integers(0, 2**32),
)
def test_any_workload_is_sorted_numbered_and_bounded(
    rate: float, cv: float, ramp_to: float, on: float | None, seed: int
) -> None:
    arrivals = Arrivals(rate, cv, on, None if on is None else 2 * on)
    shifts = (Shift(10, rate=ramp_to, ramp=True), Shift(15, domains={"x": 1}))
    requests = list(
        Workload(arrivals, lognormal(100), fixed(4), {"y": 1}, shifts, duration=20, count=500, seed=seed)
    )
    times = [r.arrival for r in requests]
    assert times == sorted(times) and all(0 <= t < 20 for t in times)
    assert [r.request_id for r in requests] == list(range(len(requests)))
    assert all(r.domain == ("x" if r.arrival >= 15 else "y") for r in requests)
