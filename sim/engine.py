"""The SimPy world: one process per model server, events per batch iteration.

**Servers.**  Every ladder model is a server with a FIFO queue of requests waiting for
their next model call.  Its process loops: wait for work; acquire the GPU if the model
shares it (a ``simpy.Resource``: co-placed models run one pass at a time); form a batch
from the head of the queue (up to ``max_batch_size`` sequences and ``max_batched_tokens``
positions; a single oversized prefill runs alone); compute the pass time from the latency
model; advance the clock once; then advance every member's round by one call in a tight
loop.  A member whose next call is on another model joins that server's queue (waking it);
one whose next call is on the same model joins the back of this queue, so it rides in the
next iteration: continuous batching.

**Rounds.**  A round is exactly the call sequence of :func:`policies.plan.round_calls`
(the generator itself drives it, so both worlds make the same calls in the same order and
count).  A ``DraftStep`` feeds 1 position, a ``Verify`` of ``k`` candidates ``k + 1``;
a model's first call after it sat out rounds also feeds the committed tokens it has not
scored yet (catch-up; for a new request that is the prompt: prefill).  Chain members are
treated as in sync after each round.  ``Verify`` outcomes come from
:class:`sim.acceptance.AcceptanceModel` at the pass's end.

**Lifecycle.**  Arrival -> ``policy.route(view)`` -> calls -> ``policy.observe(feedback)``
(per-level counts, every ``PassTiming``, TV samples per verified pair) -> next round, until
the output budget is met.  Records: :class:`traces.records.RequestRecord` per request and,
when enabled, :class:`traces.records.RoundRecord` per round.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import simpy

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


class Server:
    """One model's continuous-batching server (a SimPy process)."""

    def __init__(self, sim: Simulation, model: int, gpu: simpy.Resource | None) -> None:
        self.sim = sim
        self.model = model
        self.gpu = gpu
        self.queue: deque[RequestState] = deque()
        self.wakeup: simpy.Event | None = None
        self.batch_size = 0
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
        cluster = sim.world.cluster
        max_batch, max_tokens = cluster.max_batch_size, cluster.max_batched_tokens
        pass_time = sim.world.latency.pass_time
        while True:
            if not queue:
                self.wakeup = env.event()
                yield self.wakeup
            grant = None
            if self.gpu is not None:
                grant = self.gpu.request()
                yield grant
            batch: list[RequestState] = []
            fed: list[int] = []
            tokens = context = attention = 0
            while queue and len(batch) < max_batch:
                state = queue[0]
                n, ctx = state.call_positions(model)
                if batch and tokens + n > max_tokens:
                    break
                queue.popleft()
                state.cached[model] = state.prompt_tokens + state.generated - 1
                batch.append(state)
                fed.append(n)
                tokens += n
                context += ctx
                attention += n * (ctx + n)
            size = len(batch)
            seconds = pass_time(model, tokens, size, context, attention, env.now)
            self.batch_size = size
            yield env.timeout(seconds)
            if grant is not None and self.gpu is not None:
                self.gpu.release(grant)
            self.batch_size = 0
            self.passes += 1
            self.busy += seconds
            sim.advance(batch, fed, model, seconds)


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
    ) -> None:
        self.world = world
        self.policy = policy
        self.env = simpy.Environment()
        cluster = world.cluster
        self.ladder = LadderInfo(cluster.names, tuple(m.params for m in cluster.models))
        self.target = cluster.target
        gpu_locks = {gpu: simpy.Resource(self.env, capacity=1) for gpu in cluster.shared_gpus()}
        self.servers = [
            Server(self, index, gpu_locks.get(model.gpu)) for index, model in enumerate(cluster.models)
        ]
        for server in self.servers:
            self.env.process(server.run())
        self.record_rounds = world.scenario.record_rounds if record_rounds is None else record_rounds
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
        self._checked_routes: set[Any] = set()
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
            self.start_round(RequestState(request, len(self.servers)))

    def start_round(self, state: RequestState) -> None:
        now = self.env.now
        servers = self.servers
        view = RouteView(
            state.request_id,
            state.prompt_tokens,
            state.generated,
            state.budget,
            state.domain,
            now,
            self.ladder,
            tuple([s.batch_size for s in servers]),
            tuple([len(s.queue) for s in servers]),
        )
        route = self.policy.route(view)
        if route not in self._checked_routes:
            if route.target != self.target:
                raise ValueError(
                    f"policy {self.policy.name!r} routed to target {route.target}, but the ladder's "
                    f"target is model {self.target} ({self.ladder.size} models)"
                )
            self._checked_routes.add(route)
        state.begin_round(route, state.budget - state.generated, now)
        servers[state.call_model].submit(state)

    def advance(self, batch: list[RequestState], fed: list[int], model: int, seconds: float) -> None:
        """Resolve every member's call after a pass and move it to its next call."""
        now = self.env.now
        size = len(batch)
        servers = self.servers
        verify = self.verify
        trace = self.calls if self.trace_calls else None
        timings: dict[int, PassTiming] = {}
        for state, n in zip(batch, fed):
            level = state.call_level
            candidates = state.call_candidates
            if candidates >= 0:
                took = verify(
                    state.chain[level - 1], model, state.domain, now, state.latent, state.position[level],
                    candidates, state.tv[level],
                )  # fmt: skip
                state.position[level] += took + 1
            else:
                took = 0
                state.position[0] += 1
            timing = timings.get(n)
            if timing is None:
                timing = timings[n] = _new_tuple(PassTiming, (model, n, size, seconds))
            state.passes[level].append(timing)
            if trace is not None:
                trace.append((state.request_id, state.call, took if candidates >= 0 else None))
            if state.resolve(took):
                self.finish_round(state)
            else:
                servers[state.call_model].submit(state)

    def finish_round(self, state: RequestState) -> None:
        now = self.env.now
        route = state.route
        chain = route.chain
        proposed, accepted, emitted = state.proposed, state.accepted, state.emitted
        committed = emitted[-1]
        state.generated += committed
        done = state.generated >= state.budget
        if state.first_token < 0.0:
            state.first_token = now
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
        self.rounds_total += 1
        self.tokens_total += committed
        if self.record_rounds:
            record = round_record_from_feedback(feedback)
            if self.round_sink is not None:
                self.round_sink(record)
            else:
                self.round_records.append(record)
        state.sync_caches(chain)
        if not done:
            self.start_round(state)
            return
        self.active -= 1
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
