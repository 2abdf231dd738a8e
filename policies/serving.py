"""The serving loop, written once for both worlds: admission, routing, batched passes, completion.

The simulator and the real backend run *this* loop; a world only answers "run this pass"
(:class:`Pass`): the SimPy world returns a modelled duration and acceptance draws, the backend
runs real forward passes.  So what the simulator predicts is the system the backend runs, pass
for pass.  The story of one run (:func:`serve`):

1. **Arrival** -- requests arrive in trace order; when nothing is running the loop idles until
   the next arrival (:class:`Idle`).
2. **Admission** -- arrived requests take free engine slots in FIFO order (``slots``; 0 means
   unlimited).  A request without a slot waits; its wait counts in its time to first token.
3. **Routing** -- a request that starts a round asks ``policy.route(view)`` for its chain and
   lookaheads; the round is the call sequence of :func:`policies.plan.round_calls`, run by the
   state machine of :class:`Slot` (same calls, same order, same counts; ``tests/test_sim_plan.py``).
4. **Passes** -- repeatedly, the *cheapest* model with pending calls runs one batched pass
   (:func:`next_pass`) for the pending calls on it, in slot order, up to ``max_pass_rows``
   sequences and ``max_pass_tokens`` padded positions (a single oversized row runs alone).
   Running the cheapest model first lets the calls waiting for an expensive model accumulate,
   so the target verifies every running request in one pass.
5. **Resolution** -- each row's outcome (accepted candidates) moves its round on; a round ends
   with the target's verification, and :func:`close_round` commits it and builds its
   :class:`RoundFeedback` (:func:`round_feedback`, the one builder) for ``policy.observe`` and
   the records (the pipelined simulator closes its rounds with the same function).
6. **Completion** -- a request that reached its output budget (or, where a world stops at an
   end-of-sequence token, ended) frees its slot and writes its :class:`RequestRecord`.

**Positions fed.**  A request's token sequence is its ``committed`` tokens (prompt + output)
followed by the round's tentative tokens.  ``Slot.buffer[level]`` counts the tentative tokens
chain level ``level`` holds; lower levels' buffers extend higher ones'.  A draft step scores the
drafter's buffer and needs 1 logits row; a ``Verify`` of ``k`` candidates at level ``j`` scores
level ``j-1``'s buffer and needs ``k + 1`` rows.  ``Slot.valid[m]`` is how many leading positions
of model ``m``'s KV cache agree with the longest tentative sequence.  A pass keeps
``keep = min(valid[m], length - rows)`` positions (rollback is an integer) and feeds the rest:
the new tokens, any token ``m`` never scored (a correction or bonus token from a level above,
the last draft after a full accept) and, on the first pass of a model, the prompt (prefill).
A rejection at position ``P`` lowers every model's ``valid`` to ``P``.  The backend's KV caches
obey the same integers (and check them against the token ids).

**Views.**  ``RouteView.batch_sizes[m]``: sequences in model ``m``'s latest pass (0 before its
first); ``queue_lengths[m]``: calls pending on model ``m`` at the moment of routing;
``waiting``: arrived requests without a slot; ``work_left``: the output still asked for once no
request will arrive any more (:class:`WorkLeft`), else ``None``.

**Feedback.**  Per chain level, counts and the :class:`PassTiming` of every pass the request
took part in (``seconds`` is the forward pass, as the world measured or modelled it);
TV-distance samples for each chain-neighbour pair at the positions the upper member verified.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from policies.contract import (
    LadderInfo,
    LevelFeedback,
    PairTV,
    PassTiming,
    Policy,
    RoundFeedback,
    Route,
    RouteView,
)
from policies.plan import Call, DraftStep, Lookup, Verify
from traces.records import RequestRecord
from traces.request import Request

DRAFT = -1
"""``Slot.call_candidates`` of a draft step (a ``Verify`` has ``k >= 0`` candidates)."""
LOOKUP = -2
"""``Slot.call_candidates`` of a model-free drafter's :class:`~policies.plan.Lookup`."""

_new_tuple = tuple.__new__  # builds a NamedTuple without its Python-level __new__ frame


