"""The SimPy world: one process per model server, events per batch iteration.

**Servers.**  Every ladder model is a server with a FIFO queue of requests waiting for
their next model call.  Its process loops: wait for work; acquire the GPU if the model
shares it (a ``simpy.Resource``: co-placed models run one pass at a time); form a batch
from the head of the queue (up to ``max_batch_size`` sequences and ``max_batched_tokens``
positions; a single oversized prefill runs alone); compute the pass time from the latency
model (with ``padded_batches``, as for the torch backend's padded ragged batches, a pass of
``b`` sequences costs ``b`` times the widest feed); advance the clock once; then advance
every member's round by one call in a tight loop.  A member whose next call is on another
model joins that server's queue (waking it); one whose next call is on the same model joins
the back of this queue, so it rides in the next iteration: continuous batching.

**Rounds.**  A round is exactly the call sequence of :func:`policies.plan.round_calls`
(the generator itself drives it, so both worlds make the same calls in the same order and
count).  A ``DraftStep`` feeds 1 position, a ``Verify`` of ``k`` candidates ``k + 1``;
a model's first call after it sat out rounds also feeds the committed tokens it has not
scored yet (catch-up; for a new request that is the prompt: prefill).  Chain members are
treated as in sync after each round.  ``Verify`` outcomes come from
:class:`sim.acceptance.AcceptanceModel` at the pass's end.

**Lifecycle.**  Arrival -> ``policy.route(view)`` -> calls -> ``policy.observe(feedback)``
(per-level counts, every ``PassTiming``, TV samples per verified pair) -> next round, until
the output budget is met.  With ``max_running_requests`` (the real engine's slots), an
arrival that finds every slot taken waits in a FIFO and starts when a request finishes (its
wait counts in its time to first token).  Records: :class:`traces.records.RequestRecord` per request and,
when enabled, :class:`traces.records.RoundRecord` per round.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import simpy

from policies.baselines import StaticChain, TargetOnly
from policies.contract import LadderInfo, LevelFeedback, PairTV, PassTiming, Policy, RoundFeedback, RouteView
from policies.plan import Call
from sim.request_state import RequestState
from sim.world import World
from traces.records import RequestRecord, RoundRecord, round_record_from_feedback
from traces.request import Request

_new_tuple = tuple.__new__  # builds a NamedTuple without its Python-level __new__ frame


class SimResult(NamedTuple):
    requests: list[RequestRecord]
    rounds: list[RoundRecord]
    rounds_total: int
    tokens_total: int
    sim_seconds: float
    calls: list[tuple[int, Call, int | None]]  # (request_id, call, outcome) when trace_calls


class GpuLock:
    """A GPU shared by several model servers: one pass at a time, FIFO hand-over.

    (A minimal ``simpy.Resource(capacity=1)``: the uncontended path creates no event.)
    """

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.held = False
        self.waiting: deque[simpy.Event] = deque()

    def acquire(self) -> simpy.Event | None:
        """None when granted at once, else an event that fires when the GPU is handed over."""
        if not self.held:
            self.held = True
            return None
        event = self.env.event()
        self.waiting.append(event)
        return event

    def release(self) -> None:
        if self.waiting:
            self.waiting.popleft().succeed()  # ownership passes straight to the next waiter
        else:
            self.held = False


class Server:
    """One model's continuous-batching server (a SimPy process)."""

    def __init__(self, sim: Simulation, model: int, gpu: GpuLock | None) -> None:
        self.sim = sim
        self.model = model
        self.gpu = gpu
        self.queue: deque[RequestState] = deque()
        self.wakeup: simpy.Event | None = None
        self.passes = 0
        self.busy = 0.0

    def submit(self, state: RequestState) -> None:
        self.queue.append(state)
        wakeup = self.wakeup
        if wakeup is not None:
            self.wakeup = None
            wakeup.succeed()

    def run(self) -> Any:
        sim = self.sim
        env = sim.env
        model = self.model
        queue = self.queue
        gpu = self.gpu
        cluster = sim.world.cluster
        max_batch, max_tokens = cluster.max_batch_size, cluster.max_batched_tokens
        padded = cluster.padded_batches
        pass_time = sim.world.latency.pass_time
        batch_sizes = sim.batch_sizes
        timeout = env.timeout
        while True:
            if not queue:
                batch_sizes[model] = 0  # idle; while busy, views see the batch of the latest pass
                self.wakeup = env.event()
                yield self.wakeup
            if gpu is not None:
                handover = gpu.acquire()
                if handover is not None:
                    yield handover
            batch: list[RequestState] = []
            size = tokens = context = attention = widest = 0
            while queue and size < max_batch:
                state = queue[0]
                in_sync = state.committed
                cached = state.cached
                lag = in_sync - cached[model]
                candidates = state.call_candidates
                n = (candidates + 1 if candidates > 0 else 1) + lag
                if size and tokens + n > max_tokens:
                    break
                queue.popleft()
                cached[model] = in_sync
                state.fed = n
                batch.append(state)
                size += 1
                ctx = in_sync - lag + state.position[state.call_level]
                tokens += n
                context += ctx
                attention += n * (ctx + n)
                if n > widest:
                    widest = n
            if padded:
                tokens = widest * size
            seconds = pass_time(model, tokens, size, context, attention, env.now)
            batch_sizes[model] = size
            yield timeout(seconds)
            if gpu is not None:
                gpu.release()
            self.passes += 1
            self.busy += seconds
            sim.advance(batch, model, seconds)


