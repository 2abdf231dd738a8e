"""The README's main job in one call: ladder -> profile -> policy comparison -> validate.

1. **Profile** the ladder (quick grid) -> ``OUT/validate/profile.json`` (kept on rerun).
2. **Compare policies in the simulator** calibrated from that profile, replaying the first
   ``trace_requests`` requests of the bundled Azure 2023 conversation sample
   (:func:`bundled_trace`).  Lengths are clipped to the ladder's context window as the backend
   would; arrivals are time-scaled so the offered load is ``load`` x what target-only decoding
   can serve at full batch:

       scale = load * (B / V_target(B, 1)) / (rate_trace * mean_output)

   with ``B`` the batch limit and ``V_target(B, 1)`` the profiled time of a one-token pass at
   batch ``B``.  Policies: target-only, every static chain, dynamic lookahead, the bandit,
   SpecRouter cold and warm-started from the profile (``specrouter:prior=PROFILE``,
   :mod:`policies.prior`) and the oracle -> ``OUT/compare/`` (records, table, plots).
3. **Validate** the warm-started SpecRouter on the real backend with a short workload ->
   ``OUT/validate/``: a short run is where learning from nothing costs most.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from specrouter.experiments.compare import Comparison, compare
from specrouter.experiments.profiled import cluster_for_profile
from specrouter.experiments.runs import RecordSink, RunOutput, SimWorld, run_simulated
from specrouter.experiments.validate import ValidateConfig, Validation, ensure_profile, mode_profile, validate
from traces.request import Request

TRACES = {
    "azure-conv": "azure_conv_2023_sample.csv",
    "azure-code": "azure_code_2023_sample.csv",
}


def bundled_trace(name: str = "azure-conv") -> Path:
    """Path of a trace sample shipped in the package (see ``data/ATTRIBUTION.txt``, CC-BY 4.0)."""
    if name not in TRACES:
        raise ValueError(f"unknown bundled trace {name!r}: choose one of {', '.join(TRACES)}")
    return Path(str(resources.files("specrouter.experiments") / "data" / TRACES[name]))


@dataclass(frozen=True)
class DemoConfig:
    ladder: str
    out: str
    trace_requests: int = 1000
    load: float = 0.5
    max_batch: int = 4
    validate_requests: int = 8
    validate_output_tokens: int = 32
    seed: int = 0
    policies: tuple[str, ...] = ()


@dataclass
class DemoResult:
    comparison: Comparison
    validation: Validation
    time_scale: float
    clipped: int


def demo_policies(ladder_size: int, profile: Path | None = None) -> list[str]:
    """The demo's policies; with a ``profile``, SpecRouter warm-started from it as well."""
    from policies.registry import every_static_chain

    return [
        "target-only",
        *every_static_chain(ladder_size),
        "dynamic-lookahead",
        "bandit",
        "specrouter",
        *([warm_specrouter(profile)] if profile is not None else []),
        "oracle",
    ]


def warm_specrouter(profile: Path | str) -> str:
    """SpecRouter warm-started from a world profile (:mod:`policies.prior`)."""
    return f"specrouter:prior={profile}"


def trace_workload(
    count: int, window: int, profile_path: Path, max_batch: int, load: float, trace: str = "azure-conv"
) -> tuple[list[Request], float, int]:
    """The first ``count`` trace requests, clipped and time-scaled (module doc); + scale, clipped."""
    from backend.replay import ClipReport, clip_to_context
    from sim.latency import table_lookup
    from traces.loaders import load_trace
    from traces.world_profile import load_world_profile

    report = ClipReport(window)
    requests = [clip_to_context(r, window, report) for r in load_trace(bundled_trace(trace), limit=count)]
    target = load_world_profile(profile_path).models[-1].pass_time
    capacity = max_batch / table_lookup(target, max_batch, 1)  # tokens/s of target-only at full batch
    span = max(requests[-1].arrival - requests[0].arrival, 1e-9)
    offered = sum(r.output_tokens for r in requests) / span
    scale = load * capacity / offered
    scaled = [r._replace(arrival=(r.arrival - requests[0].arrival) / scale) for r in requests]
    return scaled, scale, report.prompts_clipped + report.outputs_clipped


@dataclass(frozen=True)
class DemoWorld:
    """The demo's simulated world: the trace workload and the cluster of a profile."""

    world: SimWorld
    requests: list[Request]
    time_scale: float
    clipped: int


def demo_world(sim_profile: Path, config: DemoConfig, window: int) -> DemoWorld:
    """The world ``run_demo`` compares policies in, from the greedy profile ``sim_profile``
    (``mode_profile``) and the ladder's context ``window`` (``backend.replay.context_window``)."""
    from sim.scenario import Scenario

    requests, scale, clipped = trace_workload(
        config.trace_requests, window, sim_profile, config.max_batch, config.load
    )
    cluster = cluster_for_profile(sim_profile, config.max_batch, config.ladder)
    # the oracle plans with pass times at this per-sequence context: the workload's mean mid-request context
    context = round(sum(r.prompt_tokens + r.output_tokens / 2 for r in requests) / len(requests))
    scenario = Scenario(
        seed=config.seed, acceptance_mode="empirical", correlation=0.0, truth_context=max(1, context)
    )
    return DemoWorld(SimWorld(cluster, scenario), requests, scale, clipped)


def run_demo(config: DemoConfig, progress: Callable[[str], None] | None = None) -> DemoResult:
    from backend.ladder import load_ladder
    from backend.replay import context_window

    out = Path(config.out)
    ladder = load_ladder(config.ladder)
    check = ValidateConfig(
        config.ladder,
        "specrouter",
        str(out / "validate"),
        requests=config.validate_requests,
        output_tokens=config.validate_output_tokens,
        max_batch=config.max_batch,
        seed=config.seed,
    )
    profile_path = ensure_profile(check, ladder, progress)
    check = dataclasses.replace(check, policy=warm_specrouter(profile_path))
    sim_profile = mode_profile(profile_path, "greedy", out / "compare" / "sim_profile.json")
    simulated = demo_world(sim_profile, config, context_window(ladder.models))
    settings: dict[str, Any] = {**dataclasses.asdict(config), "time_scale": simulated.time_scale}
    settings.pop("out")

    def runner(_scenario: str, policy: str, run_dir: Path) -> RunOutput:
        sink = RecordSink(run_dir, {**settings, "policy": policy})
        return run_simulated(simulated.world, policy, simulated.requests, sink)

    policies = list(config.policies) or demo_policies(ladder.size, profile_path)
    comparison = compare(
        policies, ["azure-conv"], out / "compare", runner, show_progress=progress is not None
    )
    if progress:
        progress("validating SpecRouter (warm-started from the profile) on the real backend")
    validation = validate(check, progress=progress)
    return DemoResult(comparison, validation, simulated.time_scale, simulated.clipped)
