"""Load a scenario config, build its world and workload, and run a policy through it.

A config (``specrouter/scenarios/<name>.json``) has four keys::

    {
      "description": "...",
      "cluster": "llama",                                   # a sim.presets name
      "trace": {"source": "azure-code", "rate_scale": 0.5, "domain": "code"},
      "scenario": { ... sim.scenario keys ... }
    }

``trace.source`` is a file path or ``azure-code`` / ``azure-conv``: the Azure LLM inference
2023 trace found in ``$SPECROUTER_TRACE_DIR``, ``/work/shared/traces`` or
``../shared/traces`` next to the checkout, else the 1,000-row sample bundled in
``specrouter/experiments/data`` (a warning says so).  Other ``trace`` keys are options of
:func:`traces.loaders.load_trace` (``rate_scale``, ``domain``, ``limit``, ``start``, ``end``),
plus ``max_prompt_tokens``, which clips prompt lengths: the simulator runs a prefill as
one pass that stalls every sequence batched with it (no chunked prefill), and with the
code trace's long prompts those stalls, not decoding, would dominate time per token.
Inside ``scenario``, a time written as a string ``"50%"`` is that fraction of the
workload's last arrival (after ``rate_scale`` and ``limit``), so one config fits the full
trace and a ``--quick`` prefix of it.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from policies.contract import Policy, WorldTruth
from policies.cost_model import enumerate_chains
from policies.oracle import Oracle
from policies.registry import make_policy, static_spec
from traces.request import Request

SCENARIO_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCENARIO_DIR.parents[1]
TRACE_SOURCES = {
    "azure-code": ("AzureLLMInferenceTrace_code.csv", "azure_code_2023_sample.csv"),
    "azure-conv": ("AzureLLMInferenceTrace_conv.csv", "azure_conv_2023_sample.csv"),
}
CONFIG_KEYS = {"description", "cluster", "trace", "scenario"}
TRACE_KEYS = {"source", "rate_scale", "domain", "limit", "start", "end", "max_prompt_tokens"}
TIME_KEYS = {"at", "start", "end"}

PolicyLike = str | Policy | Callable[[WorldTruth], Policy]


class ScenarioError(ValueError):
    """A scenario config is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class ScenarioConfig:
    name: str
    path: Path
    description: str
    cluster: str
    trace: dict[str, Any]
    scenario: dict[str, Any]


class ScenarioResult(NamedTuple):
    scenario: str
    policy: str
    summary: dict[str, float]  # traces.summary.summarize of the request records
    rounds: int
    tokens: int
    sim_seconds: float
    wall_seconds: float
    policy_object: Policy
    requests: list[Any]  # traces.records.RequestRecord of every request


def scenario_names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.json"))


