"""The contract between routing policies and the two worlds (docs/design.md §3).

A policy is driven by whichever world runs it -- the SimPy simulator or the real torch
backend -- through two calls:

* ``route(view) -> Route`` at the start of every speculation round of a request;
* ``observe(feedback)`` after the round, with what actually happened.

Everything here is immutable and cheap to build: the simulator creates a view and a
feedback object for each of ~1.4M rounds of a trace replay.  Views, feedback and timings
are ``NamedTuple`` (construction is a single C-level tuple allocation); ``Route`` is a
validated frozen dataclass because policies build few of them and cache them.

Indices are *ladder indices*: ``0 .. K-1`` with ``K-1`` the target (the most expensive
model).  A chain is an increasing tuple of ladder indices that ends at the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Route:
    """One round's plan: which ladder models take part and how far each looks ahead.

    ``chain`` -- increasing ladder indices ending at the target, e.g. ``(0, 2, 3)`` on a
    4-model ladder; ``(3,)`` is plain target-only decoding.

    ``lookaheads`` -- one entry per non-target chain member (``len(chain) - 1`` entries):
    ``lookaheads[0]`` is how many tokens the drafter (``chain[0]``) drafts per sub-round;
    ``lookaheads[j]`` for an intermediate member is how many tokens it must have emitted
    (accepted candidates plus its own correction / bonus tokens, collected over as many
    sub-rounds of the levels below as needed) before it hands them up.  An intermediate
    lookahead of 1 means "verify once and hand up", the docs/design.md §1 cost model.  See
    :mod:`policies.plan` for the exact sequence of model calls a route implies.

    ``target`` -- the ladder's target index; the chain must end there.
    """

    chain: tuple[int, ...]
    lookaheads: tuple[int, ...]
    target: int

    def __post_init__(self) -> None:
        chain, lookaheads, target = self.chain, self.lookaheads, self.target
        if not chain:
            raise ValueError("Route.chain is empty: a chain must contain at least the target")
        if any(i < 0 for i in chain):
            raise ValueError(f"Route.chain {chain} has a negative ladder index")
        if any(b <= a for a, b in zip(chain, chain[1:])):
            raise ValueError(
                f"Route.chain {chain} is not strictly increasing: each level must be a more "
                "expensive ladder model than the one below it"
            )
        if chain[-1] != target:
            raise ValueError(
                f"Route.chain {chain} does not end at the target (ladder index {target}): "
                "the target must verify last for the output to be lossless"
            )
        if len(lookaheads) != len(chain) - 1:
            raise ValueError(
                f"Route.lookaheads {lookaheads} has {len(lookaheads)} entries; chain {chain} "
                f"needs {len(chain) - 1} (one per non-target level)"
            )
        for level, gamma in enumerate(lookaheads):
            if not isinstance(gamma, int) or gamma < 1:
                raise ValueError(
                    f"Route.lookaheads[{level}] = {gamma!r} for model {chain[level]}: "
                    "lookaheads must be integers >= 1"
                )

    @classmethod
    def target_only(cls, target: int) -> Route:
        return cls((target,), (), target)

    @property
    def is_target_only(self) -> bool:
        return len(self.chain) == 1

    def __str__(self) -> str:
        if self.is_target_only:
            return f"M{self.target}"
        parts = [f"M{m}[{g}]" for m, g in zip(self.chain, self.lookaheads)]
        return ">".join(parts + [f"M{self.target}"])


class LadderInfo(NamedTuple):
    """What a policy knows about the ladder: model names ordered by cost, target last.

    ``params`` (optional, same order) lets a policy form cold-start priors before it has
    measured anything.  ``model_free`` lists the members with no weights and no KV cache (an
    n-gram prompt-lookup drafter): they propose but cannot verify, so they may only be a
    chain's first member (:meth:`allows`).  ``devices`` (optional, same order) says where each
    model's passes run: models with the same number take turns on one device (one pass at a
    time), so their pass times add up in that device's busy time.  The lockstep serving loop
    (both worlds' default) runs one pass at a time on the whole ladder, so it gives every model
    device 0; the pipelined simulator gives each GPU its own number.  ``None``: not known, each
    model counted as its own device.
    """

    names: tuple[str, ...]
    params: tuple[float, ...] | None = None
    model_free: tuple[int, ...] = ()
    devices: tuple[int, ...] | None = None

    @property
    def size(self) -> int:
        return len(self.names)

    @property
    def target(self) -> int:
        return len(self.names) - 1

    def allows(self, chain: tuple[int, ...]) -> bool:
        """Can ``chain`` run on this ladder?  A model-free member cannot verify: first or absent."""
        return not any(member in self.model_free for member in chain[1:])


class RouteView(NamedTuple):
    """What a real server could know at the start of a round (docs/design.md §3).

    ``batch_sizes`` / ``queue_lengths`` have one entry per ladder model: ``batch_sizes[m]``
    is the number of sequences in model ``m``'s latest pass (0 before its first, or while
    the model idles in the pipelined simulator), ``queue_lengths[m]`` the calls pending on
    model ``m`` when the round starts.  ``waiting`` counts arrived requests that have no
    engine slot yet (the backlog).  ``work_left`` is the output the workload still asks for, in
    tokens over every request it will ever send, once its input is closed -- no request will
    arrive after those already in (a fixed prompt set, a replayed trace past its last arrival)
    -- and ``None`` while more may arrive: what a batch job knows about its own size, which tells
    a learning policy how long it can use what it explores.  ``domain`` is the request's optional tag (e.g.
    ``"code"``); policies may keep per-domain state when it is present.  Both worlds fill
    these the same way (:mod:`policies.serving`).
    """

    request_id: int
    prompt_tokens: int
    generated_tokens: int
    max_new_tokens: int
    domain: str | None
    now: float
    ladder: LadderInfo
    batch_sizes: tuple[int, ...]
    queue_lengths: tuple[int, ...]
    waiting: int = 0
    work_left: int | None = None


class PassTiming(NamedTuple):
    """One forward pass of one model as seen by one request.

    ``tokens`` is the number of positions the request fed in that pass (a draft step
    feeds 1; verifying ``m`` candidates feeds ``m + 1``: the pending last committed token
    and the candidates; catch-up tokens add to it).  ``batch_size`` is how many sequences
    shared the pass.  ``seconds`` is its wall time (simulated time in the simulator).
    ``positions`` is what the whole pass computed, as its world charges it: the batch times
    the widest feed where ragged rows are padded (the torch backend), the sum of the feeds
    where they are not; 0 where unknown.  In a ragged batch (three-level chains hand the
    target variable counts; a change of route mixes lookaheads for a round) it differs
    from ``tokens * batch_size``.
    """

    model: int
    tokens: int
    batch_size: int
    seconds: float
    positions: int = 0


class LevelFeedback(NamedTuple):
    """What one chain member did during a round.

    ``proposed`` -- candidate tokens handed up to this member by the level below and
    scored by it (0 for a model drafter; for a model-free drafter, which may propose fewer
    tokens than asked or none, the tokens it was asked for); ``accepted`` -- how many of those it accepted;
    ``emitted`` -- tokens it produced (drafted tokens for the drafter; accepted candidates
    plus correction / bonus tokens for a verifier).  The acceptance rate of the pair
    ``(chain[j-1], chain[j])`` in this round is ``levels[j].accepted / levels[j].proposed``.
    """

    model: int
    proposed: int
    accepted: int
    emitted: int
    passes: tuple[PassTiming, ...]


class PairTV(NamedTuple):
    """Total-variation distances ``TV(p_lower, p_upper)`` measured at verified positions.

    In the backend these come from real logits; in the simulator they are drawn from the
    acceptance model.  Pairs need not be chain neighbours: the target's positions give a
    distance for every pair of models that scored them.
    """

    lower: int
    upper: int
    values: tuple[float, ...]


class RoundFeedback(NamedTuple):
    """Everything a policy learns from one finished round (docs/design.md §3)."""

    request_id: int
    domain: str | None
    route: Route
    started: float
    finished: float
    levels: tuple[LevelFeedback, ...]
    tv: tuple[PairTV, ...]
    request_done: bool

    @property
    def latency(self) -> float:
        return self.finished - self.started

    @property
    def committed(self) -> int:
        """Target tokens this round added to the output."""
        return self.levels[-1].emitted


@runtime_checkable
class Policy(Protocol):
    """A routing policy: the one interface both worlds drive."""

    name: str

    def route(self, view: RouteView) -> Route: ...

    def observe(self, feedback: RoundFeedback) -> None: ...


@runtime_checkable
class WorldTruth(Protocol):
    """The true state of a simulated world, for the oracle policy only.

    A real server cannot know these; the simulator can, which makes an oracle that picks
    the best route at every moment -- the physical limit any learned router is measured
    against.  ``alpha`` is the current expected acceptance of ``lower``'s tokens by
    ``upper`` for a domain; ``pass_time`` the current expected time of a pass of ``model``
    feeding ``tokens`` positions per sequence at ``batch_size`` (slowdowns included).
    """

    def alpha(self, lower: int, upper: int, domain: str | None, now: float) -> float: ...

    def pass_time(self, model: int, tokens: int, batch_size: int, now: float) -> float: ...