@dataclass(frozen=True)
class ServingConfig:
    """How the engine admits requests and forms passes (the same numbers in both worlds)."""

    slots: int = 8
    """Requests decoding at once (FIFO admission); 0 = unlimited."""
    max_pass_rows: int = 64
    """Sequences in one batched pass."""
    max_pass_tokens: int = 8192
    """Padded positions in one pass (rows x the widest feed); a single wider row runs alone."""

    def __post_init__(self) -> None:
        if self.slots < 0:
            raise ValueError(f"ServingConfig.slots must be >= 0 (0 = unlimited), got {self.slots}")
        if self.max_pass_rows < 1 or self.max_pass_tokens < 1:
            raise ValueError(
                f"ServingConfig.max_pass_rows and max_pass_tokens must be >= 1, got "
                f"{self.max_pass_rows} and {self.max_pass_tokens}"
            )


class Slot:
    """A request in the engine: output so far, the round in flight, each model's KV positions.

    The round is an explicit state machine with the semantics of
    :func:`policies.plan.round_calls` (a generator costs a microsecond per resumed call; this
    runs a few hundred thousand rounds a second).  Current call: ``call_model``,
    ``call_level`` and ``call_candidates`` (:data:`DRAFT`, :data:`LOOKUP` or ``k >= 0``).
    ``model_free``: the ladder members that draft by lookup (``LadderInfo.model_free``).
    """

    __slots__ = (
        "request_id", "arrival", "prompt_tokens", "budget", "domain", "generated", "committed",
        "first_token", "valid", "stop_at", "round_id", "last_round_end",
        "route", "chain", "lookaheads", "top", "round_started", "latent", "draws", "passes", "tv", "buffer",
        "call_model", "call_level", "call_candidates",
        "proposed", "accepted", "emitted", "produced", "goal", "room", "drafts_left", "drafted",
        "model_free",
    )  # fmt: skip

    def __init__(self, request: Request, ladder_size: int, model_free: tuple[int, ...] = ()) -> None:
        if request.prompt_tokens < 1 or request.output_tokens < 1:
            raise ValueError(
                f"request {request.request_id}: needs prompt_tokens >= 1 and output_tokens >= 1, "
                f"got {request.prompt_tokens} and {request.output_tokens}"
            )
        self.request_id = request.request_id
        self.arrival = request.arrival
        self.prompt_tokens = request.prompt_tokens
        self.budget = request.output_tokens
        self.domain = request.domain
        self.generated = 0
        self.committed = request.prompt_tokens  # positions of the committed sequence
        self.first_token = -1.0
        self.last_round_end = 0.0
        self.valid = [0] * ladder_size  # per model: cached positions that still hold
        self.stop_at = 0  # a world that stops at end-of-sequence sets the tokens to keep
        self.round_id = 0
        self.route = Route.target_only(ladder_size - 1)
        self.chain: tuple[int, ...] = self.route.chain
        self.lookaheads: tuple[int, ...] = ()
        self.top = 0
        self.round_started = 0.0
        self.latent: list[float] = []  # the simulator's per-position acceptance draws
        self.draws: Any = None  # the simulator's random stream for this request (made on first use)
        self.passes: list[list[PassTiming]] = []
        self.tv: list[list[float]] = []
        self.buffer: list[int] = []  # per chain level: tentative tokens it holds
        self.call_model = self.call_level = self.call_candidates = 0
        self.proposed: list[int] = []
        self.accepted: list[int] = []
        self.emitted: list[int] = []
        self.produced = [0] * ladder_size  # sub-round bookkeeping, reset on entry (_descend)
        self.goal = [0] * ladder_size
        self.room = [0] * ladder_size
        self.drafts_left = self.drafted = 0
        self.model_free = model_free

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
        self.round_id += 1
        self.latent = []
        if collect:
            self.passes = [[] for _ in route.chain]
            self.tv = [[] for _ in route.chain]
        self.buffer = [0] * levels
        self.proposed = [0] * levels
        self.accepted = [0] * levels
        self.emitted = [0] * levels
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
        self.call_candidates = LOOKUP if self.model_free and self.call_model in self.model_free else DRAFT

    def _verify(self, level: int, candidates: int) -> None:
        self.call_model = self.chain[level]
        self.call_level = level
        self.call_candidates = candidates

    def resolve(self, took: int) -> bool:
        """Apply the outcome of the current call; set the next one.  True when the round is over."""
        level = self.call_level
        below = self.call_candidates
        buffer = self.buffer
        if below == DRAFT:
            buffer[0] += 1
            self.drafts_left -= 1
            if self.drafts_left:
                return False
            self.emitted[0] += self.drafted
            self._verify(1, self.drafted)
            return False
        if below == LOOKUP:  # ``took`` = tokens proposed, 0 .. drafted
            buffer[0] += took
            self.proposed[0] += self.drafted  # a model-free drafter's "proposed": tokens asked for
            self.emitted[0] += took
            self._verify(1, took)
            return False
        base = buffer[level]
        if took < below:  # a rejection: nothing past the accepted prefix holds in any cache
            cut = self.committed + base + took
            valid = self.valid
            for model, held in enumerate(valid):
                if held > cut:
                    valid[model] = cut
        kept = base + took + 1
        for lower in range(level + 1):
            buffer[lower] = kept
        self.proposed[level] += below
        self.accepted[level] += took
        if level == self.top:
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
        if self.call_candidates == LOOKUP:
            return Lookup(self.call_level, self.call_model, self.drafted)
        return Verify(self.call_level, self.call_model, self.call_candidates)

    # -- KV positions --------------------------------------------------------------------
    def source_level(self) -> int:
        """The chain level whose buffer the current call scores."""
        level = self.call_level
        return level - 1 if self.call_candidates >= 0 and level > 0 else 0

    def feed(self) -> tuple[int, int]:
        """``(keep, fed)`` for the current call's pass on ``call_model`` (module docstring).

        A lookup reads the request's tokens and feeds no model: ``(0, 0)``.
        """
        candidates = self.call_candidates
        if candidates == LOOKUP:
            return 0, 0
        if candidates == DRAFT:  # scores the drafter's buffer, one logits row
            length = self.committed + self.buffer[0]
            rows = 1
        else:  # scores the level below's buffer (a target-only round: its own), k + 1 rows
            level = self.call_level
            length = self.committed + self.buffer[level - 1 if level else 0]
            rows = candidates + 1
        keep = self.valid[self.call_model]
        if keep > length - rows:
            keep = length - rows
        return keep, length - keep

    def commit(self, now: float) -> int:
        """Book the finished round's target tokens; return how many were committed."""
        committed = self.emitted[self.top]
        if self.stop_at:
            committed = min(committed, self.stop_at)
        self.generated += committed
        self.committed += committed
        if self.first_token < 0.0:
            self.first_token = now
        self.last_round_end = now
        return committed

    @property
    def done(self) -> bool:
        return self.generated >= self.budget or self.stop_at > 0