class Simulation:
    """One run of a workload through a :class:`World` under a routing policy."""

    def __init__(
        self,
        world: World,
        policy: Policy,
        *,
        record_rounds: bool | None = None,
        round_sink: Callable[[RoundRecord], None] | None = None,
        request_sink: Callable[[RequestRecord], None] | None = None,
        trace_calls: bool = False,
        progress: Callable[[int], None] | None = None,
        feedback: str = "auto",
    ) -> None:
        self.world = world
        self.policy = policy
        self.env = simpy.Environment()
        cluster = world.cluster
        self.ladder = LadderInfo(cluster.names, tuple(m.params for m in cluster.models))
        self.target = cluster.target
        gpu_locks = {gpu: GpuLock(self.env) for gpu in cluster.shared_gpus()}
        self.servers = [
            Server(self, index, gpu_locks.get(model.gpu)) for index, model in enumerate(cluster.models)
        ]
        self.batch_sizes = [0] * len(self.servers)  # sequences in each model's latest pass (0 when idle)
        self.queues = [server.queue for server in self.servers]
        for server in self.servers:
            self.env.process(server.run())
        self.record_rounds = world.scenario.record_rounds if record_rounds is None else record_rounds
        if feedback not in ("auto", "always"):
            raise ValueError(f"Simulation feedback must be 'auto' or 'always', got {feedback!r}")
        # Feedback objects (pass timings, TV samples) are built when the policy reads them or
        # rounds are recorded; a policy whose observe is a documented no-op skips the cost.
        self.collect = feedback == "always" or self.record_rounds or not ignores_feedback(policy)
        self.round_sink = round_sink
        self.request_sink = request_sink
        self.trace_calls = trace_calls
        self.progress = progress
        self.request_records: list[RequestRecord] = []
        self.round_records: list[RoundRecord] = []
        self.calls: list[tuple[int, Call, int | None]] = []
        self.rounds_total = 0
        self.tokens_total = 0
        self.active = 0
        self.running = 0
        self.max_running = cluster.max_running_requests
        self.admission: deque[RequestState] = deque()
        self.verify = world.acceptance.verify

    # -- lifecycle ---------------------------------------------------------------------
    def run(self, requests: Iterable[Request]) -> SimResult:
        self.env.process(self._arrivals(requests))
        self.env.run()
        if self.active:
            raise RuntimeError(f"simulation stalled with {self.active} unfinished requests")
        return SimResult(
            self.request_records,
            self.round_records,
            self.rounds_total,
            self.tokens_total,
            self.env.now,
            self.calls,
        )

    def _arrivals(self, requests: Iterable[Request]) -> Any:
        env = self.env
        for request in requests:
            if request.output_tokens < 1 or request.prompt_tokens < 1:
                raise ValueError(
                    f"request {request.request_id}: needs prompt_tokens >= 1 and output_tokens >= 1, "
                    f"got {request.prompt_tokens} and {request.output_tokens}"
                )
            if request.arrival > env.now:
                yield env.timeout(request.arrival - env.now)
            self.active += 1
            state = RequestState(request, len(self.servers))
            if self.max_running and self.running >= self.max_running:
                self.admission.append(state)
            else:
                self.running += 1
                self.start_round(state)

    def start_round(self, state: RequestState) -> None:
        now = self.env.now
        servers = self.servers
        view: RouteView = _new_tuple(
            RouteView,
            (
                state.request_id,
                state.prompt_tokens,
                state.generated,
                state.budget,
                state.domain,
                now,
                self.ladder,
                tuple(self.batch_sizes),
                tuple(map(len, self.queues)),
            ),
        )
        route = self.policy.route(view)
        if route.target != self.target:  # Route itself checked the chain is increasing and ends there
            raise ValueError(
                f"policy {self.policy.name!r} routed to target {route.target}, but the ladder's "
                f"target is model {self.target} ({self.ladder.size} models)"
            )
        state.begin_round(route, state.budget - state.generated, now, self.collect)
        servers[state.call_model].submit(state)

    def advance(self, batch: list[RequestState], model: int, seconds: float) -> None:
        """Resolve every member's call after a pass and move it to its next call."""
        now = self.env.now
        size = len(batch)
        servers = self.servers
        verify = self.verify
        trace = self.calls if self.trace_calls else None
        timings: dict[int, PassTiming] = {}
        queue = servers[model].queue
        collect = self.collect
        for state in batch:
            level = state.call_level
            candidates = state.call_candidates
            if collect:
                n = state.fed
                timing = timings.get(n)
                if timing is None:
                    timing = timings[n] = _new_tuple(PassTiming, (model, n, size, seconds))
                state.passes[level].append(timing)
            if candidates < 0:  # a draft step: the common case, resolved inline
                state.position[0] += 1
                if trace is not None:
                    trace.append((state.request_id, state.call, None))
                left = state.drafts_left - 1
                if left:
                    state.drafts_left = left
                    queue.append(state)  # this server is running: no wake-up needed
                    continue
                took = 0
            else:
                took = verify(
                    state.chain[level - 1], model, state.domain, now, state.latent, state.position[level],
                    candidates, state.tv[level] if collect else None,
                ) if candidates else 0  # fmt: skip
                state.position[level] += took + 1
                if trace is not None:
                    trace.append((state.request_id, state.call, took))
                if level == state.top:  # the target's verify ends the round (inline resolve)
                    state.proposed[level] += candidates
                    state.accepted[level] += took
                    state.emitted[level] += took + 1
                    self.finish_round(state)
                    continue
            if state.resolve(took):
                self.finish_round(state)
            else:
                servers[state.call_model].submit(state)

    def finish_round(self, state: RequestState) -> None:
        now = self.env.now
        committed = state.emitted[-1]
        state.finish(committed)
        done = state.generated >= state.budget
        if state.first_token < 0.0:
            state.first_token = now
        self.rounds_total += 1
        self.tokens_total += committed
        if self.collect:
            self._feedback(state, now, done)
        if not done:
            self.start_round(state)
            return
        self.active -= 1
        self.running -= 1
        if self.admission:
            self.running += 1
            self.start_round(self.admission.popleft())
        record_out = RequestRecord(
            state.request_id,
            state.arrival,
            state.first_token,
            now,
            state.prompt_tokens,
            state.generated,
            state.domain,
        )
        if self.request_sink is not None:
            self.request_sink(record_out)
        else:
            self.request_records.append(record_out)
        if self.progress is not None:
            self.progress(1)

    def _feedback(self, state: RequestState, now: float, done: bool) -> None:
        """Build the round's feedback, hand it to the policy and record the round."""
        route = state.route
        chain = route.chain
        proposed, accepted, emitted = state.proposed, state.accepted, state.emitted
        passes, tv = state.passes, state.tv
        levels = tuple(
            [
                _new_tuple(LevelFeedback, (chain[j], proposed[j], accepted[j], emitted[j], tuple(passes[j])))
                for j in range(len(chain))
            ]
        )
        pair_tv = tuple(
            [_new_tuple(PairTV, (chain[j - 1], chain[j], tuple(tv[j]))) for j in range(1, len(chain))]
        )
        feedback: RoundFeedback = _new_tuple(
            RoundFeedback,
            (state.request_id, state.domain, route, state.round_started, now, levels, pair_tv, done),
        )
        self.policy.observe(feedback)
        if self.record_rounds:
            record = round_record_from_feedback(feedback)
            if self.round_sink is not None:
                self.round_sink(record)
            else:
                self.round_records.append(record)


def ignores_feedback(policy: Policy) -> bool:
    """True for policies whose ``observe`` does nothing: their feedback need not be built.

    A policy may say so itself with ``needs_feedback = False``; the baselines
    :class:`~policies.baselines.TargetOnly` and :class:`~policies.baselines.StaticChain`
    (exact types, not subclasses, which may override ``observe``) are known to.
    """
    flag = getattr(policy, "needs_feedback", None)
    if flag is not None:
        return not flag
    return type(policy) in (TargetOnly, StaticChain)
