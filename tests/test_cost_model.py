from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import Route
from policies.cost_model import (
    accepted_emission_pmf,
    constant_pass_time,
    enumerate_chains,
    enumerate_routes,
    estimate_round,
    leviathan_speedup,
    t_eff,
)
from policies.plan import Verify, drive

alphas = st.floats(0.0, 1.0) | st.sampled_from([0.0, 1.0])
times = st.floats(1e-4, 10.0)


@given(alpha=alphas, gamma=st.integers(1, 16), t_draft=times, t_target=times)
def test_two_levels_equal_leviathan_theorem_3_8(alpha, gamma, t_draft, t_target) -> None:
    route = Route((0, 1), (gamma,), 1)
    predicted = t_eff(route, lambda i, j: alpha, constant_pass_time([t_draft, t_target]))
    assert math.isclose(
        t_target / predicted, leviathan_speedup(alpha, gamma, t_draft / t_target), rel_tol=1e-12
    )


@given(k=st.integers(1, 6), t=st.lists(times, min_size=6, max_size=6), extra=st.floats(0, 1))
def test_target_only_costs_one_target_decode_per_token(k, t, extra) -> None:
    def pass_time(model: int, tokens: int) -> float:
        return t[model] + extra * (tokens - 1)

    assert t_eff(Route.target_only(k - 1), lambda i, j: 0.5, pass_time) == t[k - 1]


def monotone_pass_time(base: list[float], slope: float):
    return lambda model, tokens: base[model] * (1.0 + slope * (tokens - 1))


@settings(max_examples=200)
@given(
    k=st.integers(2, 5),
    data=st.data(),
    base=st.lists(times, min_size=5, max_size=5),
    slope=st.floats(0.0, 2.0),
)
def test_zero_acceptance_into_the_target_never_beats_target_only(k, data, base, slope) -> None:
    pass_time = monotone_pass_time(base, slope)
    target = k - 1
    chain = data.draw(st.sampled_from(enumerate_chains(k)))
    lookaheads = tuple(data.draw(st.integers(1, 8)) for _ in chain[:-1])
    inner = data.draw(alphas)

    def alpha(lower: int, upper: int) -> float:
        return 0.0 if upper == target else inner

    route = Route(chain, lookaheads, target)
    assert t_eff(route, alpha, pass_time) >= pass_time(target, 1) * (1 - 1e-12)


@settings(max_examples=200)
@given(k=st.integers(1, 5), data=st.data(), base=st.lists(times, min_size=5, max_size=5))
def test_results_are_finite_for_every_alpha_including_endpoints(k, data, base) -> None:
    chain = data.draw(st.sampled_from(enumerate_chains(k)))
    lookaheads = tuple(data.draw(st.integers(1, 8)) for _ in chain[:-1])
    matrix = {(i, j): data.draw(alphas) for i in range(k) for j in range(k)}
    estimate = estimate_round(
        Route(chain, lookaheads, k - 1), lambda i, j: matrix[i, j], monotone_pass_time(base, 0.1)
    )
    assert math.isfinite(estimate.latency) and math.isfinite(estimate.tokens)
    assert estimate.tokens >= 1.0 - 1e-9 and estimate.latency > 0


@given(n=st.integers(0, 20), alpha=alphas)
def test_emission_pmf_is_a_distribution_with_the_closed_form_mean(n, alpha) -> None:
    pmf = accepted_emission_pmf(n, alpha)
    assert math.isclose(sum(pmf), 1.0, rel_tol=1e-12)
    mean = sum(k * p for k, p in enumerate(pmf))
    closed = n + 1 if alpha == 1.0 else (1 - alpha ** (n + 1)) / (1 - alpha)
    assert math.isclose(mean, closed, rel_tol=1e-9)


def test_chain_enumeration_counts_and_contents() -> None:
    for k in range(1, 7):
        chains = enumerate_chains(k)
        assert len(chains) == 2 ** (k - 1) == len(set(chains))
        assert (k - 1,) in chains
        for chain in chains:
            Route(chain, (1,) * (len(chain) - 1), k - 1)
    assert len(list(enumerate_routes(3, 2))) == 1 + 2 + 2 + 4


@pytest.mark.parametrize(
    "route", [Route((0, 1, 2), (4, 1), 2), Route((0, 1, 2), (3, 3), 2), Route((0, 1, 2, 3), (2, 2, 1), 3)]
)
def test_multi_level_estimate_matches_monte_carlo_of_the_plan(route: Route) -> None:
    """The estimate is exact for the process policies.plan executes (no Jensen gap)."""
    alpha_pairs = {(0, 1): 0.7, (1, 2): 0.8, (2, 3): 0.6, (0, 2): 0.5, (0, 3): 0.5, (1, 3): 0.5}
    base = [1.0, 3.0, 10.0, 30.0]

    def pass_time(model: int, tokens: int) -> float:
        return base[model] * (1 + 0.1 * (tokens - 1))

    rng = np.random.default_rng(7)

    def answer(call):
        if not isinstance(call, Verify):
            return None
        a = alpha_pairs[route.chain[call.level - 1], call.model]
        accepted = 0
        while accepted < call.candidates and rng.random() < a:
            accepted += 1
        return accepted

    latency = tokens = 0.0
    for _ in range(20_000):
        calls, counts = drive(route, 10**6, answer)
        latency += sum(pass_time(c.model, c.candidates + 1 if isinstance(c, Verify) else 1) for c in calls)
        tokens += counts.emitted[-1]
    predicted = t_eff(route, lambda i, j: alpha_pairs[i, j], pass_time)
    assert math.isclose(latency / tokens, predicted, rel_tol=0.01)
