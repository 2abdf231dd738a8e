"""The executor's own limits: the context window, and the feedback of a round cut at end-of-sequence.

A prompt that fills the ladder's context window is refused when it is added (the engine clips
requests first; a library caller must get a clear error, not a position-embedding crash), a
round whose room would run past the window is refused, and when an end-of-sequence token
lands among a round's accepted candidates the committed tokens stop at it while the target's
feedback still reads like a verifier's: it emits one more token than it accepts.
"""

from __future__ import annotations

import pytest

from backend.executor import MultiLevelExecutor
from backend.replay import context_window
from backend.sampling import SamplingConfig
from backend.testing import agreeing_ladder, reference_greedy
from policies.contract import Route

LADDER = agreeing_ladder(levels=3, seed=2)
TARGET = LADDER.target
WINDOW = context_window(LADDER.models)


def test_a_prompt_that_fills_the_context_window_is_refused() -> None:
    executor = MultiLevelExecutor(LADDER, eos_token_id=-1)
    with pytest.raises(ValueError, match=rf"context window of {WINDOW}"):
        executor.add(0, [5] * WINDOW)
    executor.add(1, [5] * (WINDOW - 4))
    with pytest.raises(ValueError, match=rf"room 8 exceed the ladder's context window of {WINDOW}"):
        executor.step({1: (Route((0, TARGET), (4,), TARGET), 8)})
    outcome = executor.step({1: (Route((0, TARGET), (4,), TARGET), 4)})[1]  # what fits is fine
    assert 1 <= len(outcome.tokens) <= 4


def rounds_until_eos(prompt: list[int], eos: int, route: Route) -> list:
    executor = MultiLevelExecutor(LADDER, SamplingConfig(temperature=0.0), eos_token_id=eos)
    executor.add(0, prompt)
    outcomes = []
    while not outcomes or not outcomes[-1].feedback.request_done:
        outcomes.append(executor.step({0: (route, 32)})[0])
    return outcomes


def test_end_of_sequence_among_accepted_candidates_cuts_the_round_like_a_verifier() -> None:
    route = Route((0, TARGET), (6,), TARGET)
    cut_inside = 0
    for seed in range(6):
        prompt = [(7 * seed + 3 * k) % 60 + 4 for k in range(4 + seed)]
        expected = reference_greedy(LADDER.models[-1], prompt, 24)
        for position in (3, 7, 11):
            eos = expected[position]
            outcomes = rounds_until_eos(prompt, eos, route)
            tokens = [t for outcome in outcomes for t in outcome.tokens]
            assert tokens == expected[: expected.index(eos) + 1]  # up to and including the first EOS
            last = outcomes[-1].feedback
            target, drafter = last.levels[-1], last.levels[0]
            assert target.emitted == len(outcomes[-1].tokens) == last.committed
            assert target.emitted == target.accepted + 1  # a verifier emits one more than it accepts
            assert target.accepted <= target.proposed <= drafter.emitted
            cut_inside += target.proposed < drafter.emitted  # the EOS was an accepted draft
    assert cut_inside >= 3, "the EOS never landed among accepted drafts: the cut path is untested"
