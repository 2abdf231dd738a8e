"""Routing scenarios shipped with the project: JSON configs plus :func:`run_scenario`.

``stationary``, ``domain_shift``, ``slowdown``, ``load_ramp`` and ``useless_middle`` (see
``docs/policies.md``).  From Python or a notebook::

    from specrouter.scenarios import run_scenario
    result = run_scenario("slowdown", "specrouter", limit=1500)
    print(result.summary["tpot_mean"])
"""

from specrouter.scenarios.runner import (
    ScenarioConfig,
    ScenarioResult,
    load_scenario_config,
    run_scenario,
    scenario_names,
    tuned_static_specs,
)

__all__ = [
    "ScenarioConfig",
    "ScenarioResult",
    "load_scenario_config",
    "run_scenario",
    "scenario_names",
    "tuned_static_specs",
]
