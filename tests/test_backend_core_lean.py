"""The lean forward path gives the Hugging Face logits (float64 atol 1e-9, float32 atol 1e-4).

Same op sequences as the KV property test -- extend, rollback, catch-up, ragged batches -- plus
slot and capacity growth, and greedy chains run entirely on the lean path (8 prompts, batched,
on a noisy and an agreeing ladder) that must equal a plain argmax loop of full-prefix Hugging
Face forward passes.
"""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import GPT2Config, GPT2LMHeadModel

from backend.executor import MultiLevelExecutor
from backend.kv_state import ScoreRequest
from backend.ladder import Ladder
from backend.lean import LeanKV, lean_unsupported_reason
from backend.testing import agreeing_ladder, reference_greedy, tiny_ladder, tiny_models
from policies.contract import Route

torch.set_num_threads(1)
MODEL64 = tiny_models(levels=1, seed=7)[0]
MODEL32 = tiny_models(levels=1, seed=8, dtype=torch.float32)[0]


def fresh_logits(model: torch.nn.Module, tokens: list[int], n_logits: int) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([tokens])).logits[0, -n_logits:].to(torch.float64)


@pytest.mark.parametrize(("model", "atol"), [(MODEL64, 1e-9), (MODEL32, 1e-4)], ids=["float64", "float32"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6))
def test_lean_logits_equal_hugging_face_prefill(model: torch.nn.Module, atol: float, seed: int) -> None:
    rng = random.Random(seed)
    state = LeanKV(model, capacity=4)  # tiny capacity: growth of slots and positions is exercised
    sequences = {i: [rng.randrange(64) for _ in range(rng.randint(1, 6))] for i in range(6)}
    for _ in range(8):
        for seq_id in sequences:
            roll = rng.random()
            if roll < 0.4:  # extend (a model that sits out later catches up on these)
                sequences[seq_id] += [rng.randrange(64) for _ in range(rng.randint(1, 4))]
            elif roll < 0.7:  # rollback to a prefix, then diverge
                keep = rng.randint(1, len(sequences[seq_id]))
                sequences[seq_id] = sequences[seq_id][:keep] + [rng.randrange(64)]
        chosen = [s for s in sequences if rng.random() < 0.6] or [0]
        requests = [ScoreRequest(s, sequences[s], rng.randint(1, len(sequences[s]))) for s in chosen]
        for request, result in zip(requests, state.score(requests)):
            expected = fresh_logits(model, request.tokens, request.n_logits)
            torch.testing.assert_close(result.logits.to(torch.float64), expected, atol=atol, rtol=0)
    state.remove(0)
    assert 0 not in state and state.cached_tokens(0) == []


LEAN_PROMPTS = {i: random.Random(i).choices(range(4, 64), k=1 + (5 * i) % 11) for i in range(8)}


@pytest.mark.parametrize(
    "ladder",
    [tiny_ladder(levels=3, seed=9), agreeing_ladder(levels=3, seed=9)],
    ids=["noisy", "agreeing"],
)
def test_greedy_chain_on_the_lean_path_equals_a_plain_argmax_loop(ladder: Ladder) -> None:
    """8 prompts (1-11 tokens) batched on the lean path, a random 2-3 level route per row per round.

    Reference: :func:`backend.testing.reference_greedy`, argmax after a fresh full-prefix Hugging
    Face forward pass per token -- no KV cache, no executor.
    """
    budget = 16
    lean = MultiLevelExecutor(ladder, eos_token_id=-1, lean=True)
    for seq_id, prompt in LEAN_PROMPTS.items():
        lean.add(seq_id, prompt)
    rng = random.Random(0)
    produced = dict.fromkeys(LEAN_PROMPTS, 0)
    while any(n < budget for n in produced.values()):
        routes = {}
        for seq_id, n in produced.items():
            if n < budget:
                chain = rng.choice([(0, 2), (1, 2), (0, 1, 2)])
                route = Route(chain, tuple(rng.randint(1, 4) for _ in chain[:-1]), 2)
                routes[seq_id] = (route, budget - n)
        for seq_id, outcome in lean.step(routes).items():
            produced[seq_id] += len(outcome.tokens)
    for seq_id, prompt in LEAN_PROMPTS.items():
        expected = reference_greedy(ladder.models[ladder.target], prompt, budget)
        assert lean.tokens(seq_id) == prompt + expected, f"sequence {seq_id}"


def test_unsupported_models_are_refused_with_the_reason() -> None:
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64))
    assert "model_type 'gpt2'" in (lean_unsupported_reason(gpt2) or "")
    with pytest.raises(ValueError, match="lean path unavailable for GPT2LMHeadModel"):
        LeanKV(gpt2)
    assert lean_unsupported_reason(MODEL32) is None
