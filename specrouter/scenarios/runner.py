"""Load a scenario config, build its world and workload, and run a policy through it.

A config (``specrouter/scenarios/<name>.json``) has four keys::

    {
      "description": "...",
      "cluster": "llama",                                   # a sim.presets name
      "trace": {"source": "azure-code", "rate_scale": 0.5, "domain": "code"},
      "scenario": { ... sim.scenario keys ... }
    }

``trace.source`` is a file path or ``azure-code`` / ``azure-conv``: the Azure LLM inference
2023 trace in the folder :func:`trace_folder` finds (``$SPECROUTER_TRACE_DIR`` if set, else
``../shared/traces`` beside the repository if it exists), else the 1,000-row sample bundled in
``specrouter/experiments/data`` (a warning says so).  Other ``trace`` keys are options of
:func:`traces.loaders.load_trace` (``rate_scale``, ``domain``, ``limit``, ``start``, ``end``),
plus ``max_prompt_tokens``, which clips prompt lengths: the simulator runs a prefill as
one pass that stalls every sequence batched with it (no chunked prefill), and with the
code trace's long prompts those stalls, not decoding, would dominate time per token.
Inside ``scenario``, a time written as a string ``"50%"`` is anchored to the workload
actually replayed: the arrival time of the request at that fraction of the requests (by
count, interpolated between neighbours), after ``rate_scale`` and ``limit``.  So "the middle
third" of a slowdown covers the middle third of the requests whatever the prefix, and
never falls into an arrival gap (a fraction of the *time span* did: the code trace's first
400 requests leave 287 s without arrivals, and a slowdown there changed nothing).
``load_ramps`` times are anchored to the arrivals before the ramps (they act on those);
every other time to the arrivals after them.

An optional top-level ``cluster_overrides`` object replaces batching fields of the preset
(``max_batch_size``, ``max_batched_tokens``, ``max_running_requests``): the high-rate
scenario serves like a production engine, up to 256 sequences per pass.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from policies.contract import Policy, WorldTruth
from policies.cost_model import enumerate_chains
from policies.oracle import Oracle
from policies.registry import make_policy, static_spec
from traces.jsonfile import read_json_document
from traces.request import Request

SCENARIO_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCENARIO_DIR.parents[1]
BUNDLED_TRACES = SCENARIO_DIR.parent / "experiments" / "data"  # samples shipped in the package
TRACE_SOURCES = {
    "azure-code": ("AzureLLMInferenceTrace_code.csv", "azure_code_2023_sample.csv"),
    "azure-conv": ("AzureLLMInferenceTrace_conv.csv", "azure_conv_2023_sample.csv"),
}
CONFIG_KEYS = {"description", "cluster", "cluster_overrides", "trace", "scenario"}
CLUSTER_OVERRIDE_KEYS = {"max_batch_size", "max_batched_tokens", "max_running_requests"}
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
    cluster_overrides: dict[str, Any] = field(default_factory=dict)


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
    raw = read_json_document(path, ScenarioError)
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
    overrides = raw.get("cluster_overrides", {})
    if not isinstance(overrides, dict):
        raise ScenarioError(f"{path}: cluster_overrides: expected an object")
    for key in overrides:
        if key not in CLUSTER_OVERRIDE_KEYS:
            raise ScenarioError(
                f"{path}: cluster_overrides.{key}: unknown key "
                f"(known: {', '.join(sorted(CLUSTER_OVERRIDE_KEYS))})"
            )
    return ScenarioConfig(
        path.stem,
        path,
        str(raw.get("description", "")),
        str(raw.get("cluster", "llama")),
        trace,
        scenario,
        dict(overrides),
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
    folder = trace_folder()
    if folder is not None and (folder / full).is_file():
        return folder / full
    bundled = BUNDLED_TRACES / sample
    warnings.warn(f"{full} not found; using the bundled sample {bundled}", UserWarning, stacklevel=3)
    return bundled


def trace_folder() -> Path | None:
    """The folder holding the full traces: ``$SPECROUTER_TRACE_DIR`` if set, else
    ``../shared/traces`` beside the repository if it exists, else None (the bundled samples)."""
    configured = os.environ.get("SPECROUTER_TRACE_DIR")
    if configured:
        return Path(configured).expanduser()
    beside = REPO_ROOT.parent / "shared" / "traces"
    return beside if beside.is_dir() else None


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


def arrival_at(fraction: float, arrivals: Sequence[float]) -> float:
    """Arrival time of the request at ``fraction`` of the workload (by count, interpolated)."""
    ordered = sorted(arrivals)
    if not ordered:
        raise ScenarioError("a scenario needs at least one request to anchor its times")
    position = min(max(fraction, 0.0), 1.0) * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    weight = position - below
    return ordered[below] * (1.0 - weight) + ordered[above] * weight


def resolve_times(raw: Any, arrivals: Sequence[float], where: str = "scenario") -> Any:
    """Replace ``"50%"`` under ``at`` / ``start`` / ``end`` keys by :func:`arrival_at` of ``arrivals``."""
    if isinstance(raw, dict):
        out = {}
        for key, value in raw.items():
            if key in TIME_KEYS and isinstance(value, str):
                if not value.endswith("%"):
                    raise ScenarioError(
                        f"{where}.{key}: expected seconds or a percentage like '50%', got {value!r}"
                    )
                try:
                    fraction = float(value[:-1]) / 100.0
                except ValueError:
                    raise ScenarioError(f"{where}.{key}: {value!r} is not a percentage") from None
                out[key] = arrival_at(fraction, arrivals)
            else:
                out[key] = resolve_times(value, arrivals, f"{where}.{key}")
        return out
    if isinstance(raw, list):
        return [resolve_times(v, arrivals, f"{where}[{i}]") for i, v in enumerate(raw)]
    return raw


def resolve_scenario(config: ScenarioConfig, requests: Sequence[Request]) -> dict[str, Any]:
    """The config's ``scenario`` object with every percentage time anchored to ``requests``.

    Load ramps act on the original arrivals, so their times are fractions of those; the
    other events happen in simulated time, after the ramps reshaped the arrivals.
    """
    from sim.config import ConfigError
    from sim.scenario import scenario_from_dict
    from traces.transforms import ramp_time

    where = f"{config.path}: scenario"
    raw_arrivals = [r.arrival for r in requests]
    rest = {k: v for k, v in config.scenario.items() if k != "load_ramps"}
    if "load_ramps" not in config.scenario:
        return resolve_times(rest, raw_arrivals, where)
    ramps_raw = resolve_times(config.scenario["load_ramps"], raw_arrivals, f"{where}.load_ramps")
    try:
        ramps = scenario_from_dict({"load_ramps": ramps_raw}, where).load_ramps
    except ConfigError as err:
        raise ScenarioError(str(err)) from err
    arrivals = [ramp_time(a, ramps) for a in raw_arrivals]
    return {**resolve_times(rest, arrivals, where), "load_ramps": ramps_raw}


def build_cluster(config: ScenarioConfig) -> Any:
    """The config's preset cluster with its ``cluster_overrides`` applied."""
    from sim.config import ConfigError, cluster_from_dict
    from sim.presets import PRESETS, preset

    if not config.cluster_overrides:
        return preset(config.cluster)
    if config.cluster not in PRESETS:
        return preset(config.cluster)  # raises the preset's own error
    try:
        return cluster_from_dict({**PRESETS[config.cluster], **config.cluster_overrides}, config.cluster)
    except ConfigError as err:
        raise ScenarioError(f"{config.path}: cluster_overrides: {err}") from err