class Pass:
    """One batched forward pass the loop asks a world to run.

    ``rows`` are the requests in it (each at its current call), ``keeps`` / ``feeds`` their
    cached positions kept and positions fed, ``width`` the widest feed (the padded width).
    The world fills ``accepted`` (candidates accepted, per row; ignored for draft steps) and
    ``seconds`` (the forward pass's time), appends TV samples to ``slot.tv[level]`` and, where
    it does not pad ragged rows, sets ``positions`` (the positions it computed; padded by
    default: rows times ``width``).
    """

    __slots__ = ("model", "rows", "keeps", "feeds", "width", "accepted", "seconds", "collect", "positions")

    def __init__(
        self, model: int, rows: list[Slot], keeps: list[int], feeds: list[int], width: int, collect: bool
    ) -> None:
        self.model = model
        self.rows = rows
        self.keeps = keeps
        self.feeds = feeds
        self.width = width
        self.accepted = [0] * len(rows)
        self.seconds = 0.0
        self.collect = collect
        self.positions = width * len(rows)

    @property
    def size(self) -> int:
        return len(self.rows)

    def rounds_ending(self) -> int:
        """Rows whose call is their round's last (the target's verification)."""
        return sum(1 for slot in self.rows if slot.call_level == slot.top)

    def signature(self) -> tuple[int, tuple[tuple[int, int, int, int], ...], int]:
        """``(model, ((request, level, candidates, fed), ...), width)``: what the worlds must agree on."""
        rows = tuple(
            (slot.request_id, slot.call_level, slot.call_candidates, fed)
            for slot, fed in zip(self.rows, self.feeds)
        )
        return self.model, rows, self.width


