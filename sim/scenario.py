"""Scenario settings: noise, acceptance, slowdowns of one simulation, and its workload transforms.

A scenario is a plain dict / JSON object (all keys optional)::

    {
      "seed": 0,
      "noise_sigma": 0.05,                   # lognormal pass-time noise (0 = deterministic)
      "correlation": 0.5,                    # rho of the shared latent difficulty (sim.acceptance)
      "alpha": {"0>3": 0.6, "2>3": 0.85},    # per-pair acceptance (else the ladder default)
      "domains": {"code": 0.5, "chat": 0.0}, # logit shift of acceptance per request domain
      "drift": {"amplitude": 0.3, "period_s": 600},          # sinusoidal logit drift per pair
      "acceptance_overrides": [              # e.g. a useless middle model from t = 300 s
        {"lower": 1, "upper": 3, "alpha": 0.05, "domain": null, "start": 300, "end": 1e9}],
      "slowdowns": [{"gpu": "big", "start": 100, "end": 200, "factor": 3.0}],
      "random_slowdowns": {"rate_per_hour": 2, "factor": 2.5, "duration_s": 60, "horizon_s": 3600},
      "domain_shifts": [{"at": 600, "mix": {"code": 0.8, "chat": 0.2}}],
      "load_ramps": [{"at": 900, "factor": 2.0}],           # arrivals after t come 2x faster
      "acceptance_mode": "parametric",       # or "empirical" (needs the cluster's world profile)
      "record_rounds": true,
      "truth_context": 1024                  # context the oracle's pass_time assumes per sequence
    }

``load_ramps`` and ``domain_shifts`` change the workload, not the world: they are parsed here
with the rest of a scenario, and applied by :class:`traces.transforms.WorkloadTransforms`
(``scenario.workload.apply(requests)``), the same in both worlds.  Errors name the key path
(``scenario.slowdowns[0].factor: ...``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.acceptance import AlphaOverride
from sim.config import ConfigError
from sim.latency import Slowdown
from traces.jsonfile import read_json_document
from traces.transforms import DomainShift, LoadRamp, WorkloadTransforms


@dataclass(frozen=True)
class Scenario:
    seed: int = 0
    noise_sigma: float = 0.0
    correlation: float = 0.5
    alpha: dict[tuple[int, int], float] = field(default_factory=dict)
    domains: dict[str, float] = field(default_factory=dict)
    drift_amplitude: float = 0.0
    drift_period: float = 600.0
    acceptance_overrides: tuple[AlphaOverride, ...] = ()
    slowdowns: tuple[Slowdown, ...] = ()
    random_slowdowns: dict[str, float] = field(default_factory=dict)
    domain_shifts: tuple[DomainShift, ...] = ()
    load_ramps: tuple[LoadRamp, ...] = ()
    acceptance_mode: str = "parametric"
    record_rounds: bool = True
    truth_context: int = 1024

    @property
    def workload(self) -> WorkloadTransforms:
        """What this scenario does to the requests (applied the same way in both worlds)."""
        return WorkloadTransforms(self.load_ramps, self.domain_shifts, self.seed)


KNOWN_KEYS = {
    "seed", "noise_sigma", "correlation", "alpha", "domains", "drift", "acceptance_overrides", "slowdowns",
    "random_slowdowns", "domain_shifts", "load_ramps", "acceptance_mode", "record_rounds", "truth_context",
}  # fmt: skip


def _num(
    raw: dict[str, Any], key: str, where: str, low: float = -math.inf, default: float | None = None
) -> float:
    if key not in raw:
        if default is None:
            raise ConfigError(f"{where}.{key}: missing required key")
        return default
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < low:
        raise ConfigError(f"{where}.{key}: expected a number >= {low}, got {value!r}")
    return float(value)


def _objects(raw: dict[str, Any], key: str, where: str, allowed: set[str]) -> list[dict[str, Any]]:
    items = raw.get(key, [])
    if not isinstance(items, list):
        raise ConfigError(f"{where}.{key}: expected a list of objects")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"{where}.{key}[{i}]: expected an object, got {item!r}")
        for name in item:
            if name not in allowed:
                raise ConfigError(
                    f"{where}.{key}[{i}].{name}: unknown key (known: {', '.join(sorted(allowed))})"
                )
    return items


def _pair_key(text: str, where: str) -> tuple[int, int]:
    try:
        lower, upper = (int(part) for part in text.split(">"))
    except ValueError:
        raise ConfigError(f"{where}: pair key {text!r} must be written 'lower>upper', e.g. '0>3'") from None
    return lower, upper


def scenario_from_dict(raw: Any, where: str = "scenario") -> Scenario:
    """Build a :class:`Scenario` from a decoded JSON object (errors name the key path)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected an object, got {raw!r}")
    for key in raw:
        if key not in KNOWN_KEYS:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(sorted(KNOWN_KEYS))})")
    alpha = {}
    for text, value in dict(raw.get("alpha", {})).items():
        alpha[_pair_key(text, f"{where}.alpha.{text}")] = _num(
            {"v": value}, "v", f"{where}.alpha.{text}", 0.0
        )
    domains = {
        str(k): _num({"v": v}, "v", f"{where}.domains.{k}") for k, v in dict(raw.get("domains", {})).items()
    }
    drift = raw.get("drift", {})
    if not isinstance(drift, dict) or set(drift) - {"amplitude", "period_s"}:
        raise ConfigError(f"{where}.drift: expected {{'amplitude': .., 'period_s': ..}}, got {drift!r}")
    overrides = tuple(
        AlphaOverride(
            int(_num(o, "lower", f"{where}.acceptance_overrides[{i}]", 0)),
            int(_num(o, "upper", f"{where}.acceptance_overrides[{i}]", 0)),
            _num(o, "alpha", f"{where}.acceptance_overrides[{i}]", 0.0),
            o.get("domain"),
            _num(o, "start", f"{where}.acceptance_overrides[{i}]", default=0.0),
            _num(o, "end", f"{where}.acceptance_overrides[{i}]", default=math.inf),
        )
        for i, o in enumerate(
            _objects(
                raw, "acceptance_overrides", where, {"lower", "upper", "alpha", "domain", "start", "end"}
            )
        )
    )
    slowdowns = []
    for i, s in enumerate(_objects(raw, "slowdowns", where, {"gpu", "start", "end", "factor"})):
        key = f"{where}.slowdowns[{i}]"
        if not isinstance(s.get("gpu"), str):
            raise ConfigError(f"{key}.gpu: expected a GPU name, got {s.get('gpu')!r}")
        start, end = _num(s, "start", key, 0.0), _num(s, "end", key, 0.0)
        if end <= start:
            raise ConfigError(f"{key}.end: must exceed start ({start}), got {end}")
        slowdowns.append(Slowdown(s["gpu"], start, end, _num(s, "factor", key, 1e-9)))
    random_slowdowns = raw.get("random_slowdowns", {})
    allowed_random = {"rate_per_hour", "factor", "duration_s", "horizon_s"}
    if not isinstance(random_slowdowns, dict) or set(random_slowdowns) - allowed_random:
        raise ConfigError(f"{where}.random_slowdowns: expected an object with keys {sorted(allowed_random)}")
    shifts = []
    for i, s in enumerate(_objects(raw, "domain_shifts", where, {"at", "mix"})):
        mix = s.get("mix")
        if not isinstance(mix, dict) or not mix or sum(mix.values()) <= 0:
            raise ConfigError(
                f"{where}.domain_shifts[{i}].mix: expected {{domain: weight}} with positive total"
            )
        shifts.append(DomainShift(_num(s, "at", f"{where}.domain_shifts[{i}]", 0.0), tuple(mix.items())))
    ramps = [
        LoadRamp(
            _num(r, "at", f"{where}.load_ramps[{i}]", 0.0),
            _num(r, "factor", f"{where}.load_ramps[{i}]", 1e-9),
        )
        for i, r in enumerate(_objects(raw, "load_ramps", where, {"at", "factor"}))
    ]
    mode = raw.get("acceptance_mode", "parametric")
    if mode not in ("parametric", "empirical"):
        raise ConfigError(f"{where}.acceptance_mode: expected 'parametric' or 'empirical', got {mode!r}")
    return Scenario(
        seed=int(_num(raw, "seed", where, 0, default=0)),
        noise_sigma=_num(raw, "noise_sigma", where, 0.0, default=0.0),
        correlation=_num(raw, "correlation", where, 0.0, default=0.5),
        alpha=alpha,
        domains=domains,
        drift_amplitude=_num(drift, "amplitude", f"{where}.drift", 0.0, default=0.0),
        drift_period=_num(drift, "period_s", f"{where}.drift", 1e-9, default=600.0),
        acceptance_overrides=overrides,
        slowdowns=tuple(slowdowns),
        random_slowdowns={k: float(v) for k, v in random_slowdowns.items()},
        domain_shifts=tuple(sorted(shifts, key=lambda s: s.at)),
        load_ramps=tuple(sorted(ramps, key=lambda r: r.at)),
        acceptance_mode=mode,
        record_rounds=bool(raw.get("record_rounds", True)),
        truth_context=int(_num(raw, "truth_context", where, 0, default=1024)),
    )


def load_scenario(path: str | Path) -> Scenario:
    return scenario_from_dict(read_json_document(path, ConfigError), str(path))


