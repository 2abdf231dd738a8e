"""Sampling through 2- and 3-level chains reproduces the target's distribution; wrong rules do not.

Models: 3 tiny random Llamas over an 8-token vocabulary (drafter TV to the target ~0.37,
middle ~0.25 on the first two tokens).  For ``N`` independent sequences (one generator each) we
tabulate the first two generated tokens (64 cells) and compare them with the target's exact
distribution, computed by enumerating all 64 continuations with full forward passes, by a
chi-square test (cells with expected count < 5 pooled).

False-alarm rate: a correct rule fails with probability 1e-3 per check (threshold p < 1e-3),
three correct checks, so <= 0.3% per run if seeds were random.  Seeds are fixed, so the test is
deterministic.  Power: the wrong variants (residual resampled from the full p; the drafter's q
handed up to the target) give p-values below 1e-20 at N = 2000 on this ladder.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from backend.executor import LOSSLESS, MultiLevelExecutor, VerifyRule
from backend.sampling import SamplingConfig, processed_probs, residual, total_variation, verify_greedy
from backend.testing import tiny_ladder
from policies.contract import Route

torch.set_num_threads(1)
VOCAB, FIRST, SAMPLES, ALPHA = 8, 2, 2000, 1e-3
LADDER = tiny_ladder(levels=3, seed=5, vocab_size=VOCAB, noise=[0.3, 0.15, 0.0])
PROMPT = [1, 2, 3]
TWO_LEVEL = Route((0, 2), (3,), 2)
THREE_LEVEL = Route((0, 1, 2), (2, 2), 2)


def exact_target_distribution(config: SamplingConfig) -> np.ndarray:
    continuations = list(itertools.product(range(VOCAB), repeat=FIRST))
    with torch.inference_mode():
        inputs = torch.tensor([PROMPT + list(c) for c in continuations])
        logits = LADDER.models[-1](input_ids=inputs).logits[:, len(PROMPT) - 1 : -1]
    probs = processed_probs(logits, config)
    out = np.ones(len(continuations))
    for row, continuation in enumerate(continuations):
        for step, token in enumerate(continuation):
            out[row] *= float(probs[row, step, token])
    return out


def chain_p_value(route: Route, config: SamplingConfig, rule: VerifyRule, seed: int = 0) -> float:
    executor = MultiLevelExecutor(LADDER, config, seed=seed, rule=rule)
    produced = dict.fromkeys(range(SAMPLES), 0)
    for seq_id in produced:
        executor.add(seq_id, PROMPT)
    while any(n < FIRST for n in produced.values()):
        # room 6: long enough that drafter tokens reach the target through every level
        outcomes = executor.step({s: (route, 6) for s, n in produced.items() if n < FIRST})
        for seq_id, outcome in outcomes.items():
            produced[seq_id] += len(outcome.tokens)
    counts = np.zeros(VOCAB**FIRST)
    for seq_id in produced:
        first, second = executor.tokens(seq_id)[len(PROMPT) : len(PROMPT) + FIRST]
        counts[first * VOCAB + second] += 1
    expected = exact_target_distribution(config) * SAMPLES
    if counts[expected == 0].sum() > 0:  # a continuation top-k / top-p forbids was emitted
        return 0.0
    big, small = expected >= 5, (expected > 0) & (expected < 5)
    observed = np.append(counts[big], counts[small].sum())
    expected_pooled = np.append(expected[big], expected[small].sum())
    if expected_pooled[-1] == 0:
        observed, expected_pooled = observed[:-1], expected_pooled[:-1]
    return float(stats.chisquare(observed, expected_pooled).pvalue)


CASES = [
    (TWO_LEVEL, SamplingConfig(temperature=1.0)),
    (THREE_LEVEL, SamplingConfig(temperature=1.0)),
    (THREE_LEVEL, SamplingConfig(temperature=0.8, top_k=6, top_p=0.9)),
]


@pytest.mark.parametrize(("route", "config"), CASES, ids=["2-level", "3-level", "3-level-topk-topp"])
def test_chain_samples_follow_the_target_distribution(route: Route, config: SamplingConfig) -> None:
    assert chain_p_value(route, config, LOSSLESS) > ALPHA


@pytest.mark.parametrize(
    ("route", "rule"),
    [
        (TWO_LEVEL, VerifyRule(residual=False)),
        (THREE_LEVEL, VerifyRule(residual=False)),
        (THREE_LEVEL, VerifyRule(q_from_drafter=True)),
    ],
    ids=["2-level-full-p-resample", "3-level-full-p-resample", "3-level-drafter-q"],
)
def test_known_wrong_variants_fail_the_same_test(route: Route, rule: VerifyRule) -> None:
    assert chain_p_value(route, SamplingConfig(temperature=1.0), rule) < ALPHA


def test_residual_makes_one_verification_exact() -> None:
    """P(emit x) = min(p, q)(x) + P(reject) * residual(x) equals p(x) for random p, q."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        p = torch.softmax(torch.randn(16, generator=generator, dtype=torch.float64) * 2, dim=0)
        q = torch.softmax(torch.randn(16, generator=generator, dtype=torch.float64) * 2, dim=0)
        rejected = 1 - torch.minimum(p, q).sum()
        torch.testing.assert_close(torch.minimum(p, q) + rejected * residual(p, q), p)
        torch.testing.assert_close(rejected, total_variation(p, q))


def test_processing_filters_top_k_and_top_p() -> None:
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    top2 = processed_probs(logits, SamplingConfig(temperature=1.0, top_k=2))[0]
    assert (top2[2:] == 0).all() and abs(float(top2.sum()) - 1) < 1e-12
    nucleus = processed_probs(logits, SamplingConfig(temperature=1.0, top_p=0.7))[0]
    assert (nucleus[:2] > 0).all() and (nucleus[2:] == 0).all()  # softmax mass: 0.64, 0.24, ...
    assert verify_greedy(logits.repeat(3, 1), [0, 1]).accepted == 1
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(temperature=1.0, top_p=0.0)