class Idle(NamedTuple):
    """Nothing to run until ``until`` (the next arrival); the world answers with the new time."""

    until: float


Action = Pass | Idle


def take_row(
    model: int, slot: Slot, keep: int, fed: int, rows: list[Slot], keeps: list[int], feeds: list[int]
) -> None:
    """Add ``slot``'s current call (``keep, fed = slot.feed()``) to a pass being formed on ``model``.

    The model's cache will hold the scored sequence after the pass, so its ``valid`` becomes
    that length now.
    """
    slot.valid[model] = keep + fed
    rows.append(slot)
    keeps.append(keep)
    feeds.append(fed)


WIDE_FEED = 16
"""A row feeding more positions than this (a prefill, a long catch-up) is *wide*.  Wide and
narrow rows never share a pass: ragged rows are padded to the widest, so one 500-token prefill
in a pass of 8 decode rows would cost the pass 8 x 500 positions instead of 500 + 8 x 5."""


def fits(rows: int, width: int, fed: int, max_rows: int, max_tokens: int) -> bool:
    """Can a row feeding ``fed`` join a pass of ``rows`` rows of padded ``width``?

    (Row and padded-position limits; whether it is of the pass's kind is :func:`same_kind`.)
    """
    if rows == 0:
        return True
    wider = fed if fed > width else width
    return rows < max_rows and wider * (rows + 1) <= max_tokens


def same_kind(width: int, fed: int) -> bool:
    """Is a row feeding ``fed`` of the kind (wide or narrow) of a pass of padded ``width``?"""
    return (fed > WIDE_FEED) == (width > WIDE_FEED)


def next_pass(open_slots: Iterable[Slot], config: ServingConfig, collect: bool) -> Pass | None:
    """The cheapest model with pending calls, with the pending calls on it that fit, in slot order.

    The first such call sets the pass's kind (wide or narrow, :data:`WIDE_FEED`); calls of the
    other kind wait for the next pass.
    """
    pending = list(open_slots)
    if not pending:
        return None
    model = min(slot.call_model for slot in pending)
    rows: list[Slot] = []
    keeps: list[int] = []
    feeds: list[int] = []
    width = 0
    for slot in pending:
        if slot.call_model != model:
            continue
        keep, fed = slot.feed()
        if rows and not same_kind(width, fed):
            continue
        if not fits(len(rows), width, fed, config.max_pass_rows, config.max_pass_tokens):
            break
        take_row(model, slot, keep, fed, rows, keeps, feeds)
        if fed > width:
            width = fed
    return Pass(model, rows, keeps, feeds, width, collect)


def resolve_pass(step: Pass, continuing: list[Slot] | None = None) -> list[Slot]:
    """Send each row its outcome and book the pass's timing; return the rows whose round ended.

    ``continuing``, when given, receives the other rows (their next call is set).
    """
    rows = step.rows
    if step.collect:
        model, size, seconds, positions = step.model, len(rows), step.seconds, step.positions
        timings: dict[int, PassTiming] = {}
        for slot, fed in zip(rows, step.feeds):
            timing = timings.get(fed)
            if timing is None:
                timing = timings[fed] = _new_tuple(PassTiming, (model, fed, size, seconds, positions))
            slot.passes[slot.call_level].append(timing)
    ended: list[Slot] = []
    keep_going = continuing.append if continuing is not None else _discard
    for slot, took in zip(rows, step.accepted):
        if slot.call_candidates == DRAFT and slot.drafts_left > 1:
            # a draft step that does not end its sub-round only moves two counters (the
            # common case, ~2/3 of all rows: Slot.resolve's draft branch, without the call)
            slot.buffer[0] += 1
            slot.drafts_left -= 1
            keep_going(slot)
        elif slot.resolve(took):
            ended.append(slot)
        else:
            keep_going(slot)
    return ended


def _discard(slot: Slot) -> None:
    pass