def load_scenario_config(name_or_path: str | os.PathLike[str]) -> ScenarioConfig:
    """A shipped scenario by name (``stationary``) or a config file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = SCENARIO_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ScenarioError(
            f"scenario {str(name_or_path)!r}: no file {path} (shipped: {', '.join(scenario_names())})"
        )
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ScenarioError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from err
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: expected a JSON object")
    for key in raw:
        if key not in CONFIG_KEYS:
            raise ScenarioError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(CONFIG_KEYS))})")
    trace = raw.get("trace", {})
    if not isinstance(trace, dict) or "source" not in trace:
        raise ScenarioError(f"{path}: trace: expected an object with a 'source'")
    for key in trace:
        if key not in TRACE_KEYS:
            raise ScenarioError(f"{path}: trace.{key}: unknown key (known: {', '.join(sorted(TRACE_KEYS))})")
    scenario = raw.get("scenario", {})
    if not isinstance(scenario, dict):
        raise ScenarioError(f"{path}: scenario: expected an object")
    return ScenarioConfig(
        path.stem, path, str(raw.get("description", "")), str(raw.get("cluster", "llama")), trace, scenario
    )


def trace_path(source: str) -> Path:
    """Resolve ``trace.source`` (see the module docstring)."""
    if source not in TRACE_SOURCES:
        path = Path(source).expanduser()
        if not path.is_absolute():
            path = REPO_ROOT / path
        if not path.is_file():
            raise ScenarioError(f"trace.source: no trace file {path}")
        return path
    full, sample = TRACE_SOURCES[source]
    folders = [
        os.environ.get("SPECROUTER_TRACE_DIR"),
        "/work/shared/traces",
        str(REPO_ROOT.parent / "shared/traces"),
    ]
    for folder in filter(None, folders):
        candidate = Path(folder) / full
        if candidate.is_file():
            return candidate
    bundled = REPO_ROOT / "specrouter" / "experiments" / "data" / sample
    warnings.warn(f"{full} not found; using the bundled sample {bundled}", UserWarning, stacklevel=3)
    return bundled


def load_requests(config: ScenarioConfig, limit: int | None = None) -> list[Request]:
    from traces.loaders import load_trace

    options = {k: v for k, v in config.trace.items() if k not in ("source", "max_prompt_tokens")}
    if limit is not None:
        options["limit"] = min(limit, int(options.get("limit", limit)))
    requests = list(load_trace(trace_path(str(config.trace["source"])), **options))
    cap = config.trace.get("max_prompt_tokens")
    if cap is not None:
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ScenarioError(
                f"{config.path}: trace.max_prompt_tokens: expected an integer >= 1, got {cap!r}"
            )
        requests = [r._replace(prompt_tokens=min(r.prompt_tokens, cap)) for r in requests]
    return requests


def resolve_times(raw: Any, horizon: float, where: str = "scenario") -> Any:
    """Replace ``"50%"`` under ``at`` / ``start`` / ``end`` keys by that fraction of ``horizon``."""
    if isinstance(raw, dict):
        out = {}
        for key, value in raw.items():
            if key in TIME_KEYS and isinstance(value, str):
                if not value.endswith("%"):
                    raise ScenarioError(
                        f"{where}.{key}: expected seconds or a percentage like '50%', got {value!r}"
                    )
                try:
                    out[key] = float(value[:-1]) / 100.0 * horizon
                except ValueError:
                    raise ScenarioError(f"{where}.{key}: {value!r} is not a percentage") from None
            else:
                out[key] = resolve_times(value, horizon, f"{where}.{key}")
        return out
    if isinstance(raw, list):
        return [resolve_times(v, horizon, f"{where}[{i}]") for i, v in enumerate(raw)]
    return raw


def build_world(
    config: ScenarioConfig, limit: int | None = None, seed: int | None = None
) -> tuple[Any, list[Request]]:
    """The simulated world of a scenario and its workload (hooks applied)."""
    from sim.config import ConfigError
    from sim.presets import preset
    from sim.scenario import apply_workload_hooks, scenario_from_dict
    from sim.world import World

    requests = load_requests(config, limit)
    horizon = max(r.arrival for r in requests)
    raw = resolve_times(config.scenario, horizon)
    if seed is not None:
        raw = {**raw, "seed": seed}
    try:
        world = World(preset(config.cluster), scenario_from_dict(raw, f"{config.path}: scenario"))
    except ConfigError as err:
        raise ScenarioError(str(err)) from err
    return world, list(apply_workload_hooks(requests, world.scenario))


def run_scenario(
    name: str | os.PathLike[str],
    policy: PolicyLike,
    *,
    limit: int | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> ScenarioResult:
    """Run one policy through a scenario in the simulator and summarise its requests.

    ``policy`` is a registry name (``"specrouter"``, ``"static:0>1>3:4,6"``, ``"oracle"``),
    a policy object (used as is: pass a fresh one), or ``callable(world_truth) -> policy``.
    ``limit`` keeps the first requests of the trace (time fractions scale with it).
    """
    from sim.engine import Simulation
    from traces.summary import summarize

    config = load_scenario_config(name)
    world, requests = build_world(config, limit, seed)
    if isinstance(policy, str):
        built = make_policy(policy, world=world.truth)
    elif callable(policy) and not hasattr(policy, "route"):
        built = policy(world.truth)
    else:
        built = policy  # type: ignore[assignment]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(requests), desc=f"{config.name}:{built.name}", unit="req", leave=False)
    started = time.perf_counter()
    result = Simulation(world, built, record_rounds=False, progress=bar.update if bar else None).run(requests)
    wall = time.perf_counter() - started
    if bar is not None:
        bar.close()
    return ScenarioResult(
        config.name,
        built.name,
        summarize(result.requests),
        result.rounds_total,
        result.tokens_total,
        result.sim_seconds,
        wall,
        built,
        result.requests,
    )


def tuned_static_specs(name: str | os.PathLike[str], limit: int | None = None) -> list[str]:
    """One static route per speculative chain, lookaheads tuned by the oracle's planner.

    Lookaheads are the best for that chain under the true acceptance and pass times at the
    start of the scenario (first request's domain, batch size 1): each static chain gets
    its best shot, and the best of them in hindsight is the static baseline.
    """
    from policies.contract import LadderInfo, RouteView

    config = load_scenario_config(name)
    world, requests = build_world(config, limit)
    size = len(world.cluster.models)
    ladder = LadderInfo(world.cluster.names)
    oracle = Oracle(world.truth)
    view = RouteView(0, 1, 0, 1, requests[0].domain, 0.0, ladder, (1,) * size, (0,) * size)
    alpha, table = oracle.truth_tables(view)
    assert oracle.planner is not None
    plans = oracle.planner.plan_chains(alpha, table)
    chains = [c for c in enumerate_chains(size) if len(c) > 1]
    return [static_spec(p.route.chain, p.route.lookaheads) for p in plans if p.route.chain in chains]
