"""Sampling through 2- and 3-level chains reproduces the target's distribution; wrong rules do not.

Models: tiny random Llamas over an 8-token vocabulary.  ``NOISY`` (drafter TV to the target
~0.37, middle ~0.25) exercises rejections and residual draws; ``AGREEING`` (drafts accepted ~95%
of the time, asserted) exercises fully accepted rounds, whose bonus tokens land inside the
tabulated positions (lookaheads of 1 and 2).  For ``N`` independent sequences (one generator
each) we tabulate the first three generated tokens (512 cells) and compare them with the
target's exact distribution under the same temperature / top-k / top-p processing, computed by
enumerating all 512 continuations with full forward passes, by a chi-square test (cells with
expected count < 5 pooled; a sample in a cell of probability 0 fails outright).

False-alarm rate: a correct rule fails with probability 1e-3 per check (threshold p < 1e-3),
four correct checks, so <= 0.4% per run if seeds were random.  Seeds are fixed, so the test is
deterministic.  Power: the wrong variants (residual resampled from the full p; the drafter's q
handed up to the target) give p-values below 1e-10 at N = 2000 on these ladders.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
import pytest
import torch
from scipy import stats

from backend.executor import LOSSLESS, MultiLevelExecutor, VerifyRule
from backend.ladder import Ladder
from backend.sampling import SamplingConfig, processed_probs, residual, total_variation, verify_greedy
from backend.testing import agreeing_ladder, tiny_ladder
from policies.contract import Route

torch.set_num_threads(1)
VOCAB, FIRST, SAMPLES, ALPHA = 8, 3, 2000, 1e-3
NOISY = tiny_ladder(levels=3, seed=5, vocab_size=VOCAB, noise=[0.3, 0.15, 0.0])
AGREEING = agreeing_ladder(levels=3, seed=5, vocab_size=VOCAB, noise=0.06)
LADDERS = {"noisy": NOISY, "agreeing": AGREEING}
PROMPT = [1, 2, 3]
TWO_LEVEL = Route((0, 2), (2,), 2)  # target bonus at position 2
THREE_LEVEL = Route((0, 1, 2), (1, 2), 2)  # middle bonus at position 1
THREE_LEVEL_WIDE = Route((0, 1, 2), (2, 1), 2)
THREE_LEVEL_SHORT = Route((0, 1, 2), (1, 1), 2)
T1 = SamplingConfig(temperature=1.0)
COOL_TOP_K = SamplingConfig(temperature=0.7, top_k=5)
HOT_TOP_K_TOP_P = SamplingConfig(temperature=1.5, top_k=6, top_p=0.9)
WARM_TOP_K = SamplingConfig(temperature=0.8, top_k=4)


def exact_target_distribution(
    ladder: Ladder, config: SamplingConfig, prompt: list[int] = PROMPT
) -> np.ndarray:
    """P(first FIRST tokens = c) for every continuation c, by enumeration (row-major over c)."""
    continuations = list(itertools.product(range(VOCAB), repeat=FIRST))
    with torch.inference_mode():
        inputs = torch.tensor([prompt + list(c) for c in continuations])
        logits = ladder.models[-1](input_ids=inputs).logits[:, len(prompt) - 1 : -1]
    probs = processed_probs(logits, config)
    out = np.ones(len(continuations))
    for row, continuation in enumerate(continuations):
        for step, token in enumerate(continuation):
            out[row] *= float(probs[row, step, token])
    return out


class ChainRun(NamedTuple):
    p_value: float
    acceptance: float
    """Target-level accepted / proposed over every round."""
    full_accepts: int
    """Rounds in which every verifier accepted every candidate (a bonus token)."""


def chain_run(
    ladder: Ladder,
    route: Route,
    config: SamplingConfig,
    rule: VerifyRule,
    seed: int = 0,
    prompt: list[int] = PROMPT,
) -> ChainRun:
    executor = MultiLevelExecutor(ladder, config, seed=seed, rule=rule, eos_token_id=-1)
    produced = dict.fromkeys(range(SAMPLES), 0)
    for seq_id in produced:
        executor.add(seq_id, prompt)
    proposed = accepted = full = 0
    while any(n < FIRST for n in produced.values()):
        # room 6: long enough that drafter tokens reach the target through every level
        outcomes = executor.step({s: (route, 6) for s, n in produced.items() if n < FIRST})
        for seq_id, outcome in outcomes.items():
            produced[seq_id] += len(outcome.tokens)
            verifiers = outcome.feedback.levels[1:]
            proposed += verifiers[-1].proposed
            accepted += verifiers[-1].accepted
            full += all(level.accepted == level.proposed for level in verifiers)
    counts = np.zeros(VOCAB**FIRST)
    for seq_id in produced:
        first = executor.tokens(seq_id)[len(prompt) : len(prompt) + FIRST]
        counts[int(np.ravel_multi_index(first, (VOCAB,) * FIRST))] += 1
    exact = exact_target_distribution(ladder, config, prompt)
    return ChainRun(chi_square_p_value(counts, exact), accepted / max(proposed, 1), full)


def chi_square_p_value(counts: np.ndarray, probabilities: np.ndarray) -> float:
    expected = probabilities * counts.sum()
    if counts[expected == 0].sum() > 0:  # a continuation top-k / top-p forbids was emitted
        return 0.0
    big, small = expected >= 5, (expected > 0) & (expected < 5)
    observed = np.append(counts[big], counts[small].sum())
    expected_pooled = np.append(expected[big], expected[small].sum())
    if expected_pooled[-1] == 0:
        observed, expected_pooled = observed[:-1], expected_pooled[:-1]
    return float(stats.chisquare(observed, expected_pooled).pvalue)


CASES = [
    ("noisy", TWO_LEVEL, T1),
    ("noisy", THREE_LEVEL, COOL_TOP_K),
    ("noisy", THREE_LEVEL_WIDE, HOT_TOP_K_TOP_P),
    ("agreeing", THREE_LEVEL_SHORT, WARM_TOP_K),
]
CASE_IDS = ["2-level-T1", "3-level-T0.7-topk", "3-level-T1.5-topk-topp", "agreeing-3-level-T0.8-topk"]


@pytest.mark.parametrize(("ladder", "route", "config"), CASES, ids=CASE_IDS)
def test_chain_samples_follow_the_target_distribution(
    ladder: str, route: Route, config: SamplingConfig
) -> None:
    run = chain_run(LADDERS[ladder], route, config, LOSSLESS)
    assert run.p_value > ALPHA
    if ladder == "agreeing":  # the case exists for its fully accepted rounds: make sure they happen
        assert run.acceptance >= 0.8 and run.full_accepts >= SAMPLES // 2


@pytest.mark.parametrize(
    ("ladder", "route", "config", "rule"),
    [
        ("noisy", TWO_LEVEL, T1, VerifyRule(residual=False)),
        ("noisy", THREE_LEVEL, COOL_TOP_K, VerifyRule(q_from_drafter=True)),
        ("agreeing", THREE_LEVEL_SHORT, WARM_TOP_K, VerifyRule(residual=False)),
    ],
    ids=["2-level-T1-full-p-resample", "3-level-T0.7-topk-drafter-q", "agreeing-3-level-full-p-resample"],
)
def test_known_wrong_variants_fail_the_same_test(
    ladder: str, route: Route, config: SamplingConfig, rule: VerifyRule
) -> None:
    assert chain_run(LADDERS[ladder], route, config, rule).p_value < ALPHA


def test_the_enumerated_distribution_and_the_chi_square_agree_with_direct_sampling() -> None:
    """The yardstick itself: target-alone samples pass it, samples at the wrong temperature fail."""
    probabilities = exact_target_distribution(NOISY, COOL_TOP_K)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(0)
    right = np.bincount(
        rng.choice(probabilities.size, SAMPLES, p=probabilities), minlength=probabilities.size
    )
    assert chi_square_p_value(right.astype(float), probabilities) > ALPHA
    hotter = exact_target_distribution(NOISY, SamplingConfig(temperature=0.85, top_k=5))
    wrong = np.bincount(rng.choice(hotter.size, SAMPLES, p=hotter), minlength=hotter.size)
    assert chi_square_p_value(wrong.astype(float), probabilities) < ALPHA


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
