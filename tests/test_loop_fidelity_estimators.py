"""Per-token acceptance estimator and profile calibration used by the fidelity loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from specrouter.experiments.fidelity import fidelity_rows, pair_acceptance, per_token_acceptance
from traces.records import RequestRecord, RoundRecord


def synthetic_rounds(alpha: float, lookaheads: list[int], seed: int) -> list[RoundRecord]:
    """Rounds of chain 0>2 whose verifies stop at the first rejection of i.i.d. Bernoulli(alpha) verdicts."""
    rng = np.random.default_rng(seed)
    rounds = []
    for i, k in enumerate(lookaheads):
        verdicts = rng.random(k) < alpha
        accepted = int(np.argmin(verdicts)) if not verdicts.all() else k
        rounds.append(
            RoundRecord(
                0,
                float(i),
                0.01,
                "0>2",
                (0, 2),
                (k,),
                (0, k),
                (0, accepted),
                (0.001, 0.002),
                (k, 1),
                accepted + 1,
            )  # fmt: skip
        )
    return rounds


@pytest.mark.parametrize("alpha", [0.3, 0.6, 0.85])
def test_mle_recovers_alpha_whatever_the_lookahead(alpha: float) -> None:
    short = synthetic_rounds(alpha, [1] * 4000, seed=1)
    long = synthetic_rounds(alpha, [8] * 1500, seed=2)
    mixed = synthetic_rounds(alpha, [1 + i % 8 for i in range(3000)], seed=3)
    for rounds in (short, long, mixed):
        estimate, verifies = per_token_acceptance(rounds)[(0, 2)]
        assert verifies == len(rounds)
        assert estimate == pytest.approx(alpha, abs=0.03)
    # the lookahead-dependent ratio is NOT comparable across lookaheads (why the MLE rows exist)
    ratio_short = pair_acceptance(short)[(0, 2)]
    ratio_long = pair_acceptance(long)[(0, 2)]
    assert ratio_short[0] / ratio_short[1] - ratio_long[0] / ratio_long[1] > 0.1


def test_mle_counts_only_verifies_that_rejected() -> None:
    rounds = synthetic_rounds(1.0, [4, 4], seed=0)  # everything accepted: alpha_hat = 1
    assert per_token_acceptance(rounds)[(0, 2)] == (1.0, 2)
    rejected_at_once = synthetic_rounds(0.0, [4, 2, 1], seed=0)
    assert per_token_acceptance(rejected_at_once)[(0, 2)] == (0.0, 3)


def test_fidelity_rows_carry_alpha_rows_for_both_worlds() -> None:
    requests = [RequestRecord(0, 0.0, 0.1, 0.5, 16, 11)]
    sim = synthetic_rounds(0.8, [4] * 500, seed=4)
    real = synthetic_rounds(0.8, [1] * 1500, seed=5)
    rows = {r["metric"]: r for r in fidelity_rows(requests, requests, sim, real)}
    row = rows["alpha M0->M2"]
    assert row["samples"] == [500, 1500]
    assert abs(row["error"]) < 0.06  # same per-token alpha, different lookaheads
    assert abs(rows["acceptance M0->M2"]["error"]) > 0.2  # the per-round ratio disagrees
    assert not math.isnan(row["predicted"])
