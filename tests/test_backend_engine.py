"""The batched engine end to end on tiny random models.

Greedy replay must reproduce plain target-only greedy decoding token for token for every
request under every policy (batched, mixed routes in one step); records are written and read
back; an interrupted run keeps its finished requests; replay clocks and context clipping.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from backend.engine import Engine, EngineConfig, replay, replay_executor
from backend.replay import RandomTokenPrompts
from backend.sampling import SamplingConfig
from backend.testing import tiny_ladder
from policies import DynamicLookahead, RoundFeedback, Route, RouteView, StaticChain, TargetOnly
from policies.registry import make_policy
from traces.records import RecordWriter, read_records
from traces.request import Request

LADDER = tiny_ladder(3, seed=0)
PROMPTS = RandomTokenPrompts(LADDER.vocab_size, seed=5)
QUIET = EngineConfig(max_batch=4, keep_outputs=True, progress=False)


def workload(count: int = 7) -> list[Request]:
    return [
        Request(i, 0.001 * i, 3 + (5 * i) % 11, 4 + (3 * i) % 9, ("code", "prose")[i % 2])
        for i in range(count)
    ]


def reference_greedy(prompt: list[int], new_tokens: int) -> list[int]:
    """Plain greedy decoding with the target, full forward pass per token (no cache at all)."""
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(new_tokens):
            logits = LADDER.models[-1](input_ids=torch.tensor([ids])).logits[0, -1, : LADDER.vocab_size]
            ids.append(int(torch.argmax(logits)))
    return ids[len(prompt) :]


class RandomRoutes:
    """A different random chain and lookaheads every round (exercises mixed routes per step)."""

    name = "random-routes"

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def route(self, view: RouteView) -> Route:
        target = view.ladder.target
        lower = [m for m in range(target) if self.rng.random() < 0.5]
        chain = (*lower, target)
        return Route(chain, tuple(self.rng.randint(1, 4) for _ in lower), target)

    def observe(self, feedback: RoundFeedback) -> None:
        return None


POLICIES = [
    TargetOnly(),
    StaticChain((0, 2), (4,)),
    StaticChain((0, 1, 2), (2, 2)),
    DynamicLookahead(drafter=1),
    RandomRoutes(seed=3),
    make_policy("specrouter"),
]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_greedy_replay_equals_target_only_greedy(policy: object) -> None:
    requests = workload()
    result = replay(LADDER, policy, requests, PROMPTS, QUIET)  # type: ignore[arg-type]
    assert result.requests_done == len(requests)
    for request in requests:
        expected = reference_greedy(PROMPTS.prompt_ids(request), request.output_tokens)
        assert result.outputs[request.request_id] == expected, f"request {request.request_id} under {policy}"
    assert result.tokens == sum(r.output_tokens for r in requests)


def test_lean_path_replay_equals_target_only_greedy() -> None:
    requests = workload(4)
    result = replay(LADDER, RandomRoutes(seed=8), requests, PROMPTS, QUIET, lean=True)
    for request in requests:
        expected = reference_greedy(PROMPTS.prompt_ids(request), request.output_tokens)
        assert result.outputs[request.request_id] == expected, f"request {request.request_id} (lean path)"


def test_records_are_written_and_consistent(tmp_path: Path) -> None:
    requests = workload(5)
    with RecordWriter(tmp_path, {"policy": "static"}) as writer:
        result = replay(LADDER, StaticChain((0, 1, 2), (3, 1)), requests, PROMPTS, QUIET, writer=writer)
    records = read_records(tmp_path)
    assert records.metadata["status"] == "complete"
    assert sorted(r.request_id for r in records.requests) == [r.request_id for r in requests]
    assert len(records.rounds) == result.rounds
    for record in records.requests:
        request = requests[record.request_id]
        assert record.output_tokens == request.output_tokens and record.prompt_tokens == request.prompt_tokens
        assert record.arrival == pytest.approx(request.arrival)
        assert record.arrival <= record.first_token <= record.finish
        assert record.domain == request.domain
        rounds = [r for r in records.rounds if r.request_id == record.request_id]
        assert sum(r.committed for r in rounds) == request.output_tokens
        assert all(r.chain_models == (0, 1, 2) and len(r.pass_seconds) == 3 for r in rounds)


class InterruptAfter:
    """Target-only decoding that raises KeyboardInterrupt at its ``limit``-th route call."""

    name = "interrupt"

    def __init__(self, limit: int) -> None:
        self.calls, self.limit = 0, limit

    def route(self, view: RouteView) -> Route:
        self.calls += 1
        if self.calls >= self.limit:
            raise KeyboardInterrupt
        return Route.target_only(view.ladder.target)

    def observe(self, feedback: RoundFeedback) -> None:
        return None


def test_interrupted_run_keeps_finished_requests(tmp_path: Path) -> None:
    requests = [Request(i, 0.0, 4, 2, None) for i in range(6)]  # one at a time, 2 rounds each
    config = EngineConfig(max_batch=1, progress=False)
    with pytest.raises(KeyboardInterrupt), RecordWriter(tmp_path) as writer:
        replay(LADDER, InterruptAfter(limit=6), requests, PROMPTS, config, writer=writer)
    records = read_records(tmp_path)
    assert [r.request_id for r in records.requests] == [0, 1]  # 2 rounds each; the 6th route call stops it
    assert len(records.rounds) == 5
    assert records.metadata["status"].startswith("interrupted")


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        self.t += 1e-4  # every reading advances a little, as real time does
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


@pytest.mark.parametrize("mode", ["wall", "fast"])
def test_replay_modes_respect_arrivals(mode: str) -> None:
    requests = [Request(0, 0.0, 4, 2, None), Request(1, 50.0, 4, 2, None)]
    clock = FakeClock()
    config = EngineConfig(max_batch=4, replay=mode, time_scale=2.0, progress=False)
    engine = Engine(LADDER, replay_executor(LADDER), TargetOnly(), PROMPTS, config, clock, clock.sleep)
    result = engine.run(requests)
    assert result.requests_done == 2
    if mode == "wall":
        assert len(clock.slept) == 1 and clock.slept[0] == pytest.approx(
            100.0, abs=1.0
        )  # 50 s x time_scale 2
        assert result.wall_seconds > 100.0
    else:
        assert clock.slept == [] and result.wall_seconds < 1.0  # the idle gap is skipped, not slept


class LoadRecorder(TargetOnly):
    def __init__(self) -> None:
        super().__init__()
        self.views: list[RouteView] = []

    def route(self, view: RouteView) -> Route:
        self.views.append(view)
        return super().route(view)


def test_policy_sees_real_batch_sizes_and_queue() -> None:
    policy = LoadRecorder()
    requests = [Request(i, 0.0, 4, 3, None) for i in range(5)]
    replay(LADDER, policy, requests, PROMPTS, EngineConfig(max_batch=2, progress=False))
    first, second = policy.views[:2]
    # admission: nothing has run yet; 3 requests wait for the 2 slots; the second request
    # sees the first one's call pending on the target
    assert first.batch_sizes == (0, 0, 0) and first.queue_lengths == (0, 0, 0) and first.waiting == 3
    assert second.queue_lengths == (0, 0, 1) and second.now == first.now
    # after the first target pass (2 rows) the routed requests see it and the 3 still waiting
    third = policy.views[2]
    assert third.batch_sizes == (0, 0, 2) and third.waiting == 3
    assert policy.views[-1].waiting == 0


def test_long_requests_are_clipped_to_the_context_window() -> None:
    window = LADDER.models[0].config.max_position_embeddings
    requests = [Request(0, 0.0, window + 50, 5, None), Request(1, 0.0, 10, 3 * window, None)]
    engine = Engine(LADDER, replay_executor(LADDER), TargetOnly(), PROMPTS, QUIET)
    engine.window = 40  # a small window keeps the test fast; the rule is the same
    result = engine.run(requests)
    assert result.clipped is not None and result.clipped.prompts_clipped == 1
    assert result.clipped.outputs_clipped == 1 and "clipped" in result.clipped.message()
    assert len(result.outputs[0]) == 5 and len(result.outputs[1]) == 20


def test_seeded_sampling_replay_repeats_bit_for_bit() -> None:
    requests = workload(4)
    sampling = SamplingConfig(temperature=0.9, top_k=20)
    runs = [
        replay(LADDER, StaticChain((0, 1, 2), (2, 2)), requests, PROMPTS, QUIET, sampling, seed=11).outputs
        for _ in range(2)
    ]
    other = replay(
        LADDER, StaticChain((0, 1, 2), (2, 2)), requests, PROMPTS, QUIET, sampling, seed=12
    ).outputs
    assert runs[0] == runs[1]
    assert runs[0] != other
