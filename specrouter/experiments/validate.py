"""profile -> simulate -> run for real -> compare: the logic of ``specrouter validate``.

1. **Profile** the ladder (``OUT/profile.json``), or load ``--profile``; a profile whose
   models are not the ladder's is refused.  A profile already in ``OUT`` for the same ladder
   is reused (resume).
2. **Workload**: ``requests`` requests, Poisson arrivals at ``rate`` per second (``0``: all
   at once), fixed prompt and output lengths, domains alternating over the prompt corpus's
   domains; clipped to the ladder's context window *before* either world sees it, so both
   replay exactly the same requests.
3. **Simulate** it with the simulator calibrated from the profile: one device shared by
   every model (passes run one at a time, as on the real machine), the profile's pass-time
   tables, empirical acceptance from the profile's pairs of the decoding mode used
   (``greedy`` at temperature 0) -> ``OUT/sim/``.
4. **Run for real** with the same policy and seed on :class:`backend.engine.Engine` ->
   ``OUT/real/``.
5. **Compare**: the fidelity table (:mod:`specrouter.experiments.fidelity`) ->
   ``OUT/fidelity.{json,txt}`` and the figure ``OUT/predicted_vs_measured.{png,svg}``.

Each step whose output is already in ``OUT`` for the same settings is kept, so a rerun after
an interruption does only what is missing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from specrouter.experiments.fidelity import fidelity_rows, write_table
from specrouter.experiments.profiled import cluster_for_profile
from specrouter.experiments.runs import RealWorld, RecordSink, RunOutput, SimWorld, run_real, run_simulated
from traces.jsonfile import read_json_document
from traces.request import Request

Progress = Callable[[str], None]

# per domain: one prompt's greedy match rate ranges 0.53-0.97 on the embedded ladder, so 6 or 16
# prompts left 0.05-0.1 of alpha to chance; 48 leave ~0.02 (pair statistics run ~6 prompts/s)
ACCEPTANCE_PROMPTS = 48
ACCEPTANCE_POSITIONS = 8


class ValidateError(ValueError):
    """A validate input that cannot work; the message says what to do."""


@dataclass(frozen=True)
class ValidateConfig:
    ladder: str
    policy: str
    out: str
    profile: str | None = None
    quick_profile: bool = True
    requests: int = 8
    prompt_tokens: int = 48
    output_tokens: int = 32
    rate: float = 0.0
    max_batch: int = 4
    seed: int = 0
    device: str = "cpu"
    lean: bool = False
    ngram: str | None = None
    """``MIN:MAX``: a model-free n-gram lookup drafter as ladder member 0 (None: none)."""

    def settings(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        fields.pop("out")
        fields["ladder"] = str(Path(self.ladder).resolve())
        return fields


@dataclass
class Validation:
    rows: list[dict[str, Any]]
    sim: RunOutput
    real: RunOutput
    profile_path: Path
    figures: list[Path]


def workload(
    config: ValidateConfig, domains: tuple[str | None, ...], window: int | None = None
) -> list[Request]:
    """The validate workload (module doc, step 2)."""
    rng = np.random.default_rng([config.seed, 17])
    gaps = (
        rng.exponential(1.0 / config.rate, config.requests) if config.rate > 0 else np.zeros(config.requests)
    )
    arrivals = np.cumsum(gaps) - gaps[0]
    prompt, output = config.prompt_tokens, config.output_tokens
    if window is not None and prompt + output > window:
        output = min(output, window // 2)
        prompt = window - output
    return [
        Request(i, float(arrivals[i]), prompt, output, domains[i % len(domains)])
        for i in range(config.requests)
    ]


def check_profile_matches(profile_path: Path, ladder_names: tuple[str, ...]) -> None:
    from traces.world_profile import load_world_profile

    names = load_world_profile(profile_path).names
    if tuple(names) != tuple(ladder_names):
        raise ValidateError(
            f"profile {profile_path} was measured on models ({', '.join(names)}) but the ladder has "
            f"({', '.join(ladder_names)}): profile this ladder with "
            "`specrouter profile --ladder ... --out ...` or drop --profile to let validate profile it"
        )


def mode_profile(profile_path: Path, mode: str, out_path: Path) -> Path:
    """A copy of the profile keeping only ``mode``'s acceptance entries (what the sim replays)."""
    from traces.world_profile import load_world_profile, save_world_profile

    profile = load_world_profile(profile_path)
    kept = tuple(pair for pair in profile.acceptance if pair.mode == mode)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_world_profile(dataclasses.replace(profile, acceptance=kept), out_path)
    return out_path


