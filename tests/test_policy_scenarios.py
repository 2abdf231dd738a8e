"""Shipped scenario configs load, resolve their times and run a policy in the simulator."""

from __future__ import annotations

import json
import math

import pytest

from specrouter.scenarios import load_scenario_config, run_scenario, scenario_names, tuned_static_specs
from specrouter.scenarios.runner import ScenarioError, build_world, resolve_times

SHIPPED = {"stationary", "domain_shift", "slowdown", "load_ramp", "useless_middle"}


def test_the_five_scenarios_are_shipped_and_build() -> None:
    assert set(scenario_names()) >= SHIPPED
    for name in SHIPPED:
        world, requests = build_world(load_scenario_config(name), limit=40)
        assert len(requests) == 40 and len(world.cluster.models) == 4


def test_percent_times_scale_with_the_workload() -> None:
    raw = {"slowdowns": [{"gpu": "big", "start": "25%", "end": "50%", "factor": 2}], "seed": 1}
    assert resolve_times(raw, 200.0) == {
        "slowdowns": [{"gpu": "big", "start": 50.0, "end": 100.0, "factor": 2}],
        "seed": 1,
    }
    with pytest.raises(ScenarioError, match=r"slowdowns\[0\]\.start"):
        resolve_times({"slowdowns": [{"start": "soon"}]}, 1.0)


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
