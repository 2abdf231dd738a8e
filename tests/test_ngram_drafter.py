"""The model-free n-gram drafter: its lookup, and chains that start with it are lossless.

Greedy: every chain with the lookup at the bottom emits exactly the target-only greedy tokens
(float64 tiny ladders, prompts with repeated spans so the lookup proposes, and the test checks
it did).  Sampling: the first three tokens after a repetitive prompt follow the target's exact
distribution (the chi-square yardstick of ``test_backend_core_sampling``), and the known wrong
variants fail the same test with the lookup's point-mass ``q``.
"""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_backend_core_sampling import ALPHA, NOISY, T1, chain_run

from backend.executor import LOSSLESS, MultiLevelExecutor, VerifyRule
from backend.ngram import NgramDrafter, point_mass
from backend.sampling import SamplingConfig
from backend.testing import agreeing_ladder, reference_greedy, tiny_ladder
from policies.baselines import StaticChain
from policies.contract import LadderInfo, Route, RouteView
from policies.serving import Slot, start_round
from traces.request import Request

torch.set_num_threads(1)


# -- the lookup ----------------------------------------------------------------------------
def test_the_longest_suffix_match_wins_and_its_continuation_is_proposed() -> None:
    lookup = NgramDrafter(min_n=1, max_n=3)
    #              0  1  2  3  4  5  6  7  8  9
    tokens = [7, 1, 2, 3, 9, 8, 2, 3, 1, 2, 3]
    # suffix (1, 2, 3) matched at positions 1..3 (length 3) beats (2, 3) at 6..7 (more recent)
    assert lookup.propose(tokens, 2) == [9, 8]
    assert lookup.propose(tokens, 50) == tokens[4:]
    assert NgramDrafter(min_n=1, max_n=2).propose(tokens, 2) == [1, 2]  # the most recent (2, 3)


def test_no_match_of_at_least_min_n_proposes_nothing() -> None:
    assert NgramDrafter(min_n=2, max_n=4).propose([1, 2, 3, 4, 2], 4) == []
    assert NgramDrafter(min_n=1, max_n=4).propose([1, 2, 3, 4, 2], 4) == [3, 4, 2]
    assert NgramDrafter().propose([5], 3) == []
    assert NgramDrafter().propose([1, 2, 1, 2], 0) == []
    with pytest.raises(ValueError, match="min_n"):
        NgramDrafter(min_n=3, max_n=2)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=40), st.integers(1, 6), st.integers(1, 3))
def test_a_proposal_continues_an_earlier_occurrence_of_the_suffix(
    tokens: list[int], limit: int, min_n: int
) -> None:
    lookup = NgramDrafter(min_n=min_n, max_n=4)
    proposal = lookup.propose(tokens, limit)
    assert len(proposal) <= limit
    n = len(tokens)
    occurrences = [
        end
        for end in range(n - 1)
        if end + 1 >= min_n and tokens[end + 1 - min_n : end + 1] == tokens[n - min_n :]
    ]
    if not occurrences:
        assert proposal == []
        return
    assert proposal, (tokens, limit)
    assert any(tokens[end + 1 : end + 1 + len(proposal)] == proposal for end in occurrences)


# -- greedy chains with the lookup at the bottom are exact ---------------------------------
NOISY_LADDER = tiny_ladder(levels=3, seed=11).with_lookup(NgramDrafter(min_n=1, max_n=3))
AGREEING_LADDER = agreeing_ladder(levels=3, seed=0).with_lookup(NgramDrafter(min_n=1, max_n=3))
REPEATING_PROMPTS = [
    [5, 6, 7, 8, 5, 6, 7, 8, 5, 6],
    [1, 2, 3, 1, 2, 3, 4, 1, 2],
    [9, 10, 11, 12, 13, 9, 10],
    [3, 3, 3, 3],
]


def lookup_route(rng: random.Random, target: int) -> Route:
    """A random chain that starts with the lookup (member 0), sometimes without it."""
    middle = [m for m in range(1, target) if rng.random() < 0.5]
    members = ([0] if rng.random() < 0.8 else []) + middle
    return Route((*members, target), tuple(rng.randint(1, 5) for _ in members), target)