def build_world(
    config: ScenarioConfig, limit: int | None = None, seed: int | None = None
) -> tuple[Any, list[Request]]:
    """The simulated world of a scenario and its workload (hooks applied)."""
    from sim.config import ConfigError
    from sim.scenario import scenario_from_dict
    from sim.world import World

    requests = load_requests(config, limit)
    raw = resolve_scenario(config, requests)
    if seed is not None:
        raw = {**raw, "seed": seed}
    try:
        world = World(build_cluster(config), scenario_from_dict(raw, f"{config.path}: scenario"))
    except ConfigError as err:
        raise ScenarioError(str(err)) from err
    return world, list(world.scenario.workload.apply(requests))


def phase_boundaries(world: Any) -> list[float]:
    """Times (simulated seconds) at which a scenario's world or workload changes.

    Load ramps (in simulated time, after the ramp), domain shifts, slowdown episodes and
    acceptance overrides: the phases between them are where a hindsight router may pick
    a different route.  Sorted, positive, finite, without duplicates.
    """
    from traces.transforms import ramp_time

    scenario = world.scenario
    times: set[float] = set()
    times.update(ramp_time(r.at, scenario.load_ramps) for r in scenario.load_ramps)
    times.update(s.at for s in scenario.domain_shifts)
    for episode in world.slowdowns:
        times.update((episode.start, episode.end))
    for override in scenario.acceptance_overrides:
        times.update((override.start, override.end))
    return sorted(t for t in times if 0.0 < t < math.inf)


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
    from specrouter.experiments.runs import RecordSink, SimWorld, build_policy, run_simulated

    config = load_scenario_config(name)
    world, requests = build_world(config, limit, seed)
    built: list[Policy] = []

    def chosen(truth: WorldTruth | None) -> Policy:
        built.append(build_policy(policy, truth))  # type: ignore[arg-type]
        return built[-1]

    sink = RecordSink(record_rounds=False, progress=progress)
    run = run_simulated(SimWorld(world.cluster, world.scenario), chosen, requests, sink)
    return ScenarioResult(
        config.name,
        run.policy,
        run.summary,
        run.rounds_total,
        run.tokens_total,
        run.world_seconds,
        run.wall_seconds,
        built[0],
        run.requests,
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


class HindsightOracle(NamedTuple):
    """The best routing found in hindsight for one scenario and seed (see :func:`hindsight_oracle`)."""

    tpot_mean: float  # mean TPOT (seconds) of the best run
    source: str  # "phased" or the candidate spec whose whole run was best
    phase_specs: tuple[str, ...]  # the candidate chosen for each phase
    boundaries: tuple[float, ...]  # phase boundaries (simulated seconds)
    phased_tpot_mean: float | None  # the phased rollout's mean TPOT (None when not run)


def phase_tpot_means(requests: Sequence[Any], boundaries: Sequence[float]) -> list[float]:
    """Mean TPOT of the requests arriving in each phase (NaN for a phase without any)."""
    from bisect import bisect_right

    sums = [0.0] * (len(boundaries) + 1)
    counts = [0] * (len(boundaries) + 1)
    for r in requests:
        if r.output_tokens > 1:
            phase = bisect_right(boundaries, r.arrival)
            sums[phase] += (r.finish - r.first_token) / (r.output_tokens - 1)
            counts[phase] += 1
    return [s / c if c else math.nan for s, c in zip(sums, counts)]


class CandidateRun(NamedTuple):
    """What the hindsight search needs of one candidate's whole run."""

    tpot_mean: float  # seconds
    phase_tpot: tuple[float, ...]  # mean TPOT of the requests arriving in each phase


def candidate_run(result: ScenarioResult, boundaries: Sequence[float]) -> CandidateRun:
    return CandidateRun(result.summary["tpot_mean"], tuple(phase_tpot_means(result.requests, boundaries)))


def scenario_phases(
    name: str | os.PathLike[str], limit: int | None = None, seed: int | None = None
) -> list[float]:
    """:func:`phase_boundaries` of a scenario's world for this workload prefix and seed."""
    world, _ = build_world(load_scenario_config(name), limit, seed)
    return phase_boundaries(world)


def hindsight_oracle(
    name: str | os.PathLike[str],
    candidates: dict[str, CandidateRun],
    *,
    limit: int | None = None,
    seed: int | None = None,
) -> HindsightOracle:
    """The best route per scenario phase, found by simulated rollouts.

    ``candidates`` are whole runs of candidate policies on this scenario and seed (every
    static chain, target-only, the truth planner; ``bench/policy_quality.py`` passes every
    policy it ran, the adaptive ones too), summarised by :func:`candidate_run`.
    Each phase (between the scenario's event times, :func:`phase_boundaries`) gets the
    candidate whose requests arriving in that phase had the lowest mean TPOT; the phased
    policy is replayed once -- a seeded run repeats bit for bit, so this is the figure
    that policy really gets -- and the oracle is the best of that rollout and every
    candidate's whole run.  So it is at least as strong as every static chain by
    construction, and it sees everything the simulator does: queueing, GPU sharing,
    prefills riding in batches.
    """
    from policies.oracle import PhasedRouter

    if not candidates:
        raise ValueError("hindsight_oracle needs at least one candidate run")
    boundaries = tuple(scenario_phases(name, limit, seed))
    best_spec = min(candidates, key=lambda spec: candidates[spec].tpot_mean)
    best = candidates[best_spec].tpot_mean
    chosen = []
    for phase in range(len(boundaries) + 1):
        scored = [
            (run.phase_tpot[phase], spec)
            for spec, run in candidates.items()
            if phase < len(run.phase_tpot) and not math.isnan(run.phase_tpot[phase])
        ]
        chosen.append(min(scored)[1] if scored else best_spec)
    if len(set(chosen)) == 1:
        return HindsightOracle(best, best_spec, tuple(chosen), boundaries, None)

    def phased(truth: WorldTruth) -> Policy:
        policies = [make_policy(spec, world=truth) for spec in chosen]
        return PhasedRouter(boundaries, policies, name="hindsight-oracle")

    rollout = run_scenario(name, phased, limit=limit, seed=seed).summary["tpot_mean"]
    if rollout < best:
        return HindsightOracle(rollout, "phased", tuple(chosen), boundaries, rollout)
    return HindsightOracle(best, best_spec, tuple(chosen), boundaries, rollout)
