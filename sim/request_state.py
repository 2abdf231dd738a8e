"""Per-request simulation state, including a fast, exact replica of the round plan.

:func:`policies.plan.round_calls` defines a round as a recursive generator of model calls.
Resuming a generator through ``yield from`` frames costs about a microsecond per call, so
the simulator runs the same recursion as an explicit state machine stored in the request
state (``begin_round`` / ``resolve``).  ``tests/test_sim_plan.py`` proves on random routes,
budgets and outcomes that it makes the same calls in the same order and count and returns
the same per-level counts as the generator.

Current call: ``call_model``, ``call_level`` and ``call_candidates`` (``-1`` for a
``DraftStep``, ``k >= 0`` for a ``Verify`` of ``k`` candidates).
"""

from __future__ import annotations

from policies.contract import PassTiming, Route
from policies.plan import Call, DraftStep, Verify
from traces.request import Request

DRAFT = -1


class RequestState:
    """Where a request stands: output so far, the round in flight and each model's KV length.

    ``cached[m]`` is how many committed tokens model ``m`` has scored (its KV length).  The
    committed sequence has ``prompt + generated`` tokens, the last of which is *pending*
    (fed as the first position of the next pass), so a model is in sync when
    ``cached[m] == committed - 1`` and otherwise catches up the difference.
    """

    __slots__ = (
        "request_id", "arrival", "prompt_tokens", "budget", "domain", "generated", "committed",
        "first_token", "cached",
        "route", "chain", "lookaheads", "round_started", "latent", "passes", "tv",
        "call_model", "call_level", "call_candidates", "fed", "top",
        "proposed", "accepted", "emitted", "position", "produced", "goal", "room", "drafts_left", "drafted",
    )  # fmt: skip

    def __init__(self, request: Request, ladder_size: int) -> None:
        self.request_id = request.request_id
        self.arrival = request.arrival
        self.prompt_tokens = request.prompt_tokens
        self.budget = request.output_tokens
        self.domain = request.domain
        self.generated = 0
        self.committed = request.prompt_tokens - 1  # committed tokens a model in sync has cached
        self.first_token = -1.0
        self.cached = [0] * ladder_size
        self.route = Route.target_only(ladder_size - 1)
        self.chain: tuple[int, ...] = self.route.chain
        self.lookaheads: tuple[int, ...] = ()
        self.round_started = 0.0
        self.latent: list[float] = []
        self.passes: list[list[PassTiming]] = []
        self.tv: list[list[float]] = []
        self.call_model = self.call_level = self.call_candidates = 0
        self.fed = 0  # positions fed in the pass now running (catch-up included)
        self.top = 0  # the target's chain level in the current round
        self.proposed: list[int] = []
        self.accepted: list[int] = []
        self.emitted: list[int] = []
        self.position: list[int] = []  # tokens each level has emitted so far this round
        self.produced = [0] * ladder_size  # sub-round bookkeeping, reset on entry (_descend)
        self.goal = [0] * ladder_size
        self.room = [0] * ladder_size
        self.drafts_left = self.drafted = 0

    # -- the round plan (same semantics as policies.plan.round_calls) ---------------------
    def begin_round(self, route: Route, room: int, now: float, collect: bool = True) -> None:
        """Reset the round state and set the first call of ``route`` with ``room`` tokens left.

        ``collect`` -- keep pass timings and TV samples for the round's feedback.
        """
        if room < 1:
            raise ValueError(f"a round needs room >= 1 output token, got {room}")
        levels = len(route.chain)
        self.route = route
        self.chain = route.chain
        self.lookaheads = route.lookaheads
        self.top = levels - 1
        self.round_started = now
        self.latent = []
        if collect:
            self.passes = [[] for _ in route.chain]
            self.tv = [[] for _ in route.chain]
        self.proposed = [0] * levels
        self.accepted = [0] * levels
        self.emitted = [0] * levels
        self.position = [0] * levels
        if levels == 1:
            self._verify(0, 0)
        else:
            self._descend(levels - 2, room - 1)

    def _descend(self, level: int, level_room: int) -> None:
        """Enter ``level``'s sub-round with ``level_room`` and set the first call it makes."""
        while level > 0:
            goal = self.lookaheads[level] if self.lookaheads[level] < level_room else level_room
            if goal <= 0:
                self._verify(level + 1, 0)
                return
            self.goal[level] = goal
            self.produced[level] = 0
            self.room[level] = level_room
            level -= 1
            level_room -= 1
        drafted = self.lookaheads[0] if self.lookaheads[0] < level_room else level_room
        if drafted <= 0:
            self._verify(1, 0)
            return
        self.drafted = self.drafts_left = drafted
        self.call_model = self.chain[0]
        self.call_level = 0
        self.call_candidates = DRAFT

    def _verify(self, level: int, candidates: int) -> None:
        self.call_model = self.chain[level]
        self.call_level = level
        self.call_candidates = candidates

    def resolve(self, took: int) -> bool:
        """Apply the outcome of the current call; set the next one.  True when the round is over."""
        level = self.call_level
        below = self.call_candidates
        if below == DRAFT:
            self.drafts_left -= 1
            if self.drafts_left:
                return False
            self.emitted[0] += self.drafted
            self._verify(1, self.drafted)
            return False
        self.proposed[level] += below
        self.accepted[level] += took
        if level == len(self.chain) - 1:
            self.emitted[level] += took + 1
            return True
        produced = self.produced[level] + took + 1
        self.produced[level] = produced
        if produced < self.goal[level]:
            self._descend(level - 1, self.room[level] - produced - 1)
        else:
            self.emitted[level] += produced
            self._verify(level + 1, produced)
        return False

    @property
    def call(self) -> Call:
        """The current call as :mod:`policies.plan` writes it."""
        if self.call_candidates == DRAFT:
            return DraftStep(self.call_level, self.call_model)
        return Verify(self.call_level, self.call_model, self.call_candidates)

    # -- KV bookkeeping ------------------------------------------------------------------
    def finish(self, committed: int) -> None:
        """Book ``committed`` new target tokens; every chain member now holds the committed prefix."""
        self.generated += committed
        in_sync = self.committed = self.prompt_tokens + self.generated - 1
        cached = self.cached
        for model in self.chain:
            cached[model] = in_sync

    def call_positions(self, model: int) -> tuple[int, int]:
        """Positions this request feeds to ``model`` for its current call, and its context.

        A draft step feeds 1 position, a verify of ``k`` candidates ``k + 1``, plus any
        catch-up (prefill) of committed tokens ``model`` has not scored (the server books it
        as done when the call joins a batch).  Context = committed tokens already cached +
        tokens this level emitted earlier in the round.
        """
        in_sync = self.committed
        lag = in_sync - self.cached[model]
        candidates = self.call_candidates
        positions = candidates + 1 if candidates > 0 else 1
        return positions + lag, in_sync - lag + self.position[self.call_level]
