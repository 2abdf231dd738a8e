"""Routing scenarios shipped with the project: JSON configs plus :func:`run_scenario`.

``stationary``, ``domain_shift``, ``slowdown``, ``load_ramp``, ``useless_middle`` and
``high_rate`` (see ``docs/policies.md``).  From Python or a notebook::

    from specrouter.scenarios import run_scenario
    result = run_scenario("slowdown", "specrouter", limit=1500)
    print(result.summary["tpot_mean"])
"""

from specrouter.scenarios.runner import (
    CandidateRun,
    HindsightOracle,
    ScenarioConfig,
    ScenarioResult,
    candidate_run,
    hindsight_oracle,
    load_scenario_config,
    phase_boundaries,
    run_scenario,
    scenario_names,
    scenario_phases,
    tuned_static_specs,
)

__all__ = [
    "CandidateRun",
    "HindsightOracle",
    "ScenarioConfig",
    "ScenarioResult",
    "candidate_run",
    "hindsight_oracle",
    "load_scenario_config",
    "phase_boundaries",
    "run_scenario",
    "scenario_names",
    "scenario_phases",
    "tuned_static_specs",
]
