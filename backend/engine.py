"""The batched engine: replay a workload on a real ladder through the shared serving loop.

The loop is :func:`policies.serving.serve` -- the same code the simulator runs -- so admission,
routing, pass formation (which model, which rows, positions fed, padding), completion and the
round feedback are identical in both worlds; this module supplies only the real world: a clock,
prompts, and :meth:`backend.executor.MultiLevelExecutor.run_pass` for every pass.

* **Clock.**  Arrival times are the trace's, on the run clock (seconds since the run started):
  ``replay="wall"`` sleeps through idle gaps (``time_scale`` stretches or compresses the trace's
  clock); ``replay="fast"`` jumps the run clock to the next arrival when nothing is running, so
  queueing under load is still real but idle time costs nothing.
* **Prompts.**  A request admitted by the loop gets, on its first pass, a prompt of its requested
  length and domain from the :class:`backend.replay.PromptSource`; requests are clipped to the
  ladder's context window first (counted, warned once, written to ``run.json``), so a
  simulator replaying the same clipped requests sees the same workload.
* **Slots.**  ``max_batch`` requests decode at once (FIFO admission); a pass holds at most
  ``max_batch`` rows and ``max_pass_tokens`` padded positions.
* **Completion.**  Trace lengths are budgets: generation does not stop at end-of-sequence
  tokens (the trace says how long the answer was), in the simulator neither; ``stop_at_eos``
  (benchmarks comparing with ``generate``) ends a request at one.

An interrupted run (Ctrl-C, an exception) keeps every record written so far: the
:class:`traces.records.RecordWriter` context closes its files on the way out and marks
``run.json`` as interrupted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from backend.executor import MultiLevelExecutor
from backend.replay import ClipReport, PromptSource, clip_to_context, context_window
from backend.sampling import SamplingConfig
from policies.contract import LadderInfo, Policy, RoundFeedback
from policies.serving import Idle, Pass, ServingConfig, Sinks, Slot, serve
from traces.records import RecordWriter, RequestRecord
from traces.request import Request

REPLAY_MODES = ("wall", "fast")


@dataclass(frozen=True)
class EngineConfig:
    """How the engine batches and replays (see the module docstring)."""

    max_batch: int = 8
    max_pass_tokens: int = 2048
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
class EngineResult:
    """What a run did: counts, clock, clipping, and (with ``keep_outputs``) the generated ids."""

    requests_done: int = 0
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

    ``executor`` is a :class:`backend.executor.MultiLevelExecutor` built with end-of-sequence
    detection off for trace replay (see :func:`replay_executor`).
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
        self.pass_sink: Callable[[Pass], None] | None = None
        """Called with every pass after it ran (call traces: the call-for-call test)."""

    @property
    def serving(self) -> ServingConfig:
        """The loop's limits: ``max_batch`` slots and rows per pass, ``max_pass_tokens`` positions."""
        config = self.config
        return ServingConfig(config.max_batch, config.max_batch, config.max_pass_tokens)

    def now(self) -> float:
        """Seconds on the run clock (wall time since the start plus skipped idle gaps)."""
        return self._clock() - self._origin + self._skipped

    def run(self, requests: Iterable[Request], writer: RecordWriter | None = None) -> EngineResult:
        """Replay ``requests`` (any order; sorted by arrival here) to completion."""
        result = EngineResult(clipped=ClipReport(self.window))
        assert result.clipped is not None
        scale = self.config.time_scale
        fitted = [
            clip_to_context(request, self.window, result.clipped)._replace(arrival=request.arrival * scale)
            for request in sorted(requests, key=lambda r: (r.arrival, r.request_id))
        ]
        by_id = {request.request_id: request for request in fitted}
        bar = tqdm(
            total=len(fitted), unit="req", desc="replay", disable=not self.config.progress, leave=False
        )

        def prompt_for(slot: Slot) -> list[int]:
            request = by_id[slot.request_id]
            prompt = self.prompts.prompt_ids(request)
            if len(prompt) != request.prompt_tokens:
                raise ValueError(
                    f"prompt source {self.prompts.name!r} gave {len(prompt)} tokens for request "
                    f"{request.request_id}; {request.prompt_tokens} were asked for"
                )
            return prompt

        def finished(record: RequestRecord, slot: Slot) -> None:
            if self.config.keep_outputs:
                prompt = by_id[slot.request_id].prompt_tokens
                result.outputs[slot.request_id] = self.executor.tokens(slot.request_id)[prompt:]
            self.executor.remove(slot.request_id)
            if writer is not None:
                writer.add_request(record)
            result.requests_done += 1
            bar.update()

        def feedback(round_feedback: RoundFeedback) -> None:
            if writer is not None:
                writer.add_feedback(round_feedback)

        self.executor.prompt_for = prompt_for
        self._origin, self._skipped = self._clock(), 0.0
        sinks = Sinks(feedback, finished, self.pass_sink)
        loop = serve(fitted, self.policy, self.info, self.serving, sinks, start=self.now())
        try:
            action = next(loop)
            while True:
                if isinstance(action, Idle):
                    self._wait_for(action.until - self.now())
                else:
                    self.executor.run_pass(action)
                action = loop.send(self.now())
        except StopIteration as stop:
            stats = stop.value
            result.rounds, result.tokens = stats.rounds, stats.tokens
        finally:
            bar.close()
            self.executor.prompt_for = None
            result.wall_seconds = self.now() - self._skipped
        return result

    def _wait_for(self, gap: float) -> None:
        if gap <= 0:
            return
        if self.config.replay == "wall":
            self._sleep(gap)
        else:
            self._skipped += gap


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
