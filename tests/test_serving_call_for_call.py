"""Call for call: the simulator, fed the backend's outcomes, makes the backend's passes.

One workload (requests of different lengths, one arriving mid-run, one after an idle gap),
one deterministic router (chains of 1-3 levels, rotating per round), on a tiny real ladder.
The backend runs it for real with a clock that advances by a fixed time per pass; the
simulator replays it with the same pass times and, for every verification, the outcome the
backend recorded.  The sequence of passes -- model, rows (request, chain level, candidates,
positions fed) and padded width -- must be identical, and so must the round feedback and the
request records.  Dyadic times keep every clock sum exact in both worlds.

With the model-free n-gram lookup at the bottom of the ladder (member 0, prompts with repeated
spans so it proposes), the simulator is fed, for every lookup row, the number the backend's
lookup proposed: the same passes, views, feedback and records follow.
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any

import numpy as np
import pytest

from backend.engine import Engine, EngineConfig, replay_executor
from backend.ngram import NgramDrafter
from backend.replay import RandomTokenPrompts
from backend.testing import agreeing_ladder, tiny_ladder
from policies.contract import RoundFeedback, Route, RouteView
from policies.serving import DRAFT, LOOKUP, Pass
from sim.config import cluster_from_dict
from sim.engine import Simulation
from sim.scenario import Scenario
from sim.world import World
from traces.records import RequestRecord
from traces.request import Request

TICK = 2.0**-10  # seconds a pass of model m takes: (m + 1) ticks, exact in binary

ROUTES = (
    Route((0, 1, 2), (3, 2), 2),
    Route((0, 2), (4,), 2),
    Route((2,), (), 2),
    Route((1, 2), (2,), 2),
    Route((0, 1, 2), (2, 1), 2),
)


LOOKUP_ROUTES = (  # member 0 is the n-gram lookup, networks 1..3, target 3
    Route((0, 1, 3), (3, 2), 3),
    Route((0, 3), (4,), 3),
    Route((3,), (), 3),
    Route((1, 2, 3), (2, 1), 3),
    Route((0, 2, 3), (2, 1), 3),
    Route((0, 1, 2, 3), (3, 2, 1), 3),
)


def pass_seconds(model: int) -> float:
    return (model + 1) * TICK


class RotatingRouter:
    """Route ``(request + rounds so far) mod 5``: every chain shape, catch-up after target-only rounds."""

    name = "rotating"

    def __init__(self, routes: tuple[Route, ...] = ROUTES) -> None:
        self.routes = routes
        self.rounds: dict[int, int] = defaultdict(int)
        self.views: list[RouteView] = []
        self.feedback: list[RoundFeedback] = []

    def route(self, view: RouteView) -> Route:
        self.views.append(view)
        index = (view.request_id + self.rounds[view.request_id]) % len(self.routes)
        self.rounds[view.request_id] += 1
        return self.routes[index]

    def observe(self, feedback: RoundFeedback) -> None:
        self.feedback.append(feedback)


def workload() -> list[Request]:
    lengths = [(6, 9), (3, 4), (11, 13), (5, 2), (8, 7)]
    requests = [Request(i, 0.0, p, o, None) for i, (p, o) in enumerate(lengths)]
    requests.append(Request(5, 24 * TICK, 40, 6, None))  # arrives while others decode: a wide prefill
    requests.append(Request(6, 4096.0, 7, 5, None))  # arrives after everything finished: idle gap
    return requests


class PassClock:
    """The backend's clock: it moves only when a pass runs, by that pass's fixed time."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class RepeatingPrompts:
    """Prompts that repeat a short random span (a lookup finds matches in them)."""

    name = "repeating"

    def __init__(self, vocab_size: int, seed: int) -> None:
        self.vocab_size, self.seed = vocab_size, seed

    def prompt_ids(self, request: Request) -> list[int]:
        rng = np.random.default_rng([self.seed, request.request_id])
        span = rng.integers(4, self.vocab_size, size=int(rng.integers(2, 5))).tolist()
        return (span * request.prompt_tokens)[: request.prompt_tokens]


def is_outcome(slot: Any) -> bool:
    """Rows whose outcome the world decides: verifications, and lookups (tokens proposed)."""
    return bool(slot.call_candidates > 0 or slot.call_candidates == LOOKUP)


def run_backend(
    ladder: Any, slots: int, routes: tuple[Route, ...] = ROUTES, prompts: Any = None
) -> tuple[list[tuple[Any, ...]], dict[int, deque[int]], Any]:
    clock = PassClock()
    executor = replay_executor(ladder)
    real_run_pass = executor.run_pass

    def timed_pass(step: Pass) -> None:
        real_run_pass(step)
        step.seconds = pass_seconds(step.model)  # the feedback's pass timings, as simulated
        clock.t += step.seconds

    executor.run_pass = timed_pass  # type: ignore[method-assign]
    router = RotatingRouter(routes)
    engine = Engine(
        ladder,
        executor,
        router,
        prompts or RandomTokenPrompts(ladder.vocab_size, seed=3),
        EngineConfig(max_batch=slots, progress=False),
        clock=clock,
    )
    passes: list[tuple[Any, ...]] = []
    outcomes: dict[int, deque[int]] = defaultdict(deque)

    def log(step: Pass) -> None:
        passes.append(step.signature())
        for slot, took in zip(step.rows, step.accepted):
            if is_outcome(slot):
                outcomes[slot.request_id].append(took)

    engine.pass_sink = log
    records: list[RequestRecord] = []

    class Writer:
        def add_request(self, record: RequestRecord) -> None:
            records.append(record)

        def add_feedback(self, feedback: RoundFeedback) -> None:
            pass

    engine.run(workload(), Writer())  # type: ignore[arg-type]
    return passes, outcomes, (router, sorted(records))


