"""Shipped scenario configs load, resolve their times and run a policy in the simulator."""

from __future__ import annotations

import json
import math

import pytest

from specrouter.scenarios import load_scenario_config, run_scenario, scenario_names, tuned_static_specs
from specrouter.scenarios.runner import ScenarioError, build_world, phase_boundaries, resolve_times

SHIPPED = {"stationary", "domain_shift", "slowdown", "load_ramp", "useless_middle", "high_rate"}


def test_the_shipped_scenarios_build() -> None:
    assert set(scenario_names()) >= SHIPPED
    for name in SHIPPED:
        world, requests = build_world(load_scenario_config(name), limit=40)
        assert len(requests) == 40 and len(world.cluster.models) == 4


def test_percent_times_are_fractions_of_the_requests_replayed() -> None:
    arrivals = [0.0, 1.0, 2.0, 300.0, 301.0]  # a long gap without arrivals in the middle
    raw = {"slowdowns": [{"gpu": "big", "start": "25%", "end": "75%", "factor": 2}], "seed": 1}
    assert resolve_times(raw, arrivals) == {
        "slowdowns": [{"gpu": "big", "start": 1.0, "end": 300.0, "factor": 2}],
        "seed": 1,
    }
    assert resolve_times({"at": "100%"}, arrivals) == {"at": 301.0}
    with pytest.raises(ScenarioError, match=r"slowdowns\[0\]\.start"):
        resolve_times({"slowdowns": [{"start": "soon"}]}, arrivals)


def test_the_slowdown_window_covers_the_middle_third_of_any_prefix() -> None:
    """The code trace's first 400 requests leave 287 s without arrivals; the window used to fall there."""
    for limit in (400, 800):
        world, requests = build_world(load_scenario_config("slowdown"), limit=limit)
        (episode,) = world.slowdowns
        inside = sum(episode.start <= r.arrival < episode.end for r in requests)
        assert abs(inside / len(requests) - 1 / 3) < 0.05, (limit, inside)
    slow = run_scenario("slowdown", "static:0>2>3:6,6", limit=400).summary["tpot_mean"]
    calm = run_scenario("stationary", "static:0>2>3:6,6", limit=400).summary["tpot_mean"]
    assert slow > 1.2 * calm


def test_load_ramp_times_follow_the_ramped_arrivals() -> None:
    world, requests = build_world(load_scenario_config("load_ramp"), limit=400)
    boundaries = phase_boundaries(world)
    assert len(boundaries) == 3
    for quarter, at in enumerate(boundaries, start=1):
        before = sum(r.arrival <= at for r in requests) / len(requests)
        assert abs(before - quarter / 4) < 0.05, (quarter, before)


def test_run_scenario_runs_registry_names_and_objects() -> None:
    result = run_scenario("domain_shift", "specrouter", limit=60)
    assert result.rounds > 0 and result.tokens == sum(r.output_tokens for r in result.requests)
    assert math.isfinite(result.summary["tpot_mean"]) and result.policy == "specrouter"
    assert {r.domain for r in result.requests} == {"code", "chat"}
    oracle = run_scenario("useless_middle", "oracle", limit=30)
    assert oracle.rounds > 0


def test_tuned_statics_cover_every_chain() -> None:
    specs = tuned_static_specs("stationary", limit=30)
    assert len(specs) == 7 and all(s.startswith("static:") for s in specs)


def test_bad_configs_name_the_file_and_key(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"trace": {"source": "azure-code"}, "colour": "red"}))
    with pytest.raises(ScenarioError, match="bad.json: unknown key 'colour'"):
        load_scenario_config(bad)
    bad.write_text(json.dumps({"trace": {"source": "azure-code", "rate": 2}}))
    with pytest.raises(ScenarioError, match=r"trace\.rate: unknown key"):
        load_scenario_config(bad)
    bad.write_text("{\n  'x': 1\n}")
    with pytest.raises(ScenarioError, match="line 2"):
        load_scenario_config(bad)
    with pytest.raises(ScenarioError, match="shipped"):
        load_scenario_config("no_such_scenario")
