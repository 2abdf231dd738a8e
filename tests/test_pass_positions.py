"""``PassTiming.positions``: what a whole pass computed, as its world charges it, and how the
pass-time profile files it (policies/serving.py, sim/engine.py, policies/estimators.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from policies.baselines import StaticChain
from policies.contract import RoundFeedback
from policies.estimators import PassTimeProfile
from sim.config import cluster_from_dict
from sim.engine import Simulation
from sim.scenario import Scenario
from sim.world import World
from traces.request import Request


class Recording(StaticChain):
    """A static three-level chain that keeps every pass timing it is shown."""

    def __init__(self) -> None:
        super().__init__((0, 1, 2), (4, 2))
        self.timings: list[Any] = []

    def observe(self, feedback: RoundFeedback) -> None:
        self.timings += [timing for level in feedback.levels for timing in level.passes]


def simulate(padded: bool) -> tuple[Recording, list[tuple[Any, ...]]]:
    cluster = cluster_from_dict(
        {
            "gpus": {"cpu": "CPU"},
            "models": [
                {"name": f"tiny{k}", "params": 2e4, "layers": 2, "hidden": 32, "heads": 4, "kv_heads": 4,
                 "gpu": "cpu"}
                for k in range(3)
            ],
            "max_batch_size": 6,
            "max_batched_tokens": 2048,
            "max_running_requests": 6,
            "padded_batches": padded,
        },
        "tiny",
    )  # fmt: skip
    policy = Recording()
    requests = [Request(i, 0.0, 16, 40) for i in range(6)]
    result = Simulation(World(cluster, Scenario(seed=0)), policy, trace_calls=True, feedback="always").run(
        requests
    )
    return policy, result.passes


@pytest.mark.parametrize("padded", [True, False])
def test_every_timing_reports_the_positions_its_pass_computed(padded: bool) -> None:
    policy, passes = simulate(padded)
    # Pass.signature(): (model, ((request, level, candidates, fed), ...), width)
    computed: Counter[tuple[int, int, int, int]] = Counter()
    for model, rows, width in passes:
        positions = width * len(rows) if padded else sum(fed for *_, fed in rows)
        for fed in {fed for *_, fed in rows}:
            computed[(model, fed, len(rows), positions)] += 1
    reported = Counter((t.model, t.tokens, t.batch_size, t.positions) for t in policy.timings)
    assert reported and set(reported) <= set(computed)
    # the chain's third level verifies a variable count: ragged target passes, where the
    # request's own feed times the batch is not what the pass computed
    ragged = [t for t in policy.timings if t.model == 2 and t.positions != t.tokens * t.batch_size]
    assert ragged
    if padded:
        assert all(t.positions > t.tokens * t.batch_size for t in ragged)


def test_a_ragged_pass_is_filed_at_the_positions_it_computed() -> None:
    profile = PassTimeProfile(1)
    profile.update(0, 3, 4, 0.010, positions=28)  # a row feeding 3 in a batch padded to 7
    assert profile.known_span(0) == (28.0, 28.0)
    unknown = PassTimeProfile(1)
    unknown.update(0, 3, 4, 0.010)  # a world that does not say: the request's feed times the batch
    assert unknown.known_span(0) == (12.0, 12.0)
