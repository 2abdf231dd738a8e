"""The product's core promise on real (tiny, random) models: chains are lossless.

Greedy: any chain of 2-4 levels, any lookaheads, routes changing every round, batched or not,
emits exactly the target-only greedy tokens (models in float64, so no near-tie can flip an
argmax through floating-point reassociation).  The reference is an independent loop of fresh
full-prefix Hugging Face forward passes, not the executor.
"""

from __future__ import annotations

import random

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.executor import MultiLevelExecutor
from backend.sampling import SamplingConfig
from backend.testing import tiny_ladder
from policies.contract import Route

torch.set_num_threads(1)
LADDER = tiny_ladder(levels=4, seed=11)
TARGET = LADDER.target


def reference_greedy(prompt: list[int], new_tokens: int) -> list[int]:
    tokens = list(prompt)
    with torch.inference_mode():
        for _ in range(new_tokens):
            logits = LADDER.models[TARGET](input_ids=torch.tensor([tokens])).logits[0, -1]
            tokens.append(int(torch.argmax(logits)))
    return tokens[len(prompt) :]


def random_route(rng: random.Random) -> Route:
    members = sorted(rng.sample(range(TARGET), rng.randint(1, TARGET)))
    chain = (*members, TARGET)
    return Route(chain, tuple(rng.randint(1, 4) for _ in members), TARGET)


def generate(
    executor: MultiLevelExecutor, budgets: dict[int, int], rng: random.Random
) -> dict[int, list[int]]:
    """Run rounds with a fresh random route per sequence per round until every budget is spent."""
    produced = {seq_id: 0 for seq_id in budgets}
    while any(produced[s] < budgets[s] for s in budgets):
        routes = {
            s: (random_route(rng), budgets[s] - produced[s]) for s in budgets if produced[s] < budgets[s]
        }
        for seq_id, outcome in executor.step(routes).items():
            produced[seq_id] += len(outcome.tokens)
            assert outcome.feedback.committed == len(outcome.tokens)
            assert outcome.feedback.request_done == (produced[seq_id] == budgets[seq_id])
    return {s: executor.tokens(s)[len(executor.tokens(s)) - budgets[s] :] for s in budgets}


prompt_strategy = st.lists(st.integers(0, 63), min_size=1, max_size=8)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=prompt_strategy, new_tokens=st.integers(1, 14), seed=st.integers(0, 10**6))
def test_greedy_chain_equals_target_alone_unbatched(prompt: list[int], new_tokens: int, seed: int) -> None:
    executor = MultiLevelExecutor(LADDER, SamplingConfig(temperature=0.0))
    executor.add(0, prompt)
    got = generate(executor, {0: new_tokens}, random.Random(seed))
    assert got[0] == reference_greedy(prompt, new_tokens)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompts=st.lists(prompt_strategy, min_size=2, max_size=4), seed=st.integers(0, 10**6))
def test_greedy_chain_equals_target_alone_batched_with_ragged_acceptance(
    prompts: list[list[int]], seed: int
) -> None:
    rng = random.Random(seed)
    executor = MultiLevelExecutor(LADDER, SamplingConfig(temperature=0.0))
    budgets = {}
    for seq_id, prompt in enumerate(prompts):
        executor.add(seq_id, prompt)
        budgets[seq_id] = rng.randint(3, 12)
    got = generate(executor, budgets, rng)
    for seq_id, prompt in enumerate(prompts):
        assert got[seq_id] == reference_greedy(prompt, budgets[seq_id]), f"sequence {seq_id}"


def test_feedback_reports_levels_passes_and_tv_between_every_pair_that_scored() -> None:
    executor = MultiLevelExecutor(LADDER, SamplingConfig(temperature=0.0))
    executor.add(5, [7, 8, 9], domain="code")
    executor.add(6, [10])
    route = Route((0, 2, 3), (3, 1), TARGET)
    outcomes = executor.step({5: (route, 10), 6: (route, 10)})
    feedback = outcomes[5].feedback
    assert (feedback.request_id, feedback.domain, feedback.route) == (5, "code", route)
    drafter, middle, target = feedback.levels
    assert (drafter.model, middle.model, target.model) == (0, 2, 3)
    assert drafter.emitted == 3 and len(drafter.passes) == 3 and middle.proposed == 3
    assert target.proposed == middle.emitted and target.emitted == len(outcomes[5].tokens)
    first_draft = drafter.passes[0]
    assert first_draft.tokens == 3 and first_draft.batch_size == 2 and first_draft.seconds > 0
    assert middle.passes[0].tokens == 6  # catch-up prefill of the 3 prompt tokens + 3 candidates
    pairs = {(pair.lower, pair.upper): pair.values for pair in feedback.tv}
    assert len(pairs[(0, 2)]) == 3  # the middle verified 3 drafted positions
    assert (2, 3) in pairs and (0, 3) in pairs  # the target saw positions both lower models scored
    assert all(0.0 <= v <= 1.0 for values in pairs.values() for v in values)
    assert feedback.latency >= 0


def test_end_of_sequence_token_stops_the_request() -> None:
    prompt = [3, 4, 5]
    expected = reference_greedy(prompt, 6)
    eos = expected[2]
    executor = MultiLevelExecutor(LADDER, SamplingConfig(temperature=0.0), eos_token_id=eos)
    executor.add(0, prompt)
    tokens: list[int] = []
    while True:
        outcome = executor.step({0: (Route((1, TARGET), (4,), TARGET), 6 - len(tokens))})[0]
        tokens += outcome.tokens
        if outcome.feedback.request_done:
            break
    assert tokens == expected[: expected.index(eos) + 1]


def sampled_run(batch_with: list[int], seed: int) -> tuple[list[int], list[tuple[int, ...]]]:
    executor = MultiLevelExecutor(
        LADDER, SamplingConfig(temperature=1.0, top_p=0.95), seed=seed, eos_token_id=-1
    )
    for seq_id in [3, *batch_with]:
        executor.add(seq_id, [9, 8, 7])
    route_rngs, counts = {s: random.Random(s) for s in [3, *batch_with]}, []
    while len(executor.tokens(3)) < 3 + 12:
        routes = {s: (random_route(route_rngs[s]), 4) for s in [3, *batch_with]}
        outcome = executor.step(routes)[3]
        counts.append(tuple(level.accepted for level in outcome.feedback.levels))
    return executor.tokens(3), counts


def test_sampling_is_seeded_and_independent_of_batch_companions() -> None:
    alone = sampled_run([], seed=1)
    assert sampled_run([], seed=1) == alone  # bit-for-bit repeatable
    assert sampled_run([11, 12, 13], seed=1)[0] == alone[0]  # one generator per sequence
    assert sampled_run([], seed=2)[0] != alone[0]
