"""The two run functions: one policy, one workload, in the simulator or on real models.

Every command, the demo, compare, validate, search, the notebooks and the benchmarks run a
world through exactly one of these, with the same arguments and the same record sink::

    run_simulated(world, policy, requests, RecordSink(out_dir, settings, metadata))
    run_real(world, policy, requests, RecordSink(out_dir, settings, metadata))

* ``world`` -- what to run on: a :class:`SimWorld` (cluster and perturbations; a fresh
  :class:`sim.world.World` is built from it for every run, so no random state carries over
  from one run to the next) or a :class:`RealWorld` (a loaded ladder and how the engine
  replays).  Both drive the shared serving loop (``docs/serving.md``), through
  :class:`sim.engine.Simulation` and :class:`backend.engine.Engine`.
* ``policy`` -- a registry name (``"specrouter:hysteresis=0.1"``, checked by
  :mod:`policies.registry`), a policy object (used as is: pass a fresh one), or a factory
  ``truth -> policy`` (the simulator passes its world's truth, the backend ``None``).
* ``requests`` -- the workload as both worlds see it: workload transforms and clipping are the
  caller's (the engine still clips to the ladder's context window, and says so).
* ``sink`` -- a :class:`RecordSink`: with an ``out_dir``, :class:`traces.records.RecordWriter`
  writes ``requests.parquet``, ``rounds.parquet`` and ``run.json`` (``world``, ``settings``,
  the policy and its resolved knobs, ``metadata``, the environment); without one the records
  stay in memory.  When ``settings`` is given, a directory whose ``run.json`` says
  ``complete`` with the same settings is read back instead of rerun (resume).

Both return a :class:`RunOutput`.  Design notes: ``docs/design.md §7``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from policies.contract import Policy, WorldTruth
from specrouter.plots import Marker
from traces.jsonfile import read_json_document
from traces.records import RecordWriter, RequestRecord, RoundRecord, read_records
from traces.request import Request
from traces.summary import summarize

if TYPE_CHECKING:
    from backend.engine import EngineConfig
    from backend.replay import ClipReport, PromptSource
    from backend.sampling import SamplingConfig
    from sim.config import ClusterConfig
    from sim.scenario import Scenario

PolicyChoice = str | Policy | Callable[[WorldTruth | None], Policy]


class RunOutput(NamedTuple):
    """One run's records and what the world reported about it (the same fields in both worlds)."""

    requests: list[RequestRecord]
    rounds: list[RoundRecord]  # empty when rounds were not recorded
    summary: dict[str, float]  # traces.summary.summarize of the request records
    markers: list[Marker]  # the world's events, for plots (none on real models)
    out_dir: Path | None
    reused: bool = False  # read back from a finished run directory
    rounds_total: int = 0
    tokens_total: int = 0
    world_seconds: float = 0.0  # simulated seconds / the engine's run clock, idle gaps skipped
    wall_seconds: float = 0.0  # how long this call took
    clipped: ClipReport | None = None  # what the engine clipped to the context window (real only)
    policy: str = ""  # the policy's name


@dataclass(frozen=True)
class RecordSink:
    """Where a run's records go and what its ``run.json`` says: the same for both worlds."""

    out_dir: Path | None = None  # None: records in memory only
    settings: Mapping[str, Any] | None = None  # what makes two runs the same (resume); None: never reuse
    metadata: Mapping[str, Any] | None = None  # more provenance for run.json
    record_rounds: bool = True
    write_csv: bool = False
    progress: bool = False  # a progress bar on stderr


@dataclass(frozen=True)
class SimWorld:
    """A simulated cluster and its perturbations (``run_simulated``'s world)."""

    cluster: ClusterConfig
    scenario: Scenario | None = None  # default: sim.scenario.Scenario()


@dataclass(frozen=True)
class RealWorld:
    """A loaded ladder and how the backend engine replays on it (``run_real``'s world)."""

    ladder: Any  # backend.ladder.Ladder
    engine: EngineConfig | None = None  # default: batch 8, fast replay (idle gaps skipped)
    sampling: SamplingConfig | None = None  # default: greedy
    seed: int = 0
    lean: bool = False  # the backend's lean forward path
    prompts: PromptSource | None = None  # default: backend.replay.prompt_source_for(ladder, seed)


