"""Latency, acceptance, config, scenario hooks and the oracle's truth of the simulated world."""

from __future__ import annotations

import json
import math

import pytest

from policies.contract import WorldTruth
from policies.registry import make_policy
from sim.acceptance import AcceptanceModel, AlphaOverride
from sim.config import ConfigError, cluster_from_dict, load_cluster
from sim.engine import Simulation
from sim.latency import LatencyModel, Slowdown, random_slowdowns, table_lookup
from sim.presets import PRESETS, preset
from sim.scenario import Scenario, scenario_from_dict
from sim.world import World
from traces.request import Request
from traces.transforms import ramp_time
from traces.world_profile import ModelProfile, PairProfile, PassTimeTable, WorldProfile

LLAMA_PARAMS = [m.params for m in preset("llama").models]


def draw(model: AcceptanceModel, lower: int, upper: int, trials: int, candidates: int = 1) -> list[int]:
    return [model.verify(lower, upper, None, 0.0, [], 0, candidates, None) for _ in range(trials)]


def test_marginal_acceptance_equals_alpha_at_any_correlation() -> None:
    for rho in (0.0, 0.5, 0.95):
        model = AcceptanceModel(LLAMA_PARAMS, {(0, 3): 0.6}, correlation=rho, seed=1)
        rate = sum(draw(model, 0, 3, 20_000)) / 20_000
        assert rate == pytest.approx(0.6, abs=0.015)


def test_levels_share_the_latent_draw() -> None:
    """P(target accepts | middle accepted the same position) rises with the correlation."""

    def conditional(rho: float) -> float:
        model = AcceptanceModel(LLAMA_PARAMS, {(0, 2): 0.7, (2, 3): 0.7}, correlation=rho, seed=2)
        both = passed = 0
        for _ in range(20_000):
            latent: list[float] = []
            if model.verify(0, 2, None, 0.0, latent, 0, 1, None):
                passed += 1
                both += model.verify(2, 3, None, 0.0, latent, 0, 1, None)
        return both / passed

    assert conditional(0.0) == pytest.approx(0.7, abs=0.02)
    assert conditional(0.9) > 0.8


def test_domain_drift_and_overrides_move_alpha() -> None:
    model = AcceptanceModel(
        LLAMA_PARAMS,
        {(1, 3): 0.7},
        domains={"code": 1.0},
        drift_amplitude=0.5,
        drift_period=100.0,
        overrides=[AlphaOverride(1, 3, 0.02, None, 50.0, 60.0)],
    )
    values = [model.alpha(1, 3, None, t) for t in range(0, 100, 5)]
    assert max(values) - min(values) > 0.1  # drifts over a period
    assert model.alpha(1, 3, "code", 10.0) > model.alpha(1, 3, None, 10.0)
    assert model.alpha(1, 3, "code", 55.0) == 0.02  # a useless middle model during the window
    assert sum(draw(model, 1, 3, 200)) < 200  # draws follow the time-varying alpha (now = 0)


def test_tv_samples_track_one_minus_alpha() -> None:
    model = AcceptanceModel(LLAMA_PARAMS, {(2, 3): 0.8}, seed=3)
    samples: list[float] = []
    for _ in range(5000):
        model.verify(2, 3, None, 0.0, [], 0, 3, samples)
    assert len(samples) == 15_000 and all(0.0 <= v <= 1.0 for v in samples)
    assert sum(samples) / len(samples) == pytest.approx(0.2, abs=0.01)


def test_roofline_regimes() -> None:
    latency = LatencyModel(preset("llama"))
    decode = latency.expected(3, 1, 1, 1000, 1001, 0.0)
    assert 0.01 < decode < 0.05  # 70B decode on 2 x H200: weight streaming, ~20 ms
    assert latency.expected(3, 8, 1, 1000, 8 * 1008, 0.0) < 1.1 * decode  # verifying 8 is nearly free
    big = latency.expected(3, 8192, 1, 0, 8192 * 8192, 0.0)
    assert big > 10 * decode  # a long prefill is compute bound
    assert latency.expected(0, 1, 1, 100, 101, 0.0) < decode / 20


def test_noise_and_slowdown_episodes() -> None:
    cluster = preset("llama")
    quiet = LatencyModel(cluster)
    slow = LatencyModel(cluster, noise_sigma=0.2, slowdowns=[Slowdown("big", 10.0, 20.0, 3.0)], seed=4)
    base = quiet.pass_time(3, 1, 1, 500, 501, 0.0)
    inside = [slow.pass_time(3, 1, 1, 500, 501, 15.0) for _ in range(2000)]
    outside = [slow.pass_time(3, 1, 1, 500, 501, 25.0) for _ in range(2000)]
    assert sum(outside) / 2000 == pytest.approx(base, rel=0.03)
    assert sum(inside) / 2000 == pytest.approx(3 * base, rel=0.03)
    assert slow.pass_time(2, 1, 1, 500, 501, 15.0) < 1.5 * quiet.pass_time(2, 1, 1, 500, 501, 0.0)
    episodes = random_slowdowns(["a", "b"], 3600.0, 4.0, 2.0, 30.0, seed=0)
    assert episodes == random_slowdowns(["a", "b"], 3600.0, 4.0, 2.0, 30.0, seed=0) and len(episodes) > 2


def test_table_interpolation_and_extrapolation() -> None:
    table = PassTimeTable((1, 4), (1, 9), ((1.0, 2.0), (2.0, 6.0)))
    assert table_lookup(table, 1, 5) == pytest.approx(1.5)
    assert table_lookup(table, 2.5, 1) == pytest.approx(1.5)
    assert table_lookup(table, 4, 17) == pytest.approx(10.0)  # linear beyond the grid
    assert table_lookup(table, 1, 0) == pytest.approx(1.0)  # floored at the smallest measurement


