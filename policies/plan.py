"""A multi-level round written once, as the sequence of model calls both worlds execute.

docs/design.md §3 asks that the simulator and the backend make the same model calls, in the
same order and number, for the same route and the same acceptance outcomes.  This module
is that single definition.  :func:`round_calls` is a generator: it yields one call at a
time and the driving world sends back the outcome.

* ``DraftStep(level, model)`` -- the drafter runs one autoregressive step and proposes one
  token.  The world sends back ``None``.
* ``Verify(level, model, candidates)`` -- the member scores, in one pass, the
  ``candidates`` tokens the level below emitted since this member last verified, accepts
  a prefix by the lossless rule and emits one more token (residual resample on a
  rejection, bonus token when all were accepted).  The world sends back the number of
  candidates accepted (``0 .. candidates``).  ``candidates == 0`` is a plain decode step.
* ``Lookup(level, model, limit)`` -- a *model-free* drafter (no weights, no KV cache: an
  n-gram prompt lookup) proposes up to ``limit`` tokens at once from the request's own
  context.  The world sends back how many it proposed (``0 .. limit``); with 0 the level
  above verifies no candidates, i.e. decodes one token itself: the round falls back to the
  next member.  A model-free member can only be a chain's first member.

Semantics of a route ``chain = (m_0 .. m_{N-1})``, ``lookaheads = (g_0 .. g_{N-2})``:

* a level-0 sub-round drafts ``g_0`` tokens (one ``DraftStep`` each; a model-free drafter
  proposes up to ``g_0`` in one ``Lookup``);
* a level-j sub-round (``0 < j < N-1``) repeats [level-(j-1) sub-round, then ``Verify`` on
  ``m_j``] until ``m_j`` has emitted at least ``g_j`` tokens;
* the round is one level-(N-2) sub-round followed by the target's ``Verify``.

``room`` caps emitted tokens so a request never drafts past its remaining output budget:
the target emits at most ``room`` tokens, so the levels below propose at most ``room - 1``
candidates, and a level left with no room makes no calls at all (with ``room == 1`` the
round is a single target decode).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator
from typing import NamedTuple

from policies.contract import Route


class DraftStep(NamedTuple):
    level: int
    model: int


class Verify(NamedTuple):
    level: int
    model: int
    candidates: int


class Lookup(NamedTuple):
    level: int
    model: int
    limit: int


Call = DraftStep | Verify | Lookup
RoundGen = Generator[Call, int | None, "RoundCounts"]


class RoundCounts(NamedTuple):
    """Per chain level: candidates scored (a model-free drafter: tokens asked for), accepted, emitted."""

    proposed: tuple[int, ...]
    accepted: tuple[int, ...]
    emitted: tuple[int, ...]


def round_calls(route: Route, room: int, model_free: Collection[int] = ()) -> RoundGen:
    """Yield the model calls of one round of ``route``; return the per-level counts.

    ``room`` is the number of output tokens the request may still produce (>= 1);
    ``model_free`` the ladder members that draft by :class:`Lookup` (``LadderInfo.model_free``).
    """
    if room < 1:
        raise ValueError(f"round_calls needs room >= 1 output token, got {room}")
    n = len(route.chain)
    proposed = [0] * n
    accepted = [0] * n
    emitted = [0] * n

    def sub_round(level: int, level_room: int) -> Generator[Call, int | None, int]:
        """Run ``level``'s sub-round; return how many tokens it emitted (<= level_room)."""
        model = route.chain[level]
        if level == 0:
            drafted = min(route.lookaheads[0], level_room)
            if model in model_free:
                if drafted <= 0:
                    return 0
                answer = yield Lookup(0, model, drafted)
                proposed[0] += drafted  # asked for; it proposed ``answer`` of them
                drafted = _checked_acceptance(answer, drafted, 0, "proposed")
                emitted[0] += drafted
                return drafted
            for _ in range(drafted):
                yield DraftStep(0, model)
            emitted[0] += drafted
            return drafted
        goal = min(route.lookaheads[level], level_room)
        produced = 0
        while produced < goal:
            below = yield from sub_round(level - 1, level_room - produced - 1)
            took = yield Verify(level, model, below)
            took = _checked_acceptance(took, below, level)
            proposed[level] += below
            accepted[level] += took
            produced += took + 1
        emitted[level] += produced
        return produced

    top = n - 1
    below = (yield from sub_round(top - 1, room - 1)) if n > 1 else 0
    took = yield Verify(top, route.chain[top], below)
    took = _checked_acceptance(took, below, top)
    proposed[top] += below
    accepted[top] += took
    emitted[top] += took + 1
    return RoundCounts(tuple(proposed), tuple(accepted), tuple(emitted))


def _checked_acceptance(took: int | None, candidates: int, level: int, what: str = "accepted") -> int:
    if took is None or not 0 <= took <= candidates:
        call = "Lookup" if what == "proposed" else "Verify"
        raise ValueError(
            f"world answered {call} at level {level} with {took!r} {what}; expected an int in 0..{candidates}"
        )
    return took


def drive(
    route: Route, room: int, answer: Callable[[Call], int | None], model_free: Collection[int] = ()
) -> tuple[list[Call], RoundCounts]:
    """Run a plan with a synchronous ``answer(call) -> accepted`` (tests, simple worlds)."""
    calls: list[Call] = []
    gen = round_calls(route, room, model_free)
    try:
        call = next(gen)
        while True:
            calls.append(call)
            call = gen.send(answer(call))
    except StopIteration as stop:
        return calls, stop.value
