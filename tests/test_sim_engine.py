"""The simulator against the math: plan equality, T_eff faithfulness, determinism, batching."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from policies.baselines import StaticChain, TargetOnly
from policies.contract import Route, RouteView
from policies.cost_model import constant_pass_time, t_eff
from policies.plan import drive
from sim.engine import Simulation
from sim.presets import preset
from sim.scenario import Scenario
from sim.world import World
from traces.request import Request
from traces.world_profile import ModelProfile, PassTimeTable, WorldProfile, save_world_profile

PASS_SECONDS = (0.001, 0.004, 0.012, 0.040)
ALPHA = {(0, 1): 0.8, (0, 2): 0.7, (0, 3): 0.6, (1, 2): 0.82, (1, 3): 0.72, (2, 3): 0.88}


class RandomRouter:
    """Routes every round at random (chains and lookaheads) to exercise the plan."""

    name = "random-router"

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def route(self, view: RouteView) -> Route:
        target = view.ladder.target
        drafts = tuple(m for m in range(target) if self.rng.random() < 0.5)
        chain = (*drafts, target)
        lookaheads = tuple(self.rng.randint(1, 4) for _ in drafts)
        return Route(chain, lookaheads, target)

    def observe(self, feedback: object) -> None:
        return None


def fixed_world(tmp_path, correlation: float = 0.0, seed: int = 0, linear: bool = False) -> World:
    """Llama ladder with a profiled table of fixed per-model pass times (optionally linear in n)."""
    models = []
    for name, seconds in zip(preset("llama").names, PASS_SECONDS):
        row = (seconds, seconds * (1.0 + 0.5 * linear))  # tokens 1 and 65: slope seconds / 128
        models.append(ModelProfile(name, 1e9, PassTimeTable((1,), (1, 65), (row,), 0)))
    path = tmp_path / "fixed.json"
    save_world_profile(WorldProfile("test", tuple(models)), path)
    cluster = preset("llama", profile=str(path))
    return World(cluster, Scenario(seed=seed, correlation=correlation, alpha=ALPHA))


def sequential(requests: int, output: int, prompt: int = 1, gap: float = 1e4) -> list[Request]:
    return [Request(i, i * gap, prompt, output) for i in range(requests)]


def test_calls_follow_the_plan_exactly(tmp_path) -> None:
    world = World(preset("llama"), Scenario(seed=3, noise_sigma=0.1, correlation=0.6))
    requests = [Request(i, i * 0.01, 50 + i, 5 + (i * 7) % 40) for i in range(60)]
    sim = Simulation(world, RandomRouter(1), trace_calls=True)
    result = sim.run(requests)
    by_request = defaultdict(list)
    for request_id, call, outcome in result.calls:
        by_request[request_id].append((call, outcome))
    rounds = defaultdict(list)
    for record in result.rounds:
        rounds[record.request_id].append(record)
    checked = 0
    for request in requests:
        executed = by_request[request.request_id]
        generated = 0
        for record in rounds[request.request_id]:
            route = Route(record.chain_models, record.lookaheads, record.chain_models[-1])
            answers = iter([o for _, o in executed])
            calls, counts = drive(route, request.output_tokens - generated, lambda _c, a=answers: next(a))
            assert [c for c, _ in executed[: len(calls)]] == calls
            assert counts.accepted == record.accepted and counts.proposed == record.proposed
            assert counts.emitted[-1] == record.committed
            executed = executed[len(calls) :]
            generated += record.committed
            checked += 1
        assert executed == [] and generated == request.output_tokens
    assert checked == result.rounds_total > 500


@pytest.mark.parametrize(
    ("chain", "lookaheads"),
    [
        ((3,), ()),
        ((0, 3), (4,)),
        ((1, 3), (5,)),
        ((2, 3), (3,)),
        ((0, 2, 3), (3, 1)),
        ((1, 2, 3), (2, 2)),
        ((0, 1, 3), (2, 3)),
        ((0, 1, 2, 3), (2, 1, 1)),
    ],
)
def test_time_per_token_matches_cost_model(tmp_path, chain, lookaheads) -> None:
    world = fixed_world(tmp_path, linear=True)
    output = 5000
    result = Simulation(world, StaticChain(chain, lookaheads)).run(sequential(2, output))
    busy = sum(r.latency for r in result.rounds)
    measured = busy / result.tokens_total
    route = Route(chain, lookaheads, 3)

    def pass_time(model: int, tokens: int) -> float:
        return world.truth.pass_time(model, tokens, 1, 0.0)

    predicted = t_eff(route, lambda a, b: ALPHA[(a, b)], pass_time)
    assert measured == pytest.approx(predicted, rel=0.02)
    assert pass_time(3, 65) == pytest.approx(1.5 * pass_time(3, 1))  # the table really is linear in n


def test_correlated_levels_beat_the_independent_prediction(tmp_path) -> None:
    """With a shared latent the target accepts more of what the middle passed than alpha says."""
    chain, lookaheads = (0, 2, 3), (4, 1)
    independent = Simulation(fixed_world(tmp_path, 0.0), StaticChain(chain, lookaheads)).run(
        sequential(1, 8000)
    )
    correlated = Simulation(fixed_world(tmp_path, 0.9), StaticChain(chain, lookaheads)).run(
        sequential(1, 8000)
    )
    predicted = t_eff(
        Route(chain, lookaheads, 3), lambda a, b: ALPHA[(a, b)], constant_pass_time(PASS_SECONDS)
    )

    def per_token(result) -> float:
        return sum(r.latency for r in result.rounds) / result.tokens_total

    assert per_token(independent) == pytest.approx(predicted, rel=0.03)
    assert per_token(correlated) < 0.95 * predicted


def test_same_seed_same_records_bit_for_bit() -> None:
    def run(seed: int):
        world = World(preset("llama"), Scenario(seed=seed, noise_sigma=0.2, drift_amplitude=0.5))
        requests = [
            Request(i, i * 0.05, 100 + i % 17, 20 + i % 31, "code" if i % 3 else None) for i in range(80)
        ]
        return Simulation(world, RandomRouter(seed)).run(requests)

    first, second, other = run(5), run(5), run(6)
    assert first.requests == second.requests and first.rounds == second.rounds
    assert first.requests != other.requests


class RecordingChain(StaticChain):
    """A static chain that keeps every pass timing it is told about."""

    def __init__(self, chain: tuple[int, ...], lookaheads: tuple[int, ...]) -> None:
        super().__init__(chain, lookaheads)
        self.timings: list = []

    def observe(self, feedback) -> None:
        self.timings.extend(p for level in feedback.levels for p in level.passes)


def test_continuous_batching_respects_limits() -> None:
    world = World(preset("llama"), Scenario(seed=0))
    passes: list[tuple[int, int, int]] = []
    roofline = world.latency.pass_time

    def spy(model: int, tokens: int, batch: int, context: int, attention: int, now: float) -> float:
        passes.append((model, tokens, batch))
        return roofline(model, tokens, batch, context, attention, now)

    world.latency.pass_time = spy
    policy = RecordingChain((1, 3), (3,))
    requests = [Request(i, 0.0005 * i, 10_000 if i % 50 == 7 else 3000, 64) for i in range(300)]
    result = Simulation(world, policy).run(requests)
    limits = world.cluster
    assert len(result.requests) == 300 and all(r.output_tokens == 64 for r in result.requests)
    assert max(b for _, _, b in passes) == limits.max_batch_size  # the burst fills batches
    oversized = [(t, b) for _, t, b in passes if t > limits.max_batched_tokens]
    assert oversized and all(b == 1 for _, b in oversized)  # only a lone long prefill may exceed the budget
    prefills = [p for p in policy.timings if p.tokens >= 3000]
    assert len(prefills) == 2 * 300  # each chain model prefills each prompt once (catch-up of 2999 + 1)
    assert all(p.tokens in (1, 2, 3, 4) for p in policy.timings if p.tokens < 3000)


def test_target_only_time_is_decode_passes(tmp_path) -> None:
    world = fixed_world(tmp_path)
    result = Simulation(world, TargetOnly()).run(sequential(3, 50))
    for record in result.requests:
        assert record.finish - record.arrival == pytest.approx(50 * PASS_SECONDS[3])
