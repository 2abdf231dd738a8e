"""The profiler: a quick run on tiny random models yields a world profile the schema accepts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.profiler import ProfileSettings, conditional_acceptance, profile_ladder
from backend.replay import RandomTokenPrompts, prompt_set
from backend.testing import tiny_ladder
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
