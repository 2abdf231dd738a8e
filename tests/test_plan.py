from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies import Route
from policies.cost_model import enumerate_chains
from policies.plan import DraftStep, Verify, drive, round_calls


def all_accept(call):
    return call.candidates if isinstance(call, Verify) else None


def none_accept(call):
    return 0 if isinstance(call, Verify) else None


def test_two_level_round_is_w_drafts_then_one_verify() -> None:
    calls, counts = drive(Route((0, 2), (3,), 2), 100, all_accept)
    assert calls == [DraftStep(0, 0)] * 3 + [Verify(1, 2, 3)]
    assert counts.emitted == (3, 4) and counts.accepted == (0, 3) and counts.proposed == (0, 3)


def test_intermediate_lookahead_collects_until_goal() -> None:
    calls, counts = drive(Route((0, 1, 2), (2, 3), 2), 100, none_accept)
    # each sub-round: 2 drafts, M1 rejects all and emits 1 token; 3 sub-rounds to collect 3
    assert calls == ([DraftStep(0, 0)] * 2 + [Verify(1, 1, 2)]) * 3 + [Verify(2, 2, 3)]
    assert counts.emitted == (6, 3, 1)


def test_room_one_is_a_single_target_decode() -> None:
    calls, counts = drive(Route((0, 1, 2), (4, 2), 2), 1, all_accept)
    assert calls == [Verify(2, 2, 0)]
    assert counts.emitted[-1] == 1


@given(
    k=st.integers(1, 5),
    data=st.data(),
    room=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_plan_never_emits_past_room_and_counts_add_up(k, data, room, seed) -> None:
    rng = random.Random(seed)
    chain = data.draw(st.sampled_from(enumerate_chains(k)))
    route = Route(chain, tuple(data.draw(st.integers(1, 6)) for _ in chain[:-1]), k - 1)

    def answer(call):
        return rng.randint(0, call.candidates) if isinstance(call, Verify) else None

    calls, counts = drive(route, room, answer)
    assert 1 <= counts.emitted[-1] <= room
    assert isinstance(calls[-1], Verify) and calls[-1].model == k - 1
    drafts = sum(isinstance(c, DraftStep) for c in calls)
    assert drafts == (counts.emitted[0] if len(chain) > 1 else 0)
    for level in range(1, len(chain)):
        assert counts.accepted[level] <= counts.proposed[level]


def test_world_must_answer_verify_with_a_valid_count() -> None:
    gen = round_calls(Route((0, 1), (2,), 1), 10)
    next(gen), gen.send(None)
    with pytest.raises(ValueError, match="expected an int in 0..2"):
        gen.send(None)
        gen.send(5)


def test_room_must_be_positive() -> None:
    with pytest.raises(ValueError):
        next(round_calls(Route.target_only(1), 0))