def run_simulator(
    slots: int, outcomes: dict[int, deque[int]], routes: tuple[Route, ...] = ROUTES, lookup: bool = False
) -> tuple[list[tuple[Any, ...]], Any]:
    ngram = [{"name": "ngram", "kind": "ngram", "propose": {"*": 0.5}, "accept": {"*": 0.5}}]
    cluster = cluster_from_dict(
        {
            "gpus": {"cpu": "CPU"},
            "models": (ngram if lookup else []) + [
                {"name": f"tiny{k}", "params": 2e4, "layers": 2, "hidden": 32, "heads": 4, "kv_heads": 4,
                 "gpu": "cpu"}
                for k in range(3)
            ],
            "max_batch_size": slots,
            "max_batched_tokens": 2048,
            "max_running_requests": slots,
            "padded_batches": True,
        },
        "tiny",
    )  # fmt: skip
    router = RotatingRouter(routes)
    sim = Simulation(World(cluster, Scenario(seed=0)), router, trace_calls=True, feedback="always")
    recorded = {rid: deque(values) for rid, values in outcomes.items()}

    def replayed_pass(step: Pass, now: float) -> float:
        """The backend's pass time, and each verification's (and lookup's) outcome as the backend had it."""
        for index, slot in enumerate(step.rows):
            if is_outcome(slot):
                step.accepted[index] = recorded[slot.request_id].popleft()
        step.seconds = pass_seconds(step.model)
        return step.seconds

    sim.passes.run = replayed_pass  # type: ignore[method-assign]
    result = sim.run(workload())
    assert all(not left for left in recorded.values()), "the simulator asked for fewer verifications"
    return result.passes, (router, sorted(result.requests))


def assert_same_run(sim_passes: list, real_passes: list, sim: tuple, real: tuple) -> None:
    """Pass for pass, view for view, the same feedback (TV samples aside: real logits vs none
    drawn here) and the same records."""
    (sim_router, sim_records), (real_router, real_records) = sim, real
    assert len(sim_passes) == len(real_passes)
    for index, (simulated, measured) in enumerate(zip(sim_passes, real_passes)):
        assert simulated == measured, f"pass {index} differs"
    assert [v._replace(ladder=None) for v in sim_router.views] == [
        v._replace(ladder=None) for v in real_router.views
    ]
    assert [f._replace(tv=()) for f in sim_router.feedback] == [
        f._replace(tv=()) for f in real_router.feedback
    ]
    assert sim_records == real_records


@pytest.mark.parametrize("slots", [1, 4])
@pytest.mark.parametrize("make_ladder", [agreeing_ladder, tiny_ladder], ids=["agreeing", "random"])
def test_simulator_makes_the_backends_passes(slots: int, make_ladder: Any) -> None:
    ladder = make_ladder(3, seed=1)
    real_passes, outcomes, (real_router, real_records) = run_backend(ladder, slots)
    sim_passes, (sim_router, sim_records) = run_simulator(slots, outcomes)

    assert_same_run(sim_passes, real_passes, (sim_router, sim_records), (real_router, real_records))

    # the workload exercised what the test is for
    rows = [row for _, pass_rows, _ in real_passes for row in pass_rows]
    assert any(row[2] == DRAFT and row[3] >= 2 for row in rows), "no catch-up on a draft step"
    assert any(row[3] >= 4 for row in rows), "no prefill"
    assert max(len(pass_rows) for _, pass_rows, _ in real_passes) == slots
    assert {record.request_id for record in real_records} == set(range(7))
    if make_ladder is agreeing_ladder:
        full = [f for f in real_router.feedback if f.levels[-1].proposed and
                f.levels[-1].accepted == f.levels[-1].proposed]  # fmt: skip
        assert len(full) >= 5, "the agreeing ladder should give fully accepted rounds"


@pytest.mark.parametrize("slots", [1, 4])
def test_simulator_makes_the_backends_passes_with_the_lookup_at_the_bottom(slots: int) -> None:
    ladder = agreeing_ladder(3, seed=1).with_lookup(NgramDrafter(min_n=1, max_n=3))
    prompts = RepeatingPrompts(ladder.vocab_size, seed=5)
    real_passes, outcomes, (real_router, real_records) = run_backend(ladder, slots, LOOKUP_ROUTES, prompts)
    sim_passes, (sim_router, sim_records) = run_simulator(slots, outcomes, LOOKUP_ROUTES, lookup=True)

    assert_same_run(sim_passes, real_passes, (sim_router, sim_records), (real_router, real_records))

    # the lookup ran, proposed sometimes, and sometimes found nothing (the level above decoded alone)
    lookup_rows = [row for model, pass_rows, _ in real_passes if model == 0 for row in pass_rows]
    assert lookup_rows and all(row[2] == LOOKUP and row[3] == 0 for row in lookup_rows)
    proposed = [f.levels[0].emitted for f in real_router.feedback if f.levels[0].model == 0]
    assert max(proposed) >= 2 and min(proposed) == 0
    assert {record.request_id for record in real_records} == set(range(7))


def test_prefill_and_decode_rows_run_in_separate_passes() -> None:
    """A wide row (a prefill) never shares a pass with narrow ones: padding would charge every
    decode row the prefill's width."""
    from policies.serving import WIDE_FEED

    ladder = agreeing_ladder(3, seed=1)
    passes, _, _ = run_backend(ladder, 4)
    mixed = [p for p in passes if len({fed > WIDE_FEED for _, _, _, fed in p[1]}) > 1]
    assert mixed == []
    assert any(fed > WIDE_FEED for p in passes for *_, fed in p[1])  # the workload has prefills