def run_simulated(
    world: SimWorld,
    policy: PolicyChoice,
    requests: Iterable[Request],
    sink: RecordSink = RecordSink(),
) -> RunOutput:
    """Run ``requests`` through the simulated ``world`` (module docstring)."""
    from sim.engine import Simulation
    from sim.world import World

    simulated = World(world.cluster, world.scenario)
    markers = scenario_markers(simulated.scenario)
    reused = finished_run(sink, markers)
    if reused is not None:
        return reused
    built = build_policy(policy, simulated.truth)
    workload = list(requests)
    started = time.perf_counter()
    with _progress_bar(len(workload), built.name, sink.progress) as bar:
        if sink.out_dir is None:
            simulation = Simulation(simulated, built, record_rounds=sink.record_rounds, progress=bar)
            result = simulation.run(workload)
            records, rounds = result.requests, result.rounds
        else:
            with _writer(sink, sink.out_dir, "sim", built, policy) as writer:
                result = Simulation(
                    simulated,
                    built,
                    record_rounds=sink.record_rounds,
                    request_sink=writer.add_request,
                    round_sink=writer.add_round,
                    progress=bar,
                ).run(workload)
            records, rounds = _read_back(sink.out_dir, sink)
    return RunOutput(
        records, rounds, summarize(records), markers, sink.out_dir, rounds_total=result.rounds_total,
        tokens_total=result.tokens_total, world_seconds=result.sim_seconds,
        wall_seconds=time.perf_counter() - started, policy=built.name,
    )  # fmt: skip


def run_real(
    world: RealWorld,
    policy: PolicyChoice,
    requests: Iterable[Request],
    sink: RecordSink = RecordSink(),
) -> RunOutput:
    """Replay ``requests`` on the real ladder of ``world`` (module docstring).

    The engine writes through the same :class:`RecordWriter`; without ``sink.out_dir`` it writes
    into a temporary directory that is read back and removed.
    """
    reused = finished_run(sink)
    if reused is not None:
        return reused
    if sink.out_dir is None:
        with tempfile.TemporaryDirectory(prefix="specrouter-real-") as scratch:
            scratch_sink = dataclasses.replace(sink, out_dir=Path(scratch), settings=None)
            return run_real(world, policy, requests, scratch_sink)._replace(out_dir=None)
    out_dir = sink.out_dir
    from backend.engine import Engine, EngineConfig, replay_executor
    from backend.replay import prompt_source_for

    built = build_policy(policy, None)
    prompts = world.prompts or prompt_source_for(world.ladder, world.seed)
    config = world.engine or EngineConfig(replay="fast")
    # trace budgets: the executor never stops at end-of-sequence, as in the simulator
    executor = replay_executor(world.ladder, world.sampling, world.seed, lean=world.lean)
    shown = dataclasses.replace(config, progress=sink.progress)
    engine = Engine(world.ladder, executor, built, prompts, shown)
    started = time.perf_counter()
    with _writer(sink, out_dir, "real", built, policy) as writer:
        writer.run_metadata.update(real_world_metadata(world, prompts, config))
        result = engine.run(requests, writer)
        clip = result.clipped
        assert clip is not None
        writer.run_metadata["clipped"] = {
            "window": clip.window, "prompts": clip.prompts_clipped, "outputs": clip.outputs_clipped,
            "examples": clip.examples,
        }  # fmt: skip
        writer.run_metadata["unknown_domains"] = getattr(prompts, "unknown_domains", {})
    records, rounds = _read_back(out_dir, sink)
    return RunOutput(
        records, rounds, summarize(records), [], out_dir, rounds_total=result.rounds,
        tokens_total=result.tokens, world_seconds=result.wall_seconds,
        wall_seconds=time.perf_counter() - started, clipped=clip, policy=built.name,
    )  # fmt: skip


