"""The system objective (cost_model.estimate_system, planner) and the hindsight oracle."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from policies.baselines import StaticChain
from policies.contract import LadderInfo, Route, RouteView
from policies.cost_model import (
    LATENCY_SHOW_THROUGH,
    AlphaFn,
    SystemLoad,
    enumerate_chains,
    estimate_round,
    estimate_round_parts,
    estimate_system,
    stages_overlap,
)
from policies.oracle import PhasedRouter, RouteCensus
from policies.planner import PassCube, RoutePlanner, TargetWait
from policies.synthetic import cube_from, pass_table_from
from sim.config import cluster_from_dict
from sim.engine import Simulation
from sim.presets import PRESETS, preset
from sim.scenario import Scenario
from sim.world import World
from specrouter.scenarios import (
    CandidateRun,
    candidate_run,
    hindsight_oracle,
    run_scenario,
    scenario_phases,
    tuned_static_specs,
)
from traces.request import Request

DECODE = (0.4, 1.2, 5.0, 40.0)
PER_POSITION = (0.01, 0.03, 0.1, 0.8)  # a pass feeding N positions in all: decode + rate * (N - 1)


def linear(model: int, positions: int, width: float) -> float:
    return DECODE[model] + PER_POSITION[model] * (positions * width - 1)


def roofline(model: int, positions: int, width: float) -> float:
    """Memory-bound floor, then compute-bound: ``max(decode, rate * N)``."""
    return max(DECODE[model], 0.2 * PER_POSITION[model] * positions * width)


def random_routes(rng: np.random.Generator, count: int) -> list[Route]:
    chains = enumerate_chains(4)
    routes = []
    for _ in range(count):
        chain = chains[int(rng.integers(len(chains)))]
        lookaheads = tuple(int(rng.integers(1, 5)) for _ in chain[:-1])
        routes.append(Route(chain, lookaheads, 3))
    return routes


def alpha_from_matrix(matrix: np.ndarray) -> AlphaFn:
    return lambda lower, upper: matrix[lower][upper]


def random_alpha(rng: np.random.Generator) -> np.ndarray:
    alpha = np.ones((4, 4))
    for lower in range(4):
        for upper in range(lower + 1, 4):
            alpha[lower, upper] = rng.uniform(0.2, 0.95)
    return alpha


def test_at_batch_one_the_system_objective_is_t_eff() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        alpha = random_alpha(rng)
        for route in random_routes(rng, 20):
            request = estimate_round(route, alpha_from_matrix(alpha), lambda m, n: linear(m, n, 1.0))
            for load in (SystemLoad(()), SystemLoad((1.0,) * 4, 1.0, caps=(64.0,) * 4, iterations=3)):
                system = estimate_system(route, alpha_from_matrix(alpha), linear, load)
                assert system.t_sys == pytest.approx(request.t_eff, rel=1e-12), (route, load)


def test_the_planner_prices_every_route_as_the_scalar_model() -> None:
    rng = np.random.default_rng(1)
    planner = RoutePlanner(4, max_lookahead=4, grid_rows=16)
    cube = cube_from(roofline, 4, planner.columns)
    alpha = random_alpha(rng)
    loads = [
        SystemLoad((3.0, 5.0, 8.0, 20.0), 40.0),  # fixed widths: the table path
        SystemLoad((3.0, 5.0, 8.0, 20.0), 40.0, caps=(32.0,) * 4, iterations=3),  # widths follow
        SystemLoad((4.0,) * 4, 40.0, caps=(64.0,) * 4, iterations=3, token_rate=900.0, max_in_flight=120.0),
        SystemLoad((3.0, 5.0, 8.0, 20.0), 40.0, devices=(0, 0, 1, 2)),  # the llama placement
        SystemLoad((3.0, 5.0, 8.0, 20.0), 40.0, devices=(0, 0, 0, 0), caps=(32.0,) * 4, iterations=3),
    ]
    grid_width = lambda m, n, w: float(cube.read(np.array([m]), np.array([w]), n + 1)[0, n])  # noqa: E731
    for load in loads:
        fixed = load.iterations == 0
        widths = load.batch_sizes
        table = pass_table_from(lambda m, n, b=widths: roofline(m, n, b[m]), 4, planner.columns)
        plans = planner.plan_chains(alpha, table, None, load, None if fixed else cube)
        for plan in plans:
            scalar = estimate_system(
                plan.route, alpha_from_matrix(alpha), roofline if fixed else grid_width, load
            )
            assert plan.t_eff == pytest.approx(scalar.t_sys, rel=1e-9), (plan.route, load)


def test_a_wait_per_target_second_prices_as_the_scalar_model_with_that_wait() -> None:
    # chain_waits="target": a round waits c seconds per second of its own target passes
    rng = np.random.default_rng(2)
    planner = RoutePlanner(4, max_lookahead=4, grid_rows=16)
    alpha = random_alpha(rng)
    factor = 0.6
    load = SystemLoad((3.0, 5.0, 8.0, 20.0), 40.0)
    table = pass_table_from(lambda m, n: roofline(m, n, load.batch_sizes[m]), 4, planner.columns)
    plain = {p.route.chain: p for p in planner.plan_chains(alpha, table, None, load)}
    for plan in planner.plan_chains(alpha, table, None, load, None, TargetWait(factor)):
        at_widths = lambda m, n: roofline(m, n, load.batch_sizes[m])  # noqa: E731
        target_time = estimate_round_parts(plan.route, alpha_from_matrix(alpha), at_widths).level_time[-1]
        scalar = estimate_system(
            plan.route, alpha_from_matrix(alpha), roofline, load, wait=factor * target_time
        )
        assert plan.t_eff == pytest.approx(scalar.t_sys, rel=1e-9), plan.route
        assert plan.t_eff > plain[plan.route.chain].t_eff  # waiting costs every chain something
    # target-only waits the least: it puts one short pass on the target
    waited = planner.plan_chains(alpha, table, None, load, None, TargetWait(factor))
    chains = {p.route.chain: p for p in waited}
    assert chains[(3,)].latency - plain[(3,)].latency == pytest.approx(factor * roofline(3, 1, 20.0))


def test_models_on_one_device_add_their_busy_time() -> None:
    """One device runs one pass at a time: its busy time per round is the sum of its models' shares."""
    route = Route((0, 2, 3), (4, 3), 3)
    alpha = alpha_from_matrix(np.full((4, 4), 0.7))
    widths = (2.0, 2.0, 4.0, 8.0)
    parts = estimate_round_parts(route, alpha, lambda m, n: linear(m, n, widths[m]))
    shares = [seconds / widths[m] for m, seconds in zip(route.chain, parts.level_time)]
    for devices, busy in (
        ((0, 1, 2, 3), max(shares)),
        ((0, 0, 1, 1), max(shares[0], shares[1] + shares[2])),
        ((0, 0, 0, 0), sum(shares)),
    ):
        load = SystemLoad(widths, 30.0, devices=devices)
        system = estimate_system(route, alpha, linear, load)
        assert system.bottleneck_busy == pytest.approx(busy, rel=1e-12), devices
        backlog = 30.0 * busy + LATENCY_SHOW_THROUGH * (parts.latency - busy)
        assert system.t_sys == pytest.approx(max(parts.latency, backlog) / parts.tokens, rel=1e-12)
    assert stages_overlap(None) and stages_overlap((0, 0, 1, 2)) and not stages_overlap((0, 0, 0))


