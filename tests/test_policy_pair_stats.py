"""PairStats: the per-pair acceptance and TV-similarity estimates SpecRouter plans with."""

from __future__ import annotations

import math

import pytest

from policies.estimators import PairStats


def truncated_geometric_mean(alpha: float, candidates: float) -> float:
    """Mean accepted per verify of ``candidates`` i.i.d. candidates at acceptance ``alpha``."""
    return alpha * (1.0 - alpha**candidates) / (1.0 - alpha)


def test_single_verify_levels_give_the_censored_geometric_mle() -> None:
    pairs = PairStats(3, rate=0.5)
    pairs.add_acceptance(0, 2, proposed=4, accepted=2, emitted=3)  # 2 accepted, then a rejection
    pairs.add_acceptance(0, 2, proposed=4, accepted=4, emitted=5)  # all accepted: no rejection
    # discounted: (2 * 0.5 + 4) / (3 * 0.5 + 4)
    assert pairs.acceptance(0, 2) == pytest.approx((5.0 / 5.5, 5.5))


def test_pooled_levels_solve_the_method_of_moments_and_follow_new_rounds() -> None:
    """A level that verified several times in a round: the acceptance solves
    ``a (1 - a^n) / (1 - a) = accepted per verify``; a later round moves it (the solution kept
    between re-plans is for the moments it was solved at), a pair left alone keeps its value."""
    pairs = PairStats(3, rate=0.02)
    pairs.add_acceptance(0, 1, proposed=12, accepted=6, emitted=9)  # 3 verifies of 4 candidates
    pairs.add_acceptance(1, 2, proposed=12, accepted=9, emitted=12)
    first, weight = pairs.acceptance(0, 1)
    assert truncated_geometric_mean(first, 4.0) == pytest.approx(2.0, abs=1e-5)
    assert weight == pytest.approx(6 + 3)
    untouched = pairs.acceptance(1, 2)
    pairs.add_acceptance(0, 1, proposed=12, accepted=11, emitted=14)  # a better round
    second, _ = pairs.acceptance(0, 1)
    assert second > first
    accepted, verifies = 6 * 0.98 + 11, 3 * 0.98 + 3
    candidates = 12 * 0.98 + 12
    assert truncated_geometric_mean(second, candidates / verifies) == pytest.approx(
        accepted / verifies, abs=1e-5
    )
    assert pairs.acceptance(1, 2) == untouched


def test_tv_samples_fold_into_a_count_weighted_ema_and_bad_ones_are_dropped() -> None:
    pairs = PairStats(2, rate=0.5)
    pairs.add_tvs([(0, 1, (0.2, 0.4))])  # 1 - mean TV = 0.7, weight 2
    assert pairs.similarity[1] == pytest.approx(0.7)
    pairs.add_tvs([(0, 1, (0.0, 0.0, 0.0, 0.0)), (0, 1, ()), (0, 1, (math.nan,)), (0, 1, (1.5,))])
    # weight 2 * 0.5 + 4 = 5: 0.7 + (4 / 5) (1.0 - 0.7); the empty, NaN and > 1 samples change nothing
    assert pairs.similarity[1] == pytest.approx(0.94)
    assert pairs.similarity_weight[1] == pytest.approx(5.0)