def profile_settings(config: ValidateConfig, base: Any) -> Any:
    """The profiling grid, widened to the workload's operating point.

    Pass times are measured at the context a decode step sees mid-request
    (``prompt + output / 2``), for every batch size up to ``max_batch`` (powers of two and
    ``max_batch`` itself) and for pass widths up to the prompt length, so prefill and catch-up
    passes are interpolated, not extrapolated from a 4-token grid.  Acceptance is measured at
    the workload's operating point too: prompts of ``prompt_tokens`` (see :func:`ensure_profile`),
    target continuations of ``output_tokens`` (the positions a request decodes), at least
    ``ACCEPTANCE_PROMPTS`` prompts per domain and ``ACCEPTANCE_POSITIONS`` conditional draft
    positions (a policy's lookahead reaches 8).  ``base=None`` returns the widened axes only
    (what the resume check compares).
    """
    batches = sorted({1, config.max_batch, *(2**k for k in range(8) if 2**k <= config.max_batch)})
    widths = sorted({1, 2, 4, 8, 16, config.prompt_tokens})
    context = config.prompt_tokens + config.output_tokens // 2
    if base is None:
        return (tuple(batches), tuple(widths), context, config.prompt_tokens, config.output_tokens, "min")
    contexts = (context,) if config.quick_profile else tuple(sorted({context, *base.contexts}))
    return dataclasses.replace(
        base,
        seed=config.seed,
        batch_sizes=tuple(batches),
        tokens=tuple(widths),
        contexts=contexts,
        continuation=max(base.continuation, config.output_tokens),
        prompts_per_domain=max(base.prompts_per_domain, ACCEPTANCE_PROMPTS),
        draft_positions=max(base.draft_positions, ACCEPTANCE_POSITIONS),
        repeats=max(base.repeats, 5),
        statistic="min",  # the isolated cost; the in-run calibration scales it to what runs pay
    )


def ensure_profile(config: ValidateConfig, ladder: Any, progress: Progress | None) -> Path:
    """Load ``--profile``, reuse ``OUT/profile.json`` for the same ladder, or profile now."""
    out = Path(config.out)
    if config.profile is not None:
        path = Path(config.profile)
        if not path.exists():
            raise ValidateError(
                f"profile {path} does not exist: create it with `specrouter profile --ladder {config.ladder} "
                f"--out {path}` or drop --profile to let validate profile the ladder"
            )
        check_profile_matches(path, ladder.info.names)
        return path
    path = out / "profile.json"
    stamp = out / "profile.settings.json"
    wanted = {
        "ladder": config.settings()["ladder"],
        "quick": config.quick_profile,
        "seed": config.seed,
        "lean": config.lean,
        "grid": repr(profile_settings(config, None)),
        "calibrated_in_run": True,
    }
    if path.exists() and stamp.exists() and read_json_document(stamp, ValidateError) == wanted:
        return path
    if progress:
        progress("profiling the ladder" + (" (quick)" if config.quick_profile else ""))
    from backend.profiler import ProfileSettings, profile_ladder
    from backend.replay import PROFILE_PROMPT_IDS, prompt_set, prompt_source_for
    from traces.world_profile import save_world_profile

    settings = profile_settings(
        config, ProfileSettings.quick() if config.quick_profile else ProfileSettings()
    )
    source = prompt_source_for(ladder, config.seed)
    length = config.prompt_tokens
    prompts = prompt_set(source, settings.prompts_per_domain, length, first_id=PROFILE_PROMPT_IDS)
    meta = {"ladder": wanted["ladder"], "prompt_source": source.name}
    profile = profile_ladder(ladder, prompts, settings, meta, lean=config.lean, calibrate_in_run=True)
    out.mkdir(parents=True, exist_ok=True)
    save_world_profile(profile, path)
    stamp.write_text(json.dumps(wanted) + "\n")
    return path