def test_the_worlds_tell_policies_where_models_run() -> None:
    """Lockstep (one pass at a time) is one device; the pipelined presets number their GPUs."""
    llama = preset("llama")  # 68M and 1B share a GPU, the 8B and the 70B have their own
    assert llama.scheduler == "pipelined" and llama.devices() == (0, 0, 1, 2)
    assert dataclasses.replace(llama, scheduler="lockstep").devices() == (0, 0, 0, 0)
    assert preset("cpu").devices() == (0, 0, 0)
    raw = copy.deepcopy(PRESETS["llama"])
    lookup = {"name": "ngram", "kind": "ngram", "propose": {"*": 0.2}, "accept": {"*": 0.4}}
    raw["models"] = [lookup, *raw["models"]]
    assert cluster_from_dict(raw, "llama+ngram").devices() == (0, 1, 1, 2, 3)  # the lookup shares nothing
    seen: list[LadderInfo] = []

    class Watching(StaticChain):
        def route(self, view: RouteView) -> Route:
            seen.append(view.ladder)
            return super().route(view)

    Simulation(World(llama, Scenario(seed=0)), Watching((0, 2, 3), (2, 2))).run([Request(0, 0.0, 8, 4)])
    assert seen and all(ladder.devices == (0, 0, 1, 2) for ladder in seen)


def test_compute_bound_batches_switch_speculation_off() -> None:
    """At batch 1 speculation pays; at a compute-bound width verifying k+1 positions costs ~k+1 decodes."""
    planner = RoutePlanner(4)
    alpha = np.array([[1, 0.7, 0.65, 0.6], [1, 1, 0.8, 0.7], [1, 1, 1, 0.8], [1, 1, 1, 1]])
    cube = cube_from(roofline, 4, planner.columns)
    alone = planner.plan(alpha, pass_table_from(lambda m, n: roofline(m, n, 1.0), 4, planner.columns))
    assert not alone.route.is_target_only
    busy = SystemLoad((1.0,) * 4, 400.0, caps=(256.0,) * 4, iterations=3)
    loaded = planner.plan(
        alpha, pass_table_from(lambda m, n: roofline(m, n, 1.0), 4, planner.columns), busy, cube
    )
    assert loaded.route.is_target_only, loaded.route


def test_high_rate_scenario_reproduces_the_vllm_finding() -> None:
    """A fixed-lookahead chain is slower than plain decoding at a high request rate."""
    plain = run_scenario("high_rate", "target-only", limit=1500).summary["tpot_mean"]
    for spec in ("static:0>3:4", "static:0>2>3:6,6"):
        assert run_scenario("high_rate", spec, limit=1500).summary["tpot_mean"] > 1.2 * plain, spec


