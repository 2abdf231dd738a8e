"""The SimPy world: the serving loop of :mod:`policies.serving` with modelled passes.

Two schedulers, chosen by ``ClusterConfig.scheduler``:

* **lockstep** (the default; what the real backend runs) -- one SimPy process is the engine:
  it drives :func:`policies.serving.serve` and, for every :class:`~policies.serving.Pass` the
  loop forms, charges the latency model's pass time (:meth:`WorldPasses.run`) plus the
  loop's own time outside forward passes (per pass, per row and per finished round, as the
  profiler measured it on the ladder) and draws the acceptance outcomes.  Same admission,
  same routing moments, same rows, positions fed and padded widths as the backend.
* **pipelined** (the GPU-cluster presets; *simulated only* -- the backend has one device and
  runs lockstep) -- every ladder model is a continuous-batching server with its own FIFO
  queue; co-placed models share their GPU (one pass at a time).  A request whose next call
  is on another model joins that server's queue.  Rounds, positions fed, pass formation
  limits, acceptance draws and feedback are the shared ones of :mod:`policies.serving`.

``Verify`` outcomes come from :class:`sim.acceptance.AcceptanceModel` at the pass's end;
TV samples are drawn for the chain-neighbour pair, as the backend measures them.
Records: :class:`traces.records.RequestRecord` per request and, when enabled,
:class:`traces.records.RoundRecord` per round.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import simpy

from policies.baselines import StaticChain, TargetOnly
from policies.contract import LadderInfo, Policy, RoundFeedback
from policies.plan import Call
from policies.serving import (
    DRAFT,
    LOOKUP,
    WIDE_FEED,
    Idle,
    Pass,
    ServingConfig,
    Sinks,
    Slot,
    WorkLeft,
    close_round,
    request_record,
    resolve_pass,
    route_view,
    serve,
    start_round,
)
from sim.world import World
from traces.records import RequestRecord, RoundRecord, round_record_from_feedback
from traces.request import Request


class SimResult(NamedTuple):
    requests: list[RequestRecord]
    rounds: list[RoundRecord]
    rounds_total: int
    tokens_total: int
    sim_seconds: float
    calls: list[tuple[int, Call, int | None]]  # (request_id, call, outcome) when trace_calls
    passes: list[tuple[Any, ...]] = []  # Pass.signature() of every pass when trace_calls


class WorldPasses:
    """Runs a :class:`Pass` in the modelled world: its duration and its acceptance outcomes."""

    def __init__(self, world: World) -> None:
        cluster = world.cluster
        self.padded = cluster.padded_batches
        self.pass_time = world.latency.pass_time
        self.overhead = world.latency.loop_overhead
        self.charges_overhead = any(self.overhead)  # GPU clusters: none, and no per-pass work for it
        self.verify = world.acceptance.verify
        self.propose = world.acceptance.propose
        self.stream = world.acceptance.stream
        self.model_free = cluster.model_free

    def run(self, step: Pass, now: float) -> float:
        """Fill ``step``'s outcomes and forward time; return the time the pass takes in the loop."""
        model, rows, keeps, feeds = step.model, step.rows, step.keeps, step.feeds
        if self.model_free and model in self.model_free:
            return self._lookup(step, now)
        size = len(rows)
        tokens = step.width * size if self.padded else sum(feeds)
        step.positions = tokens
        context = sum(keeps)
        attention = sum([fed * (keep + fed) for keep, fed in zip(keeps, feeds)])
        seconds = self.pass_time(model, tokens, size, context, attention, now)
        step.seconds = seconds
        spent = seconds
        if self.charges_overhead:
            spent += self.overhead.seconds(size, step.rounds_ending())
        end = now + spent
        verify, accepted, collect = self.verify, step.accepted, step.collect
        for index, slot in enumerate(rows):
            candidates = slot.call_candidates
            if candidates > 0:
                level = slot.call_level
                draws = slot.draws
                if draws is None:
                    draws = slot.draws = self.stream(slot.request_id)
                accepted[index] = verify(
                    slot.chain[level - 1], model, slot.domain, end, slot.latent, slot.buffer[level],
                    candidates, slot.tv[level] if collect else None, draws,
                )  # fmt: skip
        return spent

    def _lookup(self, step: Pass, now: float) -> float:
        """A model-free member's pass: its profiled (or configured) cost by rows, and per row the
        number of the ``slot.drafted`` tokens it proposes, drawn per domain (``accepted``)."""
        model, rows = step.model, step.rows
        size = len(rows)
        seconds = self.pass_time(model, 0, size, 0, 0, now)
        step.seconds = seconds
        spent = seconds + self.overhead.seconds(size, 0) if self.charges_overhead else seconds
        propose, accepted = self.propose, step.accepted
        for index, slot in enumerate(rows):
            if slot.call_candidates != LOOKUP:
                raise RuntimeError(f"request {slot.request_id}: model-free M{model} was asked to score")
            if slot.draws is None:
                slot.draws = self.stream(slot.request_id)
            accepted[index] = propose(model, slot.domain, slot.drafted, slot.draws)
        return spent


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
    """One model's continuous-batching server in the pipelined scheduler (a SimPy process)."""

    def __init__(self, sim: Simulation, model: int, gpu: GpuLock | None) -> None:
        self.sim = sim
        self.model = model
        self.gpu = gpu
        self.queue: deque[Slot] = deque()
        self.wakeup: simpy.Event | None = None
        self.passes = 0
        self.busy = 0.0

    def submit(self, slot: Slot) -> None:
        self.queue.append(slot)
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
        limits = sim.serving
        max_rows, max_tokens = limits.max_pass_rows, limits.max_pass_tokens
        batch_sizes = sim.batch_sizes
        run_pass = sim.passes.run
        while True:
            if not queue:
                batch_sizes[model] = 0  # idle; while busy, views see the batch of the latest pass
                self.wakeup = env.event()
                yield self.wakeup
            if gpu is not None:
                handover = gpu.acquire()
                if handover is not None:
                    yield handover
            rows: list[Slot] = []
            keeps: list[int] = []
            feeds: list[int] = []
            width = 0
            while queue:
                slot = queue[0]
                keep, fed = slot.feed()
                size = len(rows)
                # policies.serving.fits and same_kind, inline (per row); FIFO: the head waits
                if size and (
                    size >= max_rows
                    or (fed if fed > width else width) * (size + 1) > max_tokens
                    or (fed > WIDE_FEED) != (width > WIDE_FEED)
                ):
                    break
                queue.popleft()
                slot.valid[model] = keep + fed  # take_row, inline: this loop runs per row
                rows.append(slot)
                keeps.append(keep)
                feeds.append(fed)
                if fed > width:
                    width = fed
            step = Pass(model, rows, keeps, feeds, width, sim.collect)
            seconds = run_pass(step, env.now)
            batch_sizes[model] = len(rows)
            yield env.timeout(seconds)
            if gpu is not None:
                gpu.release()
            self.passes += 1
            self.busy += seconds
            sim.after_pass(step)


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
        self.cluster = cluster
        params = tuple(m.params for m in cluster.models)
        self.ladder = LadderInfo(
            cluster.names, params, model_free=cluster.model_free, devices=cluster.devices()
        )
        self.target = cluster.target
        self.serving = ServingConfig(
            cluster.max_running_requests, cluster.max_batch_size, cluster.max_batched_tokens
        )
        self.passes = WorldPasses(world)
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
        self.pass_log: list[tuple[Any, ...]] = []
        self.rounds_total = 0
        self.tokens_total = 0
        self.active = 0
        # the pipelined scheduler's servers and admission state
        self.servers: list[Server] = []
        self.queues: list[deque[Slot]] = []
        self.batch_sizes = [0] * len(cluster.models)
        self.running = 0
        self.admission: deque[Request] = deque()
        self.work = WorkLeft()  # RouteView.work_left, as the lockstep loop (serve) fills it

    # -- lifecycle ---------------------------------------------------------------------
    def run(self, requests: Iterable[Request]) -> SimResult:
        if self.cluster.scheduler == "pipelined":
            gpu_locks = {gpu: GpuLock(self.env) for gpu in self.cluster.shared_gpus()}
            models = self.cluster.models
            self.servers = [Server(self, m, gpu_locks.get(model.gpu)) for m, model in enumerate(models)]
            self.queues = [server.queue for server in self.servers]
            for server in self.servers:
                self.env.process(server.run())
            self.env.process(self._arrivals(requests))
        else:
            self.env.process(self._lockstep(requests))
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
            self.pass_log,
        )

    # -- the records both schedulers write -------------------------------------------------
    def _record_round(self, feedback: RoundFeedback) -> None:
        """A round record (the schedulers call this only when rounds are recorded)."""
        record = round_record_from_feedback(feedback)
        if self.round_sink is not None:
            self.round_sink(record)
        else:
            self.round_records.append(record)

    def _record_request(self, record: RequestRecord, slot: Slot | None = None) -> None:
        if self.request_sink is not None:
            self.request_sink(record)
        else:
            self.request_records.append(record)
        if self.progress is not None:
            self.progress(1)

    def _trace(self, step: Pass) -> None:
        self.pass_log.append(step.signature())
        for slot, took in zip(step.rows, step.accepted):
            outcome = None if slot.call_candidates == DRAFT else took
            self.calls.append((slot.request_id, slot.call, outcome))

    # -- lockstep: the shared serving loop in one SimPy process --------------------------
    def _lockstep(self, requests: Iterable[Request]) -> Any:
        env = self.env
        sinks = Sinks(
            feedback=self._record_round if self.record_rounds else None,
            request=self._record_request,
            passes=self._trace if self.trace_calls else None,
        )
        loop = serve(requests, self.policy, self.ladder, self.serving, sinks, self.collect)
        run_pass = self.passes.run
        timeout = env.timeout
        try:
            action = next(loop)
            while True:
                if type(action) is Idle:
                    yield timeout(max(0.0, action.until - env.now))
                else:
                    assert isinstance(action, Pass)
                    yield timeout(run_pass(action, env.now))
                action = loop.send(env.now)
        except StopIteration as stop:
            stats = stop.value
            self.rounds_total, self.tokens_total = stats.rounds, stats.tokens

    # -- pipelined: one server per model ---------------------------------------------------
    def _arrivals(self, requests: Iterable[Request]) -> Any:
        env = self.env
        limit = self.serving.slots
        arrivals = iter(requests)
        request = next(arrivals, None)
        while request is not None:  # a request without prompt or output is refused by Slot
            if request.arrival > env.now:
                yield env.timeout(request.arrival - env.now)
            upcoming = next(arrivals, None)
            self.work.arrive(request)
            if upcoming is None:
                self.work.close()  # no request arrives after this one
            self.active += 1
            if limit and self.running >= limit:
                self.admission.append(request)
            else:
                self.running += 1
                self._start(Slot(request, len(self.servers), self.ladder.model_free))
            request = upcoming

    def _start(self, slot: Slot) -> None:
        queued = list(map(len, self.queues))
        view = route_view(
            slot, self.env.now, self.ladder, self.batch_sizes, queued, len(self.admission), self.work.value
        )
        start_round(slot, self.policy, view, self.target, self.collect)
        self.servers[slot.call_model].submit(slot)

    def after_pass(self, step: Pass) -> None:
        """Resolve a pipelined pass: finished rounds end, the others join their next server."""
        if self.trace_calls:
            self._trace(step)
        continuing: list[Slot] = []
        ended = resolve_pass(step, continuing)
        servers = self.servers
        here = step.model
        for slot in continuing:
            if slot.call_model == here:
                servers[here].queue.append(slot)  # this server is running: no wake-up needed
            else:
                servers[slot.call_model].submit(slot)
        now = self.env.now
        record_round = self._record_round if self.record_rounds else None
        for slot in ended:
            self.rounds_total += 1
            committed = close_round(slot, now, self.policy, self.collect, record_round)
            self.tokens_total += committed
            self.work.commit(slot, committed)
            if not slot.done:
                self._start(slot)
                continue
            self.active -= 1
            self.running -= 1
            self._record_request(request_record(slot))
            if self.admission:
                self.running += 1
                self._start(Slot(self.admission.popleft(), len(servers), self.ladder.model_free))


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
