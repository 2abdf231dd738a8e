"""The profiler: a quick run on tiny random models yields a world profile the schema accepts.

Its pair statistics are checked against values computed independently: TVs from fresh
full-prefix forward passes along a plain argmax continuation, and greedy acceptance (alpha and
per-position) from rounds actually run by the executor on the same continuations.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from backend.executor import MultiLevelExecutor
from backend.ladder import Ladder
from backend.profiler import ProfileSettings, conditional_acceptance, profile_ladder
from backend.replay import RandomTokenPrompts, prompt_set
from backend.sampling import SamplingConfig, total_variation
from backend.testing import agreeing_ladder, reference_greedy, tiny_ladder
from policies.contract import Route
from traces.world_profile import validate_world_profile, world_profile_to_dict

TINY = ProfileSettings(
    tokens=(1, 3), batch_sizes=(1, 2), contexts=(8, 4000), warmup=0, repeats=1, prompts_per_domain=2,
    continuation=6, draft_positions=3,
)  # fmt: skip


def test_conditional_acceptance_of_known_series() -> None:
    # windows of 2 over [1,1,0,1]: (1,1) (1,0) (0,1) -> P(first)=2/3, P(second | first)=1/2
    assert conditional_acceptance([np.array([1.0, 1.0, 0.0, 1.0])], 2) == pytest.approx((2 / 3, 1 / 2))
    # probabilities multiply: constant 0.8 gives 0.8 at every position
    assert conditional_acceptance([np.full(10, 0.8)], 3) == pytest.approx((0.8, 0.8, 0.8))
    assert conditional_acceptance([np.array([1.0])], 2) == ()  # too short for a window


def test_quick_profile_is_a_valid_world_profile() -> None:
    ladder = tiny_ladder(3, seed=1)
    for model in ladder.models:  # a short positional range, so the 4000-position grid context is clipped
        model.config.max_position_embeddings = 48
    prompts = prompt_set(RandomTokenPrompts(ladder.vocab_size, seed=0), 2, 12, ["code", "prose"])
    profile = profile_ladder(ladder, prompts, TINY)
    document = json.loads(json.dumps(world_profile_to_dict(profile)))
    reread = validate_world_profile(document, "profile")
    assert reread.names == ladder.names
    for model in reread.models:
        assert model.pass_time.batch_sizes == (1, 2) and model.pass_time.tokens == (1, 3)
        assert all(s > 0 for row in model.pass_time.seconds for s in row)
    grid = profile.meta["pass_time_grid"]["tiny0"]
    assert grid["contexts"] == [8, 48 - 3]  # the long context is clipped to the positional range
    keys = {(p.lower, p.upper, p.domain, p.mode) for p in reread.acceptance}
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = {
        (lo, up, d, m) for lo, up in pairs for d in ("code", "prose", None) for m in ("greedy", "sampling")
    }
    assert keys == expected
    for pair in reread.acceptance:
        positions = 2 * 6 * (2 if pair.domain is None else 1)
        assert pair.samples == positions and len(pair.tv) == positions
        assert 0.0 <= pair.alpha <= 1.0 and len(pair.positions) <= 3
        if pair.mode == "sampling":
            assert pair.alpha == pytest.approx(1 - np.mean(pair.tv), abs=1e-4)
    # the noisier drafter agrees less with the target than the middle model does (tiny ladders add noise)
    alpha = {
        (p.lower, p.upper): p.alpha for p in reread.acceptance if p.domain is None and p.mode == "sampling"
    }
    assert alpha[(1, 2)] > alpha[(0, 2)]


def test_lean_path_profile_times_every_grid_point() -> None:
    ladder = tiny_ladder(2, seed=4)
    prompts = prompt_set(RandomTokenPrompts(ladder.vocab_size, seed=0), 1, 8, [None])
    profile = profile_ladder(ladder, prompts, TINY, lean=True)
    assert profile.meta["forward_path"] == "lean"
    grid = profile.meta["pass_time_grid"]["tiny1"]["seconds"]  # [context][batch][tokens]
    assert len(grid) == 2 and all(len(plane) == 2 for plane in grid)
    assert all(len(row) == 2 and min(row) > 0 for plane in grid for row in plane)


def test_identical_models_accept_everything() -> None:
    ladder = tiny_ladder(2, seed=2, noise=[0.0, 0.0])
    prompts = prompt_set(RandomTokenPrompts(ladder.vocab_size, seed=0), 2, 10, [None])
    profile = profile_ladder(ladder, prompts, TINY)
    for pair in profile.acceptance:
        assert pair.alpha == pytest.approx(1.0) and max(pair.tv) < 1e-6
        assert pair.positions == pytest.approx((1.0, 1.0, 1.0))


PAIRS_ONLY = ProfileSettings(
    tokens=(1,), batch_sizes=(1,), contexts=(8,), warmup=0, repeats=1, prompts_per_domain=3,
    continuation=12, draft_positions=3,
)  # fmt: skip


def tv_along(
    ladder: Ladder, lower: int, upper: int, prompt: list[int], continuation: list[int]
) -> list[float]:
    """TV(p_lower, p_upper) at each continuation position (context: prompt + continuation so far)."""
    ids = torch.tensor([prompt + continuation])
    rows = slice(len(prompt) - 1, len(prompt) - 1 + len(continuation))
    with torch.inference_mode():
        p_low, p_up = (
            torch.softmax(ladder.models[k](input_ids=ids).logits[0, rows], -1) for k in (lower, upper)
        )
    return [float(v) for v in total_variation(p_low, p_up)]


def executor_greedy_acceptance(
    ladder: Ladder, lower: int, prompts: list[list[int]], continuation: int, positions: int
) -> tuple[float, list[float]]:
    """``(A / (A + R), P(accept k | 0..k-1))`` of real rounds of route ``lower -> target``.

    For every lookahead ``K <= positions`` and prompt, greedy rounds run back to back (each starts
    after the previous one's correction) while the round's ``K`` drafts stay within the first
    ``continuation`` output tokens.
    """
    target = ladder.target
    executor = MultiLevelExecutor(ladder, SamplingConfig(temperature=0.0), eos_token_id=-1)
    reached, accepted = [0] * positions, [0] * positions
    total = rejections = 0
    seq_id = 0
    for lookahead in range(1, positions + 1):
        for prompt in prompts:
            seq_id += 1
            executor.add(seq_id, prompt)
            start = 0
            while start + lookahead <= continuation:
                route = Route((lower, target), (lookahead,), target)
                level = executor.step({seq_id: (route, lookahead + 1)})[seq_id].feedback.levels[-1]
                assert level.proposed == lookahead
                run = level.accepted
                for k in range(run):
                    reached[k], accepted[k] = reached[k] + 1, accepted[k] + 1
                if run < lookahead:
                    reached[run], rejections = reached[run] + 1, rejections + 1
                total += run
                start += run + 1
    return total / (total + rejections), [a / r for a, r in zip(accepted, reached) if r]


@pytest.mark.parametrize(
    "ladder", [tiny_ladder(3, seed=1), agreeing_ladder(3, seed=1)], ids=["noisy", "agreeing"]
)
def test_pair_statistics_equal_an_independent_recomputation(ladder: Ladder) -> None:
    prompts = prompt_set(RandomTokenPrompts(ladder.vocab_size, seed=0), 3, 6, ["code", "prose"])
    profile = profile_ladder(ladder, prompts, PAIRS_ONLY)
    length = PAIRS_ONLY.continuation
    target = ladder.models[ladder.target]
    greedy = {d: [reference_greedy(target, p, length) for p in ps] for d, ps in prompts.items()}
    checked = 0
    for pair in profile.acceptance:
        domains = sorted(prompts) if pair.domain is None else [pair.domain]
        pooled = [p for d in domains for p in prompts[d]]
        where = f"{pair.mode} M{pair.lower}->M{pair.upper} domain {pair.domain}"
        assert pair.samples == len(pooled) * length, where
        if pair.mode == "greedy":  # every TV along the target's greedy continuation
            expected = [
                v
                for d in domains
                for p, c in zip(prompts[d], greedy[d])
                for v in tv_along(ladder, pair.lower, pair.upper, p, c)
            ]
            assert sorted(pair.tv) == pytest.approx(sorted(expected), abs=2e-5), where
            if pair.upper == ladder.target:
                alpha, positions = executor_greedy_acceptance(
                    ladder, pair.lower, pooled, length, PAIRS_ONLY.draft_positions
                )
                assert pair.alpha == pytest.approx(alpha, abs=1e-12), where
                assert pair.positions == pytest.approx(positions, abs=1e-12), where
                checked += 1
        else:  # sampled continuations: the first position's context is the prompt alone
            for prompt in pooled:
                first = tv_along(ladder, pair.lower, pair.upper, prompt, [0])[0]  # the 0 is never attended
                assert min(abs(v - first) for v in pair.tv) < 2e-5, where
    assert checked == 2 * 3  # (M0, M1) -> M2, for 2 domains and their union
