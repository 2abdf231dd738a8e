"""The simulator's state-machine round equals policies.plan.round_calls call for call."""

from __future__ import annotations

import random

import pytest

from policies.contract import Route
from policies.plan import Lookup, Verify, drive
from policies.serving import Slot as RequestState
from traces.request import Request


def random_route(rng: random.Random) -> Route:
    target = rng.randint(0, 4)
    drafts = tuple(m for m in range(target) if rng.random() < 0.5)
    return Route((*drafts, target), tuple(rng.randint(1, 5) for _ in drafts), target)


def outcome(call, rng: random.Random) -> int | None:
    """Accepted candidates of a Verify, proposals of a Lookup (0 half the time), None for a draft."""
    if isinstance(call, Verify):
        return rng.randint(0, call.candidates)
    if isinstance(call, Lookup):
        return 0 if rng.random() < 0.5 else rng.randint(1, call.limit)
    return None


def state_machine_calls(
    route: Route, room: int, answer, model_free: tuple[int, ...] = ()
) -> tuple[list, tuple]:
    state = RequestState(Request(0, 0.0, 1, 100), route.target + 1, model_free)
    state.begin_round(route, room, 0.0)
    calls = []
    for _ in range(10_000):
        call = state.call
        calls.append(call)
        taken = answer(call)
        if state.resolve(0 if taken is None else taken):
            return calls, (tuple(state.proposed), tuple(state.accepted), tuple(state.emitted))
    raise AssertionError(f"round of {route} with room {room} did not end")


@pytest.mark.parametrize("seed", range(3))
def test_state_machine_matches_plan_on_random_routes_and_outcomes(seed: int) -> None:
    """Half the rounds on a ladder whose member 0 is model-free (a lookup drafter)."""
    rng = random.Random(seed)
    lookups = 0
    for _ in range(800):
        route, room, outcome_seed = random_route(rng), rng.randint(1, 16), rng.random()
        model_free = (0,) if rng.random() < 0.5 else ()
        reference_rng, machine_rng = random.Random(outcome_seed), random.Random(outcome_seed)
        expected, counts = drive(route, room, lambda c, r=reference_rng: outcome(c, r), model_free)
        calls, machine_counts = state_machine_calls(
            route, room, lambda c, r=machine_rng: outcome(c, r), model_free
        )
        assert calls == expected, (route, room, model_free)
        assert machine_counts == tuple(counts), (route, room, model_free)
        lookups += sum(isinstance(c, Lookup) for c in calls)
    assert lookups > 100  # the model-free path ran


def test_a_lookup_that_proposes_nothing_falls_back_to_the_next_member() -> None:
    route = Route((0, 1, 2), (4, 2), 2)
    calls, counts = drive(route, 10, lambda c: 0 if isinstance(c, Lookup) else 0, model_free=(0,))
    # each level-1 iteration: one Lookup answered 0, then M1 decodes alone (0 candidates)
    assert calls == [Lookup(0, 0, 4), Verify(1, 1, 0), Lookup(0, 0, 4), Verify(1, 1, 0), Verify(2, 2, 2)]
    assert counts.emitted == (0, 2, 1)


def test_a_lookup_answer_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="Lookup at level 0"):
        drive(Route((0, 1), (3,), 1), 10, lambda c: 4 if isinstance(c, Lookup) else 0, model_free=(0,))


def test_rejects_a_round_without_room() -> None:
    with pytest.raises(ValueError, match="room"):
        RequestState(Request(0, 0.0, 1, 5), 4).begin_round(Route.target_only(3), 0, 0.0)
