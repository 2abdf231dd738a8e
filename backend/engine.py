"""The batched engine: replay a workload on a real ladder, every round routed by a policy.

Many requests are in flight at once (continuous batching, at most ``max_batch``).  One
engine *step*:

1. **arrivals** -- requests whose arrival time has come join the waiting queue.  Arrival
   times are the trace's, on the run clock (seconds since the run started):

   * ``replay="wall"`` -- real wall-clock replay: the engine sleeps through idle gaps
     (``time_scale`` stretches or compresses the trace's clock);
   * ``replay="fast"`` -- as fast as possible: when nothing is running and the next request
     has not arrived, the run clock jumps to its arrival instead of sleeping, so queueing
     under load is still real but idle time costs nothing.

2. **admission** -- waiting requests fill free slots (FIFO); each gets a prompt of its
   requested length and domain from the :class:`backend.replay.PromptSource`, clipped to
   the ladder's context window (counted, warned once, written to ``run.json``).
3. **routing** -- for every running request the policy's ``route(view)`` picks this round's
   chain and lookaheads.  The view carries real load: ``batch_sizes[m]`` is the number of
   running requests whose previous round used model ``m`` (all running requests for the
   target on their first round) and ``queue_lengths[target]`` the requests waiting for a
   slot (every request needs the target; the other entries are 0).
4. **rounds** -- every running request runs one round of :func:`policies.plan.round_calls`
   in one :meth:`backend.executor.MultiLevelExecutor.step`, which batches the calls of all
   requests model by model (requests on different routes share the passes of the models
   their chains have in common; ragged acceptance is handled by the KV state).  Each
   request's ``RoundFeedback`` goes to ``policy.observe`` and to the records
   (:mod:`traces.records`).
5. **completion** -- a request that reached its output budget leaves the batch, its KV
   state is freed and its request record written.  Trace lengths are budgets: by default
   generation does not stop at end-of-sequence tokens (the trace says how long the answer
   was); ``stop_at_eos`` (benchmarks comparing with ``generate``) ends a request at one.

An interrupted run (Ctrl-C, an exception) keeps every record written so far: the
:class:`traces.records.RecordWriter` context closes its files on the way out and marks
``run.json`` as interrupted.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from backend.executor import MultiLevelExecutor
from backend.replay import ClipReport, PromptSource, clip_to_context, context_window
from backend.sampling import SamplingConfig
from policies.contract import LadderInfo, Policy, Route, RouteView
from traces.records import RecordWriter, RequestRecord
from traces.request import Request

REPLAY_MODES = ("wall", "fast")


@dataclass(frozen=True)
class EngineConfig:
    """How the engine batches and replays (see the module docstring)."""

    max_batch: int = 8
    replay: str = "fast"
    time_scale: float = 1.0
    keep_outputs: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"EngineConfig.max_batch must be >= 1, got {self.max_batch}")
        if self.replay not in REPLAY_MODES:
            raise ValueError(f"EngineConfig.replay must be one of {REPLAY_MODES}, got {self.replay!r}")
        if self.time_scale <= 0:
            raise ValueError(f"EngineConfig.time_scale must be > 0, got {self.time_scale}")


@dataclass
class ActiveRequest:
    """A request in the running batch."""

    request: Request
    arrival: float
    prompt: list[int]
    first_token: float | None = None
    generated: int = 0
    output: list[int] = field(default_factory=list)
    last_route: Route | None = None
    last_round_end: float = 0.0


@dataclass
class EngineResult:
    """What a run did: counts, clock, clipping, and (with ``keep_outputs``) the generated ids."""

    requests: int = 0
    rounds: int = 0
    tokens: int = 0
    wall_seconds: float = 0.0
    clipped: ClipReport | None = None
    outputs: dict[int, list[int]] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.wall_seconds if self.wall_seconds > 0 else 0.0


class Engine:
    """Continuous-batching trace replay of one policy on one ladder through one executor.

    ``executor`` is a :class:`backend.executor.MultiLevelExecutor` (``add`` / ``step`` / ``remove``)
    built with end-of-sequence detection off for trace replay (see :func:`replay_executor`).
    """

    def __init__(
        self,
        ladder: Any,
        executor: Any,
        policy: Policy,
        prompts: PromptSource,
        config: EngineConfig | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ladder = ladder
        self.executor = executor
        self.policy = policy
        self.prompts = prompts
        self.config = config or EngineConfig()
        self.info: LadderInfo = ladder.info
        self.window = context_window(ladder.models)
        self._clock = clock
        self._sleep = sleep
        self._origin = 0.0
        self._skipped = 0.0

    def now(self) -> float:
        """Seconds on the run clock (wall time since the start plus skipped idle gaps)."""
        return self._clock() - self._origin + self._skipped

    def run(self, requests: Iterable[Request], writer: RecordWriter | None = None) -> EngineResult:
        """Replay ``requests`` (any order; sorted by arrival here) to completion."""
        pending = deque(sorted(requests, key=lambda r: (r.arrival, r.request_id)))
        result = EngineResult(clipped=ClipReport(self.window))
        waiting: deque[tuple[Request, float]] = deque()
        running: list[ActiveRequest] = []
        self._origin, self._skipped = self._clock(), 0.0
        bar = tqdm(
            total=len(pending), unit="req", desc="replay", disable=not self.config.progress, leave=False
        )
        try:
            while pending or waiting or running:
                now = self.now()
                while pending and pending[0].arrival * self.config.time_scale <= now:
                    request = pending.popleft()
                    waiting.append((request, request.arrival * self.config.time_scale))
                if not waiting and not running:
                    self._wait_for(pending[0].arrival * self.config.time_scale - now)
                    continue
                while waiting and len(running) < self.config.max_batch:
                    request, arrival = waiting.popleft()
                    running.append(self._admit(request, arrival, result))
                finished = self._step(running, len(waiting), result, writer)
                for active in finished:
                    running.remove(active)
                    self.executor.remove(active.request.request_id)
                    self._finish(active, result, writer)
                    bar.update()
        finally:
            bar.close()
            result.wall_seconds = self.now() - self._skipped
        return result

    def _wait_for(self, gap: float) -> None:
        if gap <= 0:
            return
        if self.config.replay == "wall":
            self._sleep(gap)
        else:
            self._skipped += gap

    def _admit(self, request: Request, arrival: float, result: EngineResult) -> ActiveRequest:
        assert result.clipped is not None
        fitted = clip_to_context(request, self.window, result.clipped)
        prompt = self.prompts.prompt_ids(fitted)
        if len(prompt) != fitted.prompt_tokens:
            raise ValueError(
                f"prompt source {self.prompts.name!r} gave {len(prompt)} tokens for request "
                f"{request.request_id}; {fitted.prompt_tokens} were asked for"
            )
        self.executor.add(request.request_id, prompt, request.domain)
        return ActiveRequest(fitted, arrival, prompt)

    def _view(
        self, active: ActiveRequest, now: float, batch_sizes: tuple[int, ...], queue: tuple[int, ...]
    ) -> RouteView:
        request = active.request
        return RouteView(
            request.request_id,
            request.prompt_tokens,
            active.generated,
            request.output_tokens,
            request.domain,
            now,
            self.info,
            batch_sizes,
            queue,
        )

    def _load(self, running: list[ActiveRequest], waiting: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        size = self.info.size
        batch = [0] * size
        for active in running:
            for model in active.last_route.chain if active.last_route else (size - 1,):
                batch[model] += 1
        queue = [0] * size
        queue[size - 1] = waiting
        return tuple(batch), tuple(queue)

    def _step(
        self, running: list[ActiveRequest], waiting: int, result: EngineResult, writer: RecordWriter | None
    ) -> list[ActiveRequest]:
        """Route every running request and run one round for all of them; return the finished ones."""
        now = self.now()
        batch_sizes, queue = self._load(running, waiting)
        routes: dict[int, tuple[Route, int]] = {}
        for active in running:
            route = self.policy.route(self._view(active, now, batch_sizes, queue))
            routes[active.request.request_id] = (route, active.request.output_tokens - active.generated)
        outcomes = self.executor.step(routes, now=self.now)
        finished = []
        for active in running:
            outcome = outcomes[active.request.request_id]
            feedback = outcome.feedback
            self._commit(active, list(outcome.tokens), feedback.finished, feedback.route, result)
            self.policy.observe(feedback)
            if writer is not None:
                writer.add_feedback(feedback)
            result.rounds += 1
            if feedback.request_done or active.generated >= active.request.output_tokens:
                finished.append(active)  # budget reached, or end-of-sequence when stop_at_eos
        return finished

    def _commit(
        self, active: ActiveRequest, tokens: list[int], ended: float, route: Route, result: EngineResult
    ) -> None:
        if not tokens:
            raise RuntimeError(
                f"request {active.request.request_id}: a round committed no token (route {route})"
            )
        room = active.request.output_tokens - active.generated
        tokens = tokens[:room]
        if active.first_token is None:
            active.first_token = ended
        active.output.extend(tokens)
        active.generated += len(tokens)
        active.last_route = route
        active.last_round_end = ended
        result.tokens += len(tokens)

    def _finish(self, active: ActiveRequest, result: EngineResult, writer: RecordWriter | None) -> None:
        request = active.request
        finish = active.last_round_end
        record = RequestRecord(
            request.request_id,
            active.arrival,
            active.first_token if active.first_token is not None else finish,
            finish,
            request.prompt_tokens,
            active.generated,
            request.domain,
        )
        if writer is not None:
            writer.add_request(record)
        if self.config.keep_outputs:
            result.outputs[request.request_id] = list(active.output)
        result.requests += 1


NO_EOS = -1
"""An end-of-sequence id no tokenizer produces: trace replay runs every request to its budget."""


def replay_executor(
    ladder: Any,
    sampling: SamplingConfig | None = None,
    seed: int = 0,
    stop_at_eos: bool = False,
    lean: bool = False,
) -> MultiLevelExecutor:
    """The executor the engine drives; end-of-sequence detection is off unless ``stop_at_eos``.

    ``lean`` runs the models on :mod:`backend.lean` (Llama-family weights only).
    """
    eos = ladder.eos_token_id if stop_at_eos else NO_EOS
    return MultiLevelExecutor(ladder, sampling, seed=seed, eos_token_id=eos, lean=lean)


def replay(
    ladder: Any,
    policy: Policy,
    requests: Iterable[Request],
    prompts: PromptSource,
    config: EngineConfig | None = None,
    sampling: SamplingConfig | None = None,
    seed: int = 0,
    writer: RecordWriter | None = None,
    stop_at_eos: bool = False,
    lean: bool = False,
) -> EngineResult:
    """Replay ``requests`` on ``ladder`` under ``policy`` (records into ``writer`` when given)."""
    executor = replay_executor(ladder, sampling, seed, stop_at_eos, lean)
    engine = Engine(ladder, executor, policy, prompts, config)
    return engine.run(requests, writer)