def shipped_scenario(
    name: str, limit: int | None = None, seed: int | None = None
) -> tuple[SimWorld, list[Request]]:
    """A shipped experiment scenario (``specrouter/scenarios/<name>.json``) as a world and its
    workload (the first ``limit`` requests, workload transforms applied), ready for either run function."""
    from specrouter.scenarios import load_scenario_config
    from specrouter.scenarios.runner import build_world

    world, requests = build_world(load_scenario_config(name), limit, seed)
    return SimWorld(world.cluster, world.scenario), requests


def build_policy(policy: PolicyChoice, truth: WorldTruth | None) -> Policy:
    """A policy object from a registry name, an object or a factory (``truth``: the oracle's input)."""
    from policies.registry import make_policy

    if isinstance(policy, str):
        return make_policy(policy, world=truth)
    if isinstance(policy, Policy):
        return policy
    return policy(truth)


def real_world_metadata(world: RealWorld, prompts: Any, config: Any) -> dict[str, Any]:
    """What ``run.json`` records about a real world: ladder, engine, sampling, device."""
    ladder = world.ladder
    info = ladder.info
    sampling = world.sampling
    lookup = ladder.lookup
    return {
        "models": list(info.names),
        "ladder_parameters": {"names": list(info.names), "params": list(info.params or ())},
        "lookup": None if lookup is None else {"member": 0, "min_n": lookup.min_n, "max_n": lookup.max_n},
        "seed": world.seed,
        "sampling": {
            "temperature": sampling.temperature if sampling else 0.0,
            "top_k": sampling.top_k if sampling else 0,
            "top_p": sampling.top_p if sampling else 1.0,
        },
        "engine": {"max_batch": config.max_batch, "replay": config.replay, "time_scale": config.time_scale},
        "prompt_source": prompts.name,
        "device": str(ladder.device),
        "forward_path": "lean" if world.lean else "huggingface",
        "dtype": str(ladder.dtype),
    }


def finished_run(sink: RecordSink, markers: list[Marker] | None = None) -> RunOutput | None:
    """The records of a completed run in ``sink.out_dir`` with the same settings, or None
    (without settings: never)."""
    run_dir, settings = sink.out_dir, sink.settings
    if run_dir is None or settings is None or not (run_dir / "run.json").exists():
        return None
    try:
        meta = read_json_document(run_dir / "run.json", ValueError)
    except ValueError:  # a run.json cut short by a crash: run again
        return None
    if meta.get("status") != "complete" or meta.get("settings") != _jsonable(settings):
        return None
    records = read_records(run_dir)
    summary = summarize(records.requests)
    return RunOutput(
        records.requests, records.rounds, summary, list(markers or []), run_dir, reused=True,
        policy=str(meta.get("policy", "")),
    )  # fmt: skip


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


def _writer(sink: RecordSink, out_dir: Path, world: str, built: Policy, policy: PolicyChoice) -> RecordWriter:
    """The record sink both worlds write into, with the run's provenance in ``run.json``."""
    from policies.registry import policy_knobs

    knobs = policy_knobs(policy) if isinstance(policy, str) else {}
    provenance = {"world": world, "policy": built.name, "policy_knobs": knobs}
    if sink.settings is not None:
        provenance["settings"] = _jsonable(sink.settings)
    provenance.update(sink.metadata or {})
    return RecordWriter(out_dir, provenance, write_csv=sink.write_csv, record_rounds=sink.record_rounds)


def _read_back(out_dir: Path, sink: RecordSink) -> tuple[list[RequestRecord], list[RoundRecord]]:
    records = read_records(out_dir, rounds=sink.record_rounds)
    return records.requests, records.rounds


@contextmanager
def _progress_bar(total: int, label: str, shown: bool) -> Iterator[Callable[[int], Any] | None]:
    """A tqdm bar on stderr when ``shown`` (yields its ``update``), else nothing (yields None)."""
    if not shown:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=label, unit="req", mininterval=1.0, file=sys.stderr) as bar:
        yield bar.update


def _jsonable(value: Any) -> Any:
    """``value`` as ``run.json`` stores it (tuples become lists, paths text), for comparison."""
    return json.loads(json.dumps(value, default=str))
