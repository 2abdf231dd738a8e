"""One way to run a policy in either world and get the same things back.

Every run writes its records with :class:`traces.records.RecordWriter` into a run
directory and returns a :class:`RunOutput`: request and round records, the summary
(:func:`traces.summary.summarize`), the scenario's events as plot markers, and the directory.

A run directory whose ``run.json`` says ``complete`` and whose recorded ``settings`` equal
this run's is read back instead of rerun (:func:`finished_run`): an interrupted validate or
compare keeps what it finished and redoes only the rest.

* :func:`simulate_requests` -- a workload through :class:`sim.engine.Simulation`;
* :func:`simulate_scenario` -- a shipped scenario (:mod:`specrouter.scenarios`);
* :func:`run_real` -- a workload on a real ladder through :class:`backend.engine.Engine`;
* :func:`cluster_for_profile` -- a simulator cluster whose models are a profiled ladder's,
  all sharing one device, with the profile attached (table latency).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from specrouter.plots import Marker
from traces.records import RecordWriter, RequestRecord, RoundRecord, read_records
from traces.request import Request
from traces.summary import summarize


class RunOutput(NamedTuple):
    requests: list[RequestRecord]
    rounds: list[RoundRecord]
    summary: dict[str, float]
    markers: list[Marker]
    out_dir: Path | None
    reused: bool = False


def finished_run(
    run_dir: Path | None, settings: dict[str, Any], markers: Sequence[Marker] = ()
) -> RunOutput | None:
    """The records of a completed run with the same ``settings``, or None."""
    if run_dir is None or not (run_dir / "run.json").exists():
        return None
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except json.JSONDecodeError:
        return None
    if meta.get("status") != "complete" or meta.get("settings") != _jsonable(settings):
        return None
    records = read_records(run_dir)
    return RunOutput(
        records.requests, records.rounds, summarize(records.requests), list(markers), run_dir, True
    )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def scenario_markers(scenario: Any) -> list[Marker]:
    """Plot markers for a :class:`sim.scenario.Scenario`'s events."""
    markers = [Marker(s.at, "domain shift") for s in scenario.domain_shifts]
    markers += [Marker(r.at, f"load x{r.factor:g}") for r in scenario.load_ramps]
    markers += [Marker(s.start, f"{s.gpu} {s.factor:g}x slower", s.end) for s in scenario.slowdowns]
    markers += [
        Marker(o.start, f"alpha M{o.lower}->M{o.upper} = {o.alpha:g}", o.end if o.end < 1e12 else None)
        for o in scenario.acceptance_overrides
    ]
    return sorted(markers, key=lambda marker: (marker.start, marker.label))


def simulate_requests(
    cluster: Any,
    scenario: Any,
    requests: Iterable[Request],
    policy: Any,
    out_dir: Path | None,
    settings: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    hooks: bool = True,
) -> RunOutput:
    """Run ``requests`` through a simulated world; write records into ``out_dir`` (if given).

    ``policy`` is a policy object or a name (built here, after the world exists, so the
    oracle can be handed the world's truth) with constructor arguments ``params``;
    ``hooks=False`` when the scenario's workload hooks were already applied.
    """
    from sim.engine import Simulation
    from sim.scenario import apply_workload_hooks
    from sim.world import World

    settings = dict(settings or {})
    markers = scenario_markers(scenario)
    reused = finished_run(out_dir, settings, markers)
    if reused is not None:
        return reused
    world = World(cluster, scenario)
    if isinstance(policy, str):
        from specrouter.experiments.policies import make_policy

        policy = make_policy(policy, params, truth=world.truth)
    workload = list(apply_workload_hooks(requests, scenario)) if hooks else list(requests)
    if out_dir is None:
        result = Simulation(world, policy).run(workload)
        return RunOutput(result.requests, result.rounds, summarize(result.requests), markers, None)
    with RecordWriter(out_dir, {"world": "sim", "settings": settings}) as writer:
        Simulation(world, policy, request_sink=writer.add_request, round_sink=writer.add_round).run(workload)
    records = read_records(out_dir)
    return RunOutput(records.requests, records.rounds, summarize(records.requests), markers, out_dir)


def cluster_for_profile(
    profile_path: str | Path,
    max_batch: int,
    ladder_dir: str | Path | None = None,
    max_running: int = 0,
    pass_tokens: int = 2048,
) -> Any:
    """A one-device cluster of the profiled ladder's models with the profile's pass-time tables.

    ``max_running`` limits how many requests decode at once (the real engine's ``max_batch``
    slots, FIFO admission); 0 leaves it unlimited.
    """
    from sim.config import cluster_from_dict
    from traces.world_profile import load_world_profile

    profile = load_world_profile(profile_path)
    models = []
    for index, model in enumerate(profile.models):
        shape = _model_shape(Path(ladder_dir) / model.name if ladder_dir else None)
        models.append({"name": model.name, "params": model.params, "gpu": "device", **shape})
        if index and model.params < profile.models[index - 1].params:
            raise ValueError(
                f"{profile_path}: models must be ordered cheapest first ({model.name} is smaller)"
            )
    raw = {
        "gpus": {"device": "CPU"},
        "models": models,
        "max_batch_size": max_batch,
        "max_batched_tokens": pass_tokens,  # the engine's padded positions per pass
        "max_running_requests": max_running,
        "padded_batches": True,  # the profiled backend pads ragged batches to the widest feed
        "profile": str(profile_path),
    }
    return cluster_from_dict(raw, f"profile:{Path(profile_path).name}")


def _model_shape(model_dir: Path | None) -> dict[str, Any]:
    """Layers / widths from a Hugging Face ``config.json`` (placeholders when absent: the
    table latency model does not use them)."""
    shape = {"layers": 1, "hidden": 64, "heads": 1, "kv_heads": 1, "bytes_per_weight": 4.0, "kv_bytes": 4.0}
    config_path = model_dir / "config.json" if model_dir else None
    if config_path and config_path.exists():
        config = json.loads(config_path.read_text())
        heads = int(config.get("num_attention_heads", 1))
        shape.update(
            layers=int(config.get("num_hidden_layers", 1)),
            hidden=int(config.get("hidden_size", 64)),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads", heads)),
        )
    return shape


def scenario_names() -> list[str]:
    """The scenarios shipped in :mod:`specrouter.scenarios`."""
    from specrouter.scenarios import scenario_names as shipped

    return list(shipped())


def simulate_scenario(
    scenario: str,
    policy: Any,
    seed: int,
    out_dir: Path | None,
    limit: int | None = None,
    params: dict[str, Any] | None = None,
) -> RunOutput:
    """Run ``policy`` (a name or a fresh policy object) through a shipped scenario (first
    ``limit`` requests) with records; ``out_dir=None`` keeps them in memory only."""
    from specrouter.scenarios import load_scenario_config
    from specrouter.scenarios.runner import build_world

    config = load_scenario_config(scenario)
    world, requests = build_world(config, limit, seed)
    name = policy if isinstance(policy, str) else getattr(policy, "name", type(policy).__name__)
    settings = {"scenario": scenario, "policy": name, "params": params or {}, "seed": seed, "limit": limit}
    return simulate_requests(
        world.cluster, world.scenario, requests, policy, out_dir, settings, params, hooks=False
    )