def round_feedback(slot: Slot, finished: float, committed: int) -> RoundFeedback:
    """The one builder of a finished round's :class:`RoundFeedback`.

    ``committed`` -- target tokens the round added.  When a world stopped at an end-of-sequence
    token inside the round, the target's level reads as if its candidates had ended at the
    token before it (a verifier always emits one more token than it accepts).
    """
    chain = slot.chain
    top = slot.top
    proposed, accepted, emitted = slot.proposed, slot.accepted, slot.emitted
    passes, tv = slot.passes, slot.tv
    levels = [
        _new_tuple(LevelFeedback, (chain[j], proposed[j], accepted[j], emitted[j], tuple(passes[j])))
        for j in range(top)
    ]
    target_proposed, target_accepted = proposed[top], accepted[top]
    if committed < emitted[top]:
        target_accepted = min(target_accepted, committed - 1)
        target_proposed = min(target_proposed, target_accepted)
    levels.append(
        _new_tuple(
            LevelFeedback, (chain[top], target_proposed, target_accepted, committed, tuple(passes[top]))
        )
    )
    pair_tv = tuple([_new_tuple(PairTV, (chain[j - 1], chain[j], tuple(tv[j]))) for j in range(1, top + 1)])
    return _new_tuple(
        RoundFeedback,
        (slot.request_id, slot.domain, slot.route, slot.round_started, finished, tuple(levels), pair_tv,
         slot.done),
    )  # fmt: skip


def request_record(slot: Slot) -> RequestRecord:
    return RequestRecord(
        slot.request_id,
        slot.arrival,
        slot.first_token,
        slot.last_round_end,
        slot.prompt_tokens,
        slot.generated,
        slot.domain,
    )


class WorkLeft:
    """The output a workload still asks for: every arrived request's budget, less the tokens
    committed and the budget of requests that stopped early (end of sequence).  Known --
    :attr:`value` -- once the input is closed (:meth:`close`: no request will arrive after those
    in), ``None`` before: both loops fill ``RouteView.work_left`` from it."""

    __slots__ = ("tokens", "closed")

    def __init__(self) -> None:
        self.tokens = 0
        self.closed = False

    def arrive(self, request: Request) -> None:
        self.tokens += request.output_tokens

    def commit(self, slot: Slot, committed: int) -> None:
        """``slot`` committed ``committed`` tokens (its round just closed)."""
        self.tokens -= committed
        if slot.done:
            self.tokens -= slot.budget - slot.generated  # a request that stopped early

    def close(self) -> None:
        self.closed = True

    @property
    def value(self) -> int | None:
        return self.tokens if self.closed else None


class ServingStats(NamedTuple):
    requests: int
    rounds: int
    tokens: int
    passes: int
    clock: float


class Sinks(NamedTuple):
    """Where a run's results go (each optional)."""

    feedback: Callable[[RoundFeedback], None] | None = None
    """Every finished round's feedback (after ``policy.observe``): round records."""
    request: Callable[[RequestRecord, Slot], None] | None = None
    """Every finished request (its slot is freed right after)."""
    passes: Callable[[Pass], None] | None = None
    """Every pass, after it ran and before its outcomes are applied (call traces, tests)."""


def close_round(
    slot: Slot,
    now: float,
    policy: Policy,
    collect: bool,
    on_feedback: Callable[[RoundFeedback], None] | None = None,
) -> int:
    """Commit ``slot``'s finished round; with ``collect``, build its feedback for the policy (and
    ``on_feedback``).  Returns the tokens committed."""
    committed = slot.commit(now)
    if collect:
        feedback = round_feedback(slot, now, committed)
        policy.observe(feedback)
        if on_feedback is not None:
            on_feedback(feedback)
    return committed


def start_round(slot: Slot, policy: Policy, view: RouteView, target: int, collect: bool) -> None:
    """Ask the policy for ``slot``'s next route and open the round."""
    route = policy.route(view)
    if route.target != target:  # Route itself checked the chain is increasing and ends there
        raise ValueError(
            f"policy {policy.name!r} routed to target {route.target}, but the ladder's "
            f"target is model {target} ({target + 1} models)"
        )
    ladder = view.ladder
    if ladder.model_free and not ladder.allows(route.chain):
        raise ValueError(
            f"policy {policy.name!r} routed {route}: model-free member(s) "
            f"{', '.join(f'M{m}' for m in ladder.model_free)} cannot verify, only draft first"
        )
    slot.begin_round(route, slot.budget - slot.generated, view.now, collect)


