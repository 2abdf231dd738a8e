"""KV state exactness: after any extend / rollback / catch-up sequence, logits equal a fresh prefill.

Tolerance: float64 models, atol 1e-9 (padding and cache reuse only reassociate sums; measured
~1e-15); one float32 case at atol 1e-4.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.kv_state import ModelKV, ScoreRequest, common_prefix_length
from backend.testing import tiny_models

torch.set_num_threads(1)
MODEL64 = tiny_models(levels=1, seed=3)[0]
MODEL32 = tiny_models(levels=1, seed=4, dtype=torch.float32)[0]


def fresh_logits(model: torch.nn.Module, tokens: list[int], n_logits: int) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([tokens])).logits[0, -n_logits:].to(torch.float64)


token = st.integers(min_value=0, max_value=63)
# one op per step: ("extend", seq, new tokens) | ("rollback", seq, keep fraction) | ("score", seqs, n)
op = st.one_of(
    st.tuples(st.just("extend"), st.integers(0, 2), st.lists(token, min_size=1, max_size=5)),
    st.tuples(st.just("rollback"), st.integers(0, 2), st.floats(0.0, 1.0)),
    st.tuples(st.just("score"), st.sets(st.integers(0, 2), min_size=1), st.integers(1, 4)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prompts=st.lists(st.lists(token, min_size=1, max_size=6), min_size=3, max_size=3),
    ops=st.lists(op, max_size=12),
)
def test_logits_equal_fresh_prefill_after_any_op_sequence(prompts: list[list[int]], ops: list[tuple]) -> None:
    """Sequences change under the model (extend = tokens it sat out, rollback = rejected tokens),
    the model scores ragged subsets in one batched pass; every answer must equal a fresh prefill."""
    state = ModelKV(MODEL64)
    sequences = [list(p) for p in prompts]
    for kind, target, arg in ops + [("score", {0, 1, 2}, 1)]:
        if kind == "extend":
            sequences[target].extend(arg)
        elif kind == "rollback":
            keep = max(1, int(arg * len(sequences[target])))
            sequences[target] = sequences[target][:keep]
            state.rollback(target, keep)
        else:
            chosen = sorted(target)
            requests = [ScoreRequest(i, sequences[i], min(arg, len(sequences[i]))) for i in chosen]
            for request, result in zip(requests, state.score(requests)):
                expected = fresh_logits(MODEL64, sequences[request.seq_id], request.n_logits)
                torch.testing.assert_close(result.logits, expected, atol=1e-9, rtol=0)
                assert state.cached_tokens(request.seq_id) == sequences[request.seq_id]


def test_rollback_then_different_tokens_recomputes_only_the_divergent_suffix() -> None:
    state = ModelKV(MODEL64)
    state.score([ScoreRequest(7, [5, 6, 7, 8, 9], 1)])
    (result,) = state.score([ScoreRequest(7, [5, 6, 7, 10, 11], 1)])
    assert result.fed == 2  # tokens 10, 11: the shared prefix 5, 6, 7 is reused
    (result,) = state.score([ScoreRequest(7, [5, 6, 7, 10, 11, 12, 13], 2)])
    assert result.fed == 2  # catch-up: only 12, 13 are new
    (result,) = state.score([ScoreRequest(7, [5, 6, 7, 10, 11, 12, 13], 3)])
    assert result.fed == 3  # logits asked for positions already cached are recomputed
    torch.testing.assert_close(
        result.logits, fresh_logits(MODEL64, [5, 6, 7, 10, 11, 12, 13], 3), atol=1e-9, rtol=0
    )


def test_ragged_float32_batch_matches_fresh_prefill_within_1e_4() -> None:
    state = ModelKV(MODEL32)
    sequences = {0: [4, 5, 6], 1: [9, 8, 7, 6, 5, 4, 3, 2, 1], 2: [11]}
    state.score([ScoreRequest(1, sequences[1][:4], 1)])
    requests = [ScoreRequest(i, s, min(2, len(s))) for i, s in sequences.items()]
    for request, result in zip(requests, state.score(requests)):
        expected = fresh_logits(MODEL32, sequences[request.seq_id], request.n_logits)
        torch.testing.assert_close(result.logits.to(torch.float64), expected, atol=1e-4, rtol=0)


def test_bad_requests_are_refused() -> None:
    state = ModelKV(MODEL64)
    with pytest.raises(ValueError, match="n_logits=3 must be in 1..2"):
        state.score([ScoreRequest(0, [1, 2], 3)])
    with pytest.raises(ValueError, match="only once per pass"):
        state.score([ScoreRequest(0, [1, 2], 1), ScoreRequest(0, [1, 2], 1)])


def test_common_prefix_length() -> None:
    assert common_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix_length([], [1]) == 0
    assert common_prefix_length([1, 2], [1, 2]) == 2