@pytest.mark.parametrize("name", ["noisy", "agreeing"])
def test_greedy_chains_from_the_lookup_reproduce_target_only_greedy(name: str) -> None:
    ladder = {"noisy": NOISY_LADDER, "agreeing": AGREEING_LADDER}[name]
    assert ladder.size == 4 and ladder.info.model_free == (0,) and ladder.info.devices == (0,) * 4
    executor = MultiLevelExecutor(ladder, eos_token_id=-1)
    budgets = {seq: 24 for seq in range(len(REPEATING_PROMPTS))}
    for seq, prompt in enumerate(REPEATING_PROMPTS):
        executor.add(seq, prompt)
    rng = random.Random(3)
    produced = dict.fromkeys(budgets, 0)
    proposed = accepted = 0
    while any(produced[s] < budgets[s] for s in budgets):
        routes = {
            s: (lookup_route(rng, ladder.target), budgets[s] - produced[s])
            for s in budgets
            if produced[s] < budgets[s]
        }
        for seq, outcome in executor.step(routes).items():
            produced[seq] += len(outcome.tokens)
            levels = outcome.feedback.levels
            if outcome.feedback.route.chain[0] == 0:
                proposed += levels[0].emitted
                accepted += levels[1].accepted
    for seq, prompt in enumerate(REPEATING_PROMPTS):
        expected = reference_greedy(ladder.models[-1], prompt, budgets[seq])
        assert executor.tokens(seq)[len(prompt) :] == expected
    assert proposed > 20 and accepted > 0  # the lookup proposed, and some of it held


# -- sampling: the point-mass q is lossless; the wrong variants are caught -------------------
LOOKUP_NOISY = NOISY.with_lookup(NgramDrafter(min_n=1, max_n=2))
REPEATING = [1, 2, 3, 1, 2, 3, 1, 2]
LOOKUP_TWO_LEVEL = Route((0, 3), (3,), 3)
LOOKUP_THREE_LEVEL = Route((0, 1, 3), (2, 2), 3)


@pytest.mark.parametrize(
    ("route", "config"),
    [(LOOKUP_TWO_LEVEL, T1), (LOOKUP_THREE_LEVEL, SamplingConfig(temperature=0.8, top_k=5))],
    ids=["ngram>target-T1", "ngram>draft>target-T0.8-topk"],
)
def test_sampled_chains_from_the_lookup_follow_the_target_distribution(
    route: Route, config: SamplingConfig
) -> None:
    run = chain_run(LOOKUP_NOISY, route, config, LOSSLESS, prompt=REPEATING)
    assert run.p_value > ALPHA
    assert run.acceptance > 0.02  # the lookup's tokens reached the target and some were accepted


@pytest.mark.parametrize(
    ("route", "rule"),
    [(LOOKUP_TWO_LEVEL, VerifyRule(residual=False)), (LOOKUP_THREE_LEVEL, VerifyRule(q_from_drafter=True))],
    ids=["ngram>target-full-p-resample", "ngram>draft>target-drafter-q"],
)
def test_known_wrong_variants_fail_with_the_lookup(route: Route, rule: VerifyRule) -> None:
    assert chain_run(LOOKUP_NOISY, route, T1, rule, prompt=REPEATING).p_value < ALPHA


# -- the serving loop -----------------------------------------------------------------------
def test_a_model_free_member_above_the_bottom_is_refused() -> None:
    ladder = LadderInfo(("draft", "ngram", "target"), model_free=(1,))
    assert ladder.allows((1, 2)) and not ladder.allows((0, 1, 2))
    view = RouteView(0, 4, 0, 8, None, 0.0, ladder, (0, 0, 0), (0, 0, 0))
    slot = Slot(Request(0, 0.0, 4, 8), 3, ladder.model_free)
    with pytest.raises(ValueError, match="cannot verify"):
        start_round(slot, StaticChain((0, 1, 2), (2, 1)), view, 2, True)


def test_specrouter_counts_what_the_lookup_did_not_propose_as_rejected() -> None:
    """A lookup that proposes 1 of 4 tokens asked, accepted, is a drafter accepting ~1 in 2 (the
    pair's acceptance includes "no proposal"), not a perfect one."""
    from policies.contract import LevelFeedback, RoundFeedback
    from policies.registry import make_policy

    ladder = LadderInfo(("ngram", "draft", "target"), (0.0, 1e6, 1e8), model_free=(0,))
    router = make_policy("specrouter:learn_every=1")
    route = Route((0, 2), (4,), 2)
    idle = (0, 0, 0)
    clock = 0.0
    for request in range(300):
        router.route(RouteView(request, 16, 0, 64, "prose", clock, ladder, idle, idle))
        levels = (
            LevelFeedback(0, 4, 0, 1, ()),  # asked for 4, proposed 1
            LevelFeedback(2, 1, 1, 2, ()),  # the target accepted it and added its own
        )
        router.observe(RoundFeedback(request, "prose", route, clock, clock + 0.01, levels, (), False))
        clock += 0.01
    alpha, trials = router._domains["prose"].pairs.acceptance(0, 2)
    assert trials > 0 and 0.4 < alpha < 0.6


def test_point_mass_lives_on_the_verifier_device() -> None:
    # the GPU run of bench/backend_speed.py found the lookup's q on the CPU beside CUDA logits;
    # "meta" stands in for an accelerator here: the tensor must be made there, not moved later
    q = point_mass(3, 10, device="meta")
    assert q.device.type == "meta" and q.dtype == torch.float64 and q.shape == (10,)
    on_cpu = point_mass(3, 10)
    assert on_cpu.sum().item() == 1.0 and on_cpu[3].item() == 1.0