def serve(
    requests: Iterable[Request],
    policy: Policy,
    ladder: LadderInfo,
    config: ServingConfig,
    sinks: Sinks | None = None,
    collect: bool = True,
    start: float = 0.0,
) -> Generator[Action, float, ServingStats]:
    """Serve ``requests`` (in arrival order) under ``policy``; yield each :class:`Action`.

    The world runs each yielded :class:`Pass` (or idles through an :class:`Idle`) and sends
    back the clock after it.  ``collect=False`` skips pass timings and TV samples (for policies
    that ignore feedback, when no round is recorded).  Returns the run's counts.
    """
    sinks = sinks or Sinks()
    size = ladder.size
    target = size - 1
    arrivals = iter(requests)
    upcoming = next(arrivals, None)
    work = WorkLeft()
    waiting: deque[Request] = deque()
    running: list[Slot] = []
    batch_sizes = [0] * size
    limit = config.slots
    rounds = tokens = passes = finished_requests = 0
    now = start
    ended: list[Slot] = []  # rounds the latest pass finished, closed once arrivals are in
    while True:
        while upcoming is not None and upcoming.arrival <= now:
            waiting.append(upcoming)
            work.arrive(upcoming)
            upcoming = next(arrivals, None)
            if upcoming is None:
                work.close()
        if ended:
            queued = _pending_calls(running, size)
            for slot in ended:
                rounds += 1
                committed = close_round(slot, now, policy, collect, sinks.feedback)
                tokens += committed
                work.commit(slot, committed)
                if slot.done:
                    running.remove(slot)
                    finished_requests += 1
                    if sinks.request is not None:
                        sinks.request(request_record(slot), slot)
                else:
                    view = route_view(slot, now, ladder, batch_sizes, queued, len(waiting), work.value)
                    start_round(slot, policy, view, target, collect)
                    queued[slot.call_model] += 1
            ended = []
        if waiting and (not limit or len(running) < limit):
            queued = _pending_calls(running, size)
            admitted: list[Slot] = []
            while waiting and (not limit or len(running) + len(admitted) < limit):
                admitted.append(Slot(waiting.popleft(), size, ladder.model_free))
            for slot in admitted:
                view = route_view(slot, now, ladder, batch_sizes, queued, len(waiting), work.value)
                start_round(slot, policy, view, target, collect)
                queued[slot.call_model] += 1
            running.extend(admitted)
        if not running:
            if upcoming is None:
                return ServingStats(finished_requests, rounds, tokens, passes, now)
            now = yield Idle(upcoming.arrival)
            continue
        step = next_pass(running, config, collect)
        assert step is not None
        now = yield step
        passes += 1
        batch_sizes[step.model] = step.size
        if sinks.passes is not None:
            sinks.passes(step)
        ended = resolve_pass(step)


def _pending_calls(running: Sequence[Slot], size: int) -> list[int]:
    counts = [0] * size
    for slot in running:
        counts[slot.call_model] += 1
    return counts


def route_view(
    slot: Slot,
    now: float,
    ladder: LadderInfo,
    batch_sizes: list[int],
    queued: list[int],
    waiting: int,
    work_left: int | None = None,
) -> RouteView:
    """What ``slot``'s policy sees when its round starts (the module docstring's "Views")."""
    return _new_tuple(
        RouteView,
        (slot.request_id, slot.prompt_tokens, slot.generated, slot.budget, slot.domain, now, ladder,
         tuple(batch_sizes), tuple(queued), waiting, work_left),
    )  # fmt: skip


def run_rounds(
    slots: Sequence[Slot],
    run_pass: Callable[[Pass], None],
    config: ServingConfig,
    now: Callable[[], float],
    collect: bool = True,
) -> list[tuple[Slot, RoundFeedback, int]]:
    """Run one already-opened round of every slot to its end (the executor's ``step``).

    Returns ``(slot, feedback, committed)`` per slot in the order their rounds ended.
    """
    open_slots = list(slots)
    finished: list[tuple[Slot, RoundFeedback, int]] = []
    while open_slots:
        step = next_pass(open_slots, config, collect)
        assert step is not None
        run_pass(step)
        ended = resolve_pass(step)
        clock = now()
        for slot in ended:
            open_slots.remove(slot)
            committed = slot.commit(clock)
            finished.append((slot, round_feedback(slot, clock, committed), committed))
    return finished
