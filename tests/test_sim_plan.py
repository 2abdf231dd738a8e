"""The simulator's state-machine round equals policies.plan.round_calls call for call."""

from __future__ import annotations

import random

import pytest

from policies.contract import Route
from policies.plan import Verify, drive
from policies.serving import Slot as RequestState
from traces.request import Request


def random_route(rng: random.Random) -> Route:
    target = rng.randint(0, 4)
    drafts = tuple(m for m in range(target) if rng.random() < 0.5)
    return Route((*drafts, target), tuple(rng.randint(1, 5) for _ in drafts), target)


def state_machine_calls(route: Route, room: int, answer) -> tuple[list, tuple]:
    state = RequestState(Request(0, 0.0, 1, 100), route.target + 1)
    state.begin_round(route, room, 0.0)
    calls = []
    for _ in range(10_000):
        call = state.call
        calls.append(call)
        if state.resolve(answer(call) if isinstance(call, Verify) else 0):
            return calls, (tuple(state.proposed), tuple(state.accepted), tuple(state.emitted))
    raise AssertionError(f"round of {route} with room {room} did not end")


@pytest.mark.parametrize("seed", range(3))
def test_state_machine_matches_plan_on_random_routes_and_outcomes(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(800):
        route, room, outcome_seed = random_route(rng), rng.randint(1, 16), rng.random()
        reference_rng, machine_rng = random.Random(outcome_seed), random.Random(outcome_seed)
        expected, counts = drive(
            route,
            room,
            lambda c, r=reference_rng: r.randint(0, c.candidates) if isinstance(c, Verify) else None,
        )
        calls, machine_counts = state_machine_calls(
            route, room, lambda c, r=machine_rng: r.randint(0, c.candidates)
        )
        assert calls == expected, (route, room)
        assert machine_counts == tuple(counts), (route, room)


def test_rejects_a_round_without_room() -> None:
    with pytest.raises(ValueError, match="room"):
        RequestState(Request(0, 0.0, 1, 5), 4).begin_round(Route.target_only(3), 0, 0.0)
