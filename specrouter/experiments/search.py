"""Parameter search over a policy's knobs with Optuna, on a local pool or on Ray.

A *trial* is one setting of the knobs.  It is scored by running the policy on every
scenario of the search, once per seed, and taking the **geometric mean** of the metric
(mean time per output token by default) over those runs:

    score(theta) = exp( (1 / (S * R)) * sum_{s, r} log metric(theta, scenario_s, seed_r) )

so a 10% gain on a fast scenario counts as much as a 10% gain on a slow one.

Determinism (same seeds -> same results on both pools, and after a resume):

* trials are asked in *batches* of ``batch_size``; every trial of a batch is asked before
  any is evaluated, and all are told before the next batch is asked;
* before asking trial ``n`` the study's sampler is replaced by a TPE sampler seeded with
  ``seed * 1_000_003 + n``, so trial ``n``'s knobs depend only on the seed, ``n`` and the
  trials already in the study -- not on which process asked earlier trials;
* evaluation is seeded and pure, and pools return results in task order.

Resume: the study lives in an Optuna storage file (``--storage``: a journal file, or
SQLite for names ending ``.db``/``.sqlite``).  On restart, finished trials are kept, trials
left RUNNING by the interruption are evaluated again with the knobs they were given, and
the search continues up to ``trials`` in total.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from specrouter.experiments.pools import TrialPool


@dataclass(frozen=True)
class Knob:
    """One searchable parameter of a policy: a float or int range, optionally log-scaled."""

    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"knob {self.name}: low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"knob {self.name}: a log-scaled range needs low > 0, got {self.low}")

    def distribution(self) -> Any:
        from optuna.distributions import FloatDistribution, IntDistribution

        if self.integer:
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(self.low, self.high, log=self.log)


# Knobs searched by default, per policy (override or extend with --knob NAME=LOW:HIGH).
DEFAULT_KNOBS: dict[str, tuple[Knob, ...]] = {
    "specrouter": (
        Knob("time_rate", 0.005, 0.3, log=True),  # EMA rate of the pass-time estimates
        Knob("pair_rate", 0.002, 0.2, log=True),  # EMA rate of pair similarity / acceptance
        Knob("optimism", 0.0, 2.0),  # exploration bonus c / sqrt(1 + n_eff)
        Knob("hysteresis", 0.0, 0.2),  # keep the chain while within this fraction of the best
        Knob("surprise", 0.05, 0.5),  # re-plan when realised T_eff leaves the prediction by this
        Knob("max_lookahead", 2, 8, integer=True),  # lookahead bound per level
    ),
    "bandit": (Knob("gamma", 0.95, 0.9999), Knob("exploration", 0.05, 2.0, log=True)),
    "dynamic-lookahead": (Knob("initial", 1, 8, integer=True), Knob("maximum", 4, 32, integer=True)),
}


def default_knobs(spec: str) -> tuple[Knob, ...]:
    """The knobs searched when the user gives no ``--knob`` (empty when none are declared)."""
    from policies.registry import policy_head

    return DEFAULT_KNOBS.get(policy_head(spec), ())


def parse_knob(spec: str) -> Knob:
    """``name=low:high[:log][:int]``, e.g. ``ema_rate=0.01:0.5:log`` or ``max_lookahead=2:8:int``."""
    name, sep, rest = spec.partition("=")
    parts = rest.split(":")
    if not sep or not name or len(parts) < 2:
        raise ValueError(f"--knob {spec!r}: expected name=low:high[:log][:int], e.g. ema_rate=0.01:0.5:log")
    flags = set(parts[2:])
    unknown = flags - {"log", "int"}
    if unknown:
        raise ValueError(f"--knob {spec!r}: unknown flag(s) {sorted(unknown)}; allowed: log, int")
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"--knob {spec!r}: low and high must be numbers") from None
    return Knob(name.strip(), low, high, log="log" in flags, integer="int" in flags)


class TrialTask(NamedTuple):
    """Everything a worker needs to score one trial (picklable, no study handle)."""

    number: int
    policy: str
    params: dict[str, float]
    scenarios: tuple[str, ...]
    seeds: tuple[int, ...]
    evaluator: str  # "module:function" with signature (policy, params, scenario, seed, options) -> float
    options: dict[str, Any]


class TrialOutcome(NamedTuple):
    number: int
    value: float | None  # None when the trial failed
    runs: dict[str, float]  # "scenario/seed" -> metric
    error: str
    seconds: float


def resolve(dotted: str) -> Callable[..., Any]:
    """Import ``"package.module:function"``."""
    module_name, sep, attribute = dotted.partition(":")
    if not sep:
        raise ValueError(f"evaluator {dotted!r} must look like 'package.module:function'")
    function: Callable[..., Any] = getattr(importlib.import_module(module_name), attribute)
    return function


def evaluate_trial(task: TrialTask) -> TrialOutcome:
    """Score one trial: geometric mean of the metric over scenarios x seeds (module doc)."""
    started = time.perf_counter()
    runs: dict[str, float] = {}
    try:
        evaluator = resolve(task.evaluator)
        for scenario in task.scenarios:
            for seed in task.seeds:
                value = float(evaluator(task.policy, dict(task.params), scenario, seed, dict(task.options)))
                if not math.isfinite(value) or value <= 0:
                    raise ValueError(f"{scenario} seed {seed}: metric {value} is not a positive number")
                runs[f"{scenario}/{seed}"] = value
    except Exception as error:  # a bad trial must not kill the search; it is recorded as failed
        return TrialOutcome(task.number, None, runs, f"{type(error).__name__}: {error}", 0.0)
    score = math.exp(sum(math.log(v) for v in runs.values()) / len(runs))
    return TrialOutcome(task.number, score, runs, "", time.perf_counter() - started)


@dataclass
class SearchConfig:
    policy: str
    knobs: tuple[Knob, ...]
    scenarios: tuple[str, ...]
    trials: int
    seed: int = 0
    seeds: tuple[int, ...] = (0,)
    batch_size: int = 2
    evaluator: str = "specrouter.experiments.objectives:scenario_metric"
    options: dict[str, Any] = field(default_factory=dict)
    study_name: str = "specrouter-search"


@dataclass
class SearchResult:
    best_params: dict[str, float]
    best_value: float
    trials: list[dict[str, Any]]  # number, state, value, params, runs, error
    resumed_trials: int

    def to_json(self) -> dict[str, Any]:
        return {
            "best_params": self.best_params,
            "best_value": self.best_value,
            "resumed_trials": self.resumed_trials,
            "trials": self.trials,
        }


def storage_for(path: str | Path | None) -> Any:
    """An Optuna storage: in memory (``None``), SQLite (``*.db``/``*.sqlite``) or a journal file."""
    if path is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".db", ".sqlite", ".sqlite3"):
        return f"sqlite:///{path.resolve()}"
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))


def trial_sampler_seed(seed: int, number: int) -> int:
    return (seed * 1_000_003 + number) % (2**32)


def run_search(
    config: SearchConfig,
    pool: TrialPool,
    storage: str | Path | None = None,
    progress: Callable[[int, int, float | None], None] | None = None,
) -> SearchResult:
    """Run (or resume) the search; ``progress(done, total, best)`` after every batch."""
    import optuna
    from optuna.trial import TrialState

    if not config.knobs:
        raise ValueError(f"policy {config.policy!r} has no knobs to search; pass --knob name=low:high")
    if config.batch_size < 1 or config.trials < 1:
        raise ValueError("trials and batch size must be >= 1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=storage_for(storage), study_name=config.study_name, direction="minimize", load_if_exists=True
    )
    _check_same_search(study, config)
    distributions = {knob.name: knob.distribution() for knob in config.knobs}
    pending = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    resumed = len(pending)
    finished = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())

    def task_for(number: int, params: Mapping[str, Any]) -> TrialTask:
        return TrialTask(
            number,
            config.policy,
            {k: params[k] for k in distributions},
            config.scenarios,
            config.seeds,
            config.evaluator,
            config.options,
        )

    # Trial handles by number; a resumed RUNNING trial is re-opened by its storage id.
    handles: dict[int, Any] = {t.number: optuna.trial.Trial(study, t._trial_id) for t in pending}
    tasks = [task_for(t.number, t.params) for t in pending]
    while finished + len(tasks) < config.trials or tasks:
        while finished + len(tasks) < config.trials and len(tasks) < config.batch_size:
            number = len(study.get_trials(deepcopy=False))
            study.sampler = optuna.samplers.TPESampler(seed=trial_sampler_seed(config.seed, number))
            trial = study.ask(distributions)
            handles[trial.number] = trial
            tasks.append(task_for(trial.number, trial.params))
        for outcome in pool.map(evaluate_trial, tasks):
            trial = handles.pop(outcome.number)
            trial.set_user_attr("runs", outcome.runs)
            if outcome.value is None:
                trial.set_user_attr("error", outcome.error)
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, outcome.value)
        finished += len(tasks)
        tasks = []
        if progress is not None:
            progress(finished, config.trials, _best_value(study))
    return _result(study, resumed)


def _check_same_search(study: Any, config: SearchConfig) -> None:
    """Refuse to resume a storage file written by a different search."""
    signature = {
        "policy": config.policy,
        "knobs": [[k.name, k.low, k.high, k.log, k.integer] for k in config.knobs],
        "scenarios": list(config.scenarios),
        "seeds": list(config.seeds),
        "seed": config.seed,
        "batch_size": config.batch_size,
        "evaluator": config.evaluator,
        "options": {k: config.options[k] for k in sorted(config.options)},
    }
    stored = study.user_attrs.get("search")
    if stored is None:
        study.set_user_attr("search", signature)
    elif stored != signature:
        changed = sorted(k for k in signature if stored.get(k) != signature[k])
        raise ValueError(
            f"the storage already holds study {config.study_name!r} from a different search "
            f"(differs in: {', '.join(changed)}); use another --storage file or --study-name"
        )


def _best_value(study: Any) -> float | None:
    values = [t.value for t in study.get_trials(deepcopy=False) if t.value is not None]
    return min(values) if values else None


def _result(study: Any, resumed: int) -> SearchResult:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "value": trial.value,
                "params": dict(trial.params),
                "runs": trial.user_attrs.get("runs", {}),
                "error": trial.user_attrs.get("error", ""),
            }
        )
    complete = [r for r in rows if r["value"] is not None]
    if not complete:
        errors = sorted({r["error"] for r in rows if r["error"]})
        raise RuntimeError("every trial failed: " + ("; ".join(errors[:3]) or "no trial ran"))
    best = min(complete, key=lambda r: (r["value"], r["number"]))
    return SearchResult(best["params"], best["value"], rows, resumed)


def format_trials(result: SearchResult, knobs: Sequence[Knob], top: int = 10) -> str:
    """A terminal table of the best ``top`` trials."""
    complete = sorted((r for r in result.trials if r["value"] is not None), key=lambda r: r["value"])
    header = f"{'trial':>5}  {'score':>10}  " + "  ".join(f"{k.name:>14}" for k in knobs)
    lines = [header]
    for row in complete[:top]:
        cells = "  ".join(f"{row['params'][k.name]:>14.4g}" for k in knobs)
        lines.append(f"{row['number']:>5}  {row['value']:>10.5g}  {cells}")
    failed = sum(1 for r in result.trials if r["state"] == "FAIL")
    if failed:
        lines.append(f"({failed} failed trial(s); first error: {_first_error(result)})")
    return "\n".join(lines)


def _first_error(result: SearchResult) -> str:
    return next((r["error"] for r in result.trials if r["error"]), "")