def test_hindsight_oracle_is_at_least_as_strong_as_every_candidate() -> None:
    limit = 300
    specs = ["target-only", *tuned_static_specs("domain_shift", limit)[:3], "oracle"]
    boundaries = scenario_phases("domain_shift", limit)
    assert len(boundaries) == 1
    runs = {
        spec: candidate_run(run_scenario("domain_shift", spec, limit=limit), boundaries) for spec in specs
    }
    found = hindsight_oracle("domain_shift", runs, limit=limit)
    assert found.tpot_mean <= min(run.tpot_mean for run in runs.values())
    assert len(found.phase_specs) == 2 and set(found.phase_specs) <= set(specs)
    with pytest.raises(ValueError):
        hindsight_oracle("domain_shift", {}, limit=limit)
    assert isinstance(next(iter(runs.values())), CandidateRun)


def test_phased_router_switches_policy_at_the_boundaries() -> None:
    first, second = StaticChain((0, 3), (2,)), StaticChain((2, 3), (4,))
    router = PhasedRouter([10.0], [first, second])
    ladder = LadderInfo(("a", "b", "c", "d"))

    def view(now: float) -> RouteView:
        return RouteView(0, 8, 0, 32, None, now, ladder, (0,) * 4, (0,) * 4)

    assert router.route(view(9.9)).chain == (0, 3)
    assert router.route(view(10.0)).chain == (2, 3)
    with pytest.raises(ValueError, match="one policy per phase"):
        PhasedRouter([1.0, 2.0], [first, second])


class _Switching:
    """Routes ``0>3:2`` before ``switch`` seconds and ``2>3:4`` after, counting observes."""

    name = "switching"

    def __init__(self, switch: float) -> None:
        self.switch = switch
        self.observed = 0

    def route(self, view: RouteView) -> Route:
        return Route((0, 3), (2,), 3) if view.now < self.switch else Route((2, 3), (4,), 3)

    def observe(self, feedback: object) -> None:
        self.observed += 1


def test_route_census_counts_routes_per_phase_and_passes_everything_through() -> None:
    inner = _Switching(switch=4.0)
    census = RouteCensus(inner, [10.0])
    ladder = LadderInfo(("a", "b", "c", "d"))
    early, late = Route((0, 3), (2,), 3), Route((2, 3), (4,), 3)
    # Phase 0: 3 early rounds, 6 late ones; phase 1: 2 late ones.  Overall late leads 8 to 3.
    for now in (1.0, 2.0, 3.0, 5.0, 6.0, 7.0, 8.0, 9.0, 9.5, 11.0, 12.0):
        route = census.route(RouteView(0, 8, 0, 32, None, now, ladder, (0,) * 4, (0,) * 4))
        assert route == inner.route(RouteView(0, 8, 0, 32, None, now, ladder, (0,) * 4, (0,) * 4))
        census.observe(None)  # type: ignore[arg-type]
    assert census.name == "switching" and inner.observed == 11
    assert census.counts[0] == {early: 3, late: 6} and census.counts[1] == {late: 2}
    assert census.modal_routes() == [late]  # the whole run's mode, and each phase's, once
    census.counts[0][early] += 7  # early now leads phase 0 (10 to 6) and the run (10 to 8)
    assert census.modal_routes() == [early, late]  # the run's and phase 0's mode, then phase 1's
    assert RouteCensus(inner, [10.0]).modal_routes() == []  # nothing routed, nothing found


def test_cube_reads_the_grid_log_linearly() -> None:
    cube = cube_from(linear, 4, 4)
    exact = cube.read(np.array([3, 3]), np.array([1.0, 2.0]), 4)
    assert exact[0, 2] == pytest.approx(linear(3, 2, 1.0)) and exact[1, 3] == pytest.approx(linear(3, 3, 2.0))
    between = cube.read(np.array([3]), np.array([1.5]), 4)[0, 1]
    assert linear(3, 1, 1.0) < between < linear(3, 1, 2.0)
    assert isinstance(cube, PassCube)


def test_backlog_probe_holds_plain_decoding_only_when_it_commits_more() -> None:
    from policies.specrouter_policy import BacklogProbe

    class Tracker:
        def __init__(self) -> None:
            self.committed_total = 0
            self.in_flight = 250.0
            self.most_in_flight = 256
            self.now = 0.0

    def run(probe: BacklogProbe, tracker: Tracker, rates: list[float]) -> list[bool]:
        plain = []
        for rate in rates:  # one window of one second each
            tracker.now += 1.0
            tracker.committed_total += int(rate)
            probe.step(tracker, tracker.now)  # type: ignore[arg-type]
            plain.append(probe.plain)
        return plain

    faster, tracker = BacklogProbe(), Tracker()
    states = run(faster, tracker, [1000.0, 1000.0, 2000.0])  # the probe (third) window commits 2x
    assert states == [False, True, True] and faster.holding
    tracker.in_flight = 100.0  # the backlog cleared: routing resumes
    assert run(faster, tracker, [2000.0]) == [False]
    slower, tracker = BacklogProbe(), Tracker()
    assert run(slower, tracker, [1000.0, 1000.0, 800.0, 1000.0]) == [False, True, False, False]
    assert slower.probes == 1 and slower.holds == 0