def lookup_drafter(ngram: str | None) -> Any:
    """``MIN:MAX`` (or ``N``) as a :class:`backend.ngram.NgramDrafter`; None for None."""
    if ngram is None:
        return None
    from backend.ngram import NgramDrafter

    try:
        return NgramDrafter.parse(ngram)
    except ValueError as error:
        raise ValidateError(f"--ngram {ngram}: {error}") from None


def simulated_world(config: ValidateConfig, profile_path: Path) -> SimWorld:
    """The simulator calibrated from the profile (module doc, step 3): the profile's greedy
    entries (``OUT/sim_profile.json``), one device, the engine's ``max_batch`` slots."""
    from sim.scenario import Scenario

    sim_profile = mode_profile(profile_path, "greedy", Path(config.out) / "sim_profile.json")
    cluster = cluster_for_profile(sim_profile, config.max_batch, config.ladder, max_running=config.max_batch)
    context = config.prompt_tokens + config.output_tokens // 2  # what the oracle's pass times assume
    scenario = Scenario(seed=config.seed, acceptance_mode="empirical", correlation=0.0, truth_context=context)
    return SimWorld(cluster, scenario)


def real_world(config: ValidateConfig, ladder: Any) -> RealWorld:
    """The real engine the simulated one predicts (module doc, step 4)."""
    from backend.engine import EngineConfig

    engine = EngineConfig(max_batch=config.max_batch, replay="fast")
    return RealWorld(ladder, engine, seed=config.seed, lean=config.lean)


def validate(config: ValidateConfig, progress: Progress | None = None, plot: bool = True) -> Validation:
    """Run the five steps of the module docstring."""
    from backend.ladder import ladder_paths, load_ladder
    from backend.replay import context_window, prompt_source_for, source_domains
    from policies.registry import check_fits, check_spec
    from specrouter import plots

    check_spec(config.policy, simulated=False)  # both worlds run it: the oracle cannot
    lookup = lookup_drafter(config.ngram)
    members = len(ladder_paths(config.ladder)) + (lookup is not None)
    check_fits(config.policy, members)  # from ladder.json, before any weights
    out = Path(config.out)
    ladder = load_ladder(config.ladder, device=config.device).with_lookup(lookup)
    check_fits(config.policy, ladder.size, ladder.info.names)  # a warm-start prior: profiled on this ladder?
    profile_path = ensure_profile(config, ladder, progress)
    requests = workload(
        config, source_domains(prompt_source_for(ladder, config.seed)), context_window(ladder.models)
    )
    settings = config.settings()
    if progress:
        progress("simulating the workload from the profile")
    simulated = simulated_world(config, profile_path)
    sim = run_simulated(simulated, config.policy, requests, RecordSink(out / "sim", settings))
    if progress:
        progress("running the workload on the real backend")
    real = run_real(real_world(config, ladder), config.policy, requests, RecordSink(out / "real", settings))
    rows = fidelity_rows(sim.requests, real.requests, sim.rounds, real.rounds)
    write_table(rows, out)
    figures = list(plots.predicted_vs_measured(rows, out / "predicted_vs_measured")) if plot else []
    return Validation(rows, sim, real, profile_path, figures)