def test_truth_reports_slowdowns_and_domains() -> None:
    scenario = Scenario(slowdowns=(Slowdown("big", 5.0, 9.0, 4.0),), domains={"code": 0.8})
    truth = World(preset("llama"), scenario).truth
    assert isinstance(truth, WorldTruth)
    assert truth.pass_time(3, 1, 1, 6.0) == pytest.approx(4 * truth.pass_time(3, 1, 1, 1.0))
    assert truth.pass_time(3, 1, 32, 1.0) > truth.pass_time(3, 1, 1, 1.0)
    assert truth.alpha(0, 3, "code", 0.0) > truth.alpha(0, 3, None, 0.0)


def test_oracle_runs_on_the_truth() -> None:
    world = World(preset("qwen"), Scenario(seed=1))
    policy = make_policy("oracle", world=world.truth)
    result = Simulation(world, policy).run([Request(i, 0.1 * i, 200, 40) for i in range(20)])
    assert len(result.requests) == 20 and result.tokens_total == 800


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["models"][2].__setitem__("gpu", "g9"), "models[2].gpu: unknown GPU 'g9'"),
        (lambda c: c["models"][0].__setitem__("layers", 0), "models[0].layers"),
        (lambda c: c["models"][1].__setitem__("width", 3), "models[1].width: unknown key"),
        (lambda c: c["gpus"].__setitem__("mid", "V100"), "gpus.mid.type: unknown GPU type 'V100'"),
        (lambda c: c.__setitem__("max_batch_size", -1), "max_batch_size"),
        (lambda c: c["gpus"].__setitem__("big", "H200"), "gpus.big: weights of llama-70b need 141.2 GB"),
    ],
)
def test_cluster_errors_name_the_key(tmp_path, mutate, message: str) -> None:
    raw = json.loads(json.dumps(PRESETS["llama"]))
    mutate(raw)
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError) as err:
        load_cluster(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_presets_build_and_place_models() -> None:
    for name in PRESETS:
        cluster = preset(name)
        assert len(cluster.models) >= 3 and cluster.target == len(cluster.models) - 1
    assert preset("llama").shared_gpus() == {"small": (0, 1)}
    assert cluster_from_dict(PRESETS["qwen"]).gpu_of(3).name == "big"
    with pytest.raises(ConfigError, match="unknown"):
        preset("mistral")


def test_scenario_errors_and_hooks() -> None:
    with pytest.raises(ConfigError, match=r"scenario.slowdowns\[0\].factor"):
        scenario_from_dict({"slowdowns": [{"gpu": "big", "start": 1, "end": 2, "factor": "x"}]})
    with pytest.raises(ConfigError, match="scenario.colour: unknown key"):
        scenario_from_dict({"colour": 1})
    with pytest.raises(ConfigError, match="pair key"):
        scenario_from_dict({"alpha": {"0-3": 0.5}})
    scenario = scenario_from_dict(
        {"load_ramps": [{"at": 10, "factor": 2}], "domain_shifts": [{"at": 5, "mix": {"code": 1}}], "seed": 3}
    )
    assert ramp_time(30.0, scenario.load_ramps) == pytest.approx(20.0)
    requests = [Request(i, float(i), 10, 10, "chat") for i in range(30)]
    shifted = list(scenario.workload.apply(requests))
    assert [r.domain for r in shifted[:6]] == ["chat"] * 5 + ["code"]
    assert shifted[-1].arrival == pytest.approx(10 + 19 / 2)
    assert all(b.arrival >= a.arrival for a, b in zip(shifted, shifted[1:]))


def test_slowdown_on_unknown_gpu_is_rejected() -> None:
    with pytest.raises(ConfigError, match="slowdowns.0..gpu: unknown GPU 'gpu7'"):
        World(preset("llama"), Scenario(slowdowns=(Slowdown("gpu7", 0.0, 1.0, 2.0),)))


def test_lean_and_full_feedback_give_identical_records() -> None:
    def run(feedback: str):
        world = World(preset("llama"), Scenario(seed=9, noise_sigma=0.1))
        requests = [Request(i, 0.02 * i, 300, 50) for i in range(100)]
        return Simulation(world, make_policy("static:0>2>3:4,1"), record_rounds=False, feedback=feedback).run(
            requests
        )

    lean, full = run("auto"), run("always")
    assert lean.requests == full.requests and lean.rounds_total == full.rounds_total
    assert not math.isnan(lean.sim_seconds)


def test_empirical_mode_replays_per_position_acceptance_and_tv() -> None:
    table = PassTimeTable((1,), (1,), ((0.01,),))
    models = tuple(ModelProfile(str(i), 1e6 * (i + 1), table) for i in range(3))
    pairs = (PairProfile(0, 2, 0.5, None, "greedy", (0.9, 0.6, 0.3), (0.1, 0.5)),)
    model = AcceptanceModel(
        [1e6, 2e6, 3e6], correlation=0.0, profile=WorldProfile("t", models, pairs), seed=5
    )
    counts = [0, 0, 0, 0]
    tv: list[float] = []
    for _ in range(20_000):
        counts[model.verify(0, 2, None, 0.0, [], 0, 3, tv)] += 1
    reached_second = 20_000 - counts[0]
    assert reached_second / 20_000 == pytest.approx(0.9, abs=0.01)
    assert (reached_second - counts[1]) / reached_second == pytest.approx(0.6, abs=0.015)
    assert set(tv) == {0.1, 0.5}
