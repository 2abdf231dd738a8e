"""Seeded synthetic workloads: arrival processes, length distributions, domain mixes, regime shifts.

Arrivals are a renewal process run in *operational time* and mapped to real time through
the cumulative intensity ``Λ(t) = ∫_0^t λ(s) m(s) ds``:

* gaps ``g_i`` in operational time have mean 1: ``Exp(1)`` for Poisson (``cv = 1``) or
  ``Gamma(k = 1/cv², θ = cv²)`` for burstier (``cv > 1``) or smoother (``cv < 1``) arrivals;
* the ``i``-th arrival is at ``Λ⁻¹(g_1 + … + g_i)``;
* ``λ(t)`` is the mean rate: piecewise constant, or linear between two shift times when a
  :class:`Shift` ramps (``Λ`` is then quadratic on that piece and inverted exactly);
* ``m(t)`` is the on/off modulation: ON and OFF periods alternate with exponential lengths
  (means ``on_seconds`` / ``off_seconds``, starting ON), ``m = (on + off) / on`` while ON and 0
  while OFF, so the long-run rate stays ``λ`` while requests come in bursts.

With a constant rate this is exactly a Poisson / gamma renewal process of rate ``λ``.
Lengths are drawn independently per request from a :class:`LengthDist`; the domain from the
current mix's weights.  :class:`Shift` s change rate, domain mix or length distributions at
given times (a domain shift half way, a load ramp).  Every random stream is a child of
``numpy.random.SeedSequence(seed)``, so a seed reproduces the workload bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from traces.request import Request

BLOCK = 4096  # random draws are made in blocks of this many values


class WorkloadConfigError(ValueError):
    """A workload config (``trace generate CONFIG``) that cannot make a workload; says which key."""


@dataclass(frozen=True)
class LengthDist:
    """A token-length distribution.

    ``kind``: ``"fixed"`` (always ``value``), ``"lognormal"`` (``mean`` of the unclipped
    distribution and ``sigma`` of ``log``: ``μ = ln(mean) − σ²/2``), ``"empirical"``
    (uniform resampling of ``values``, e.g. a trace's lengths).  Draws are rounded and
    clipped to ``[low, high]``.
    """

    kind: str
    value: int = 0
    mean: float = 0.0
    sigma: float = 1.0
    values: tuple[int, ...] = ()
    low: int = 1
    high: int | None = None

    def __post_init__(self) -> None:
        if self.kind == "fixed" and self.value < 0:
            raise ValueError(f"fixed length must be >= 0, got {self.value}")
        if self.kind == "lognormal" and not (self.mean > 0 and self.sigma >= 0):
            raise ValueError(f"lognormal needs mean > 0 and sigma >= 0, got {self.mean}, {self.sigma}")
        if self.kind == "empirical" and (not self.values or min(self.values) < 0):
            raise ValueError("empirical lengths need a non-empty list of non-negative values")
        if self.kind not in ("fixed", "lognormal", "empirical"):
            raise ValueError(f"unknown length distribution {self.kind!r}: fixed, lognormal or empirical")
        if self.high is not None and self.high < self.low:
            raise ValueError(f"length bounds high {self.high} < low {self.low}")

    @property
    def smallest(self) -> int:
        """The smallest length a draw can give (draws other than ``fixed`` are clipped to ``low``)."""
        return self.value if self.kind == "fixed" else self.low

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(size, self.value, dtype=np.int64)
        if self.kind == "lognormal":
            mu = math.log(self.mean) - self.sigma**2 / 2
            raw = np.rint(rng.lognormal(mu, self.sigma, size)).astype(np.int64)
        else:
            raw = np.asarray(self.values, dtype=np.int64)[rng.integers(0, len(self.values), size)]
        return np.clip(raw, self.low, self.high if self.high is not None else np.iinfo(np.int64).max)


def fixed(value: int) -> LengthDist:
    return LengthDist("fixed", value=value, low=min(1, value))


def lognormal(mean: float, sigma: float = 1.0, low: int = 1, high: int | None = None) -> LengthDist:
    return LengthDist("lognormal", mean=mean, sigma=sigma, low=low, high=high)


def empirical(values: Sequence[int], low: int = 1, high: int | None = None) -> LengthDist:
    return LengthDist("empirical", values=tuple(int(v) for v in values), low=low, high=high)


@dataclass(frozen=True)
class Arrivals:
    """Arrival process: mean ``rate`` (requests/s), gap ``cv`` (1 = Poisson), optional on/off bursts."""

    rate: float
    cv: float = 1.0
    on_seconds: float | None = None
    off_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.rate < 0 or self.cv <= 0:
            raise ValueError(f"arrivals need rate >= 0 and cv > 0, got rate {self.rate}, cv {self.cv}")
        if (self.on_seconds is None) != (self.off_seconds is None):
            raise ValueError("on/off arrivals need both on_seconds and off_seconds")
        if self.on_seconds is not None and not (self.on_seconds > 0 and (self.off_seconds or 0) >= 0):
            raise ValueError("on_seconds must be > 0 and off_seconds >= 0")

    def gaps(self, rng: np.random.Generator) -> np.ndarray:
        """A block of unit-mean operational-time gaps."""
        if self.cv == 1.0:
            return rng.exponential(1.0, BLOCK)
        shape = 1.0 / self.cv**2
        return rng.gamma(shape, 1.0 / shape, BLOCK)


def poisson(rate: float) -> Arrivals:
    return Arrivals(rate)


def gamma(rate: float, cv: float) -> Arrivals:
    return Arrivals(rate, cv=cv)


def on_off(rate: float, on_seconds: float, off_seconds: float, cv: float = 1.0) -> Arrivals:
    return Arrivals(rate, cv=cv, on_seconds=on_seconds, off_seconds=off_seconds)


@dataclass(frozen=True)
class Shift:
    """From time ``at`` on: a new mean ``rate`` (reached linearly from the previous rate
    knot when ``ramp``), a new domain mix, new prompt / output length distributions.
    ``None`` keeps the current setting."""

    at: float
    rate: float | None = None
    domains: Mapping[str, float] | None = None
    prompt: LengthDist | None = None
    output: LengthDist | None = None
    ramp: bool = False


def normalized_mix(domains: Mapping[str, float]) -> tuple[tuple[str, ...], np.ndarray]:
    """Domain names and cumulative probabilities of a weight mapping."""
    if not domains:
        raise ValueError("a domain mix needs at least one domain")
    weights = np.asarray(list(domains.values()), dtype=np.float64)
    if np.any(weights < 0) or not np.isfinite(weights).all() or weights.sum() <= 0:
        raise ValueError(f"domain weights must be finite, >= 0 and not all 0: {dict(domains)}")
    return tuple(domains), np.cumsum(weights / weights.sum())


@dataclass(frozen=True)
class Workload:
    """A synthetic workload; iterate :func:`generate` (or the workload itself) for requests.

    Stops at ``duration`` seconds or ``count`` requests, whichever comes first (at least
    one is required).
    """

    arrivals: Arrivals
    prompt: LengthDist
    output: LengthDist
    domains: Mapping[str, float] | None = None
    shifts: tuple[Shift, ...] = ()
    duration: float | None = None
    count: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.duration is None and self.count is None:
            raise ValueError("a workload needs duration= or count= (or both)")
        times = [s.at for s in self.shifts]
        if any(t < 0 for t in times) or times != sorted(times):
            raise ValueError(f"shift times must be >= 0 and sorted, got {times}")
        for shift in self.shifts:
            if shift.rate is not None and shift.rate < 0:
                raise ValueError(f"shift at {shift.at}: rate must be >= 0, got {shift.rate}")
        prompts = [("prompt", self.prompt)] + [
            (f"shifts[{i}].prompt", s.prompt) for i, s in enumerate(self.shifts) if s.prompt is not None
        ]
        for where, dist in prompts:
            # A request needs a prompt token to decode from; 0 would be written, then refused on load.
            if dist.smallest < 1:
                raise ValueError(
                    f"{where}: lengths must be >= 1, but this {dist.kind} distribution can draw "
                    f"{dist.smallest} (set value >= 1 or low >= 1)"
                )
        if self.duration is None and self.rate_pieces()[-1][2] == 0:
            raise ValueError("the rate ends at 0 and there is no duration=: the workload would never end")

    def __iter__(self) -> Iterator[Request]:
        return generate(self)

    def rate_pieces(self) -> list[tuple[float, float, float, float]]:
        """``λ(t)`` as pieces ``(t0, t1, λ(t0), λ(t1⁻))``, linear within each piece."""
        pieces, t0, r0 = [], 0.0, self.arrivals.rate
        for shift in self.shifts:
            if shift.rate is None:
                continue
            if shift.at > t0:
                pieces.append((t0, shift.at, r0, shift.rate if shift.ramp else r0))
            t0, r0 = shift.at, shift.rate
        pieces.append((t0, math.inf, r0, r0))
        return pieces


def _on_periods(arrivals: Arrivals, rng: np.random.Generator) -> Iterator[tuple[float, float, float]]:
    """``(start, end, multiplier)`` of the periods in which requests can arrive."""
    if arrivals.on_seconds is None or arrivals.off_seconds is None or arrivals.off_seconds == 0:
        yield 0.0, math.inf, 1.0
        return
    on, off = arrivals.on_seconds, arrivals.off_seconds
    boost, t = (on + off) / on, 0.0
    while True:
        durations = rng.exponential(1.0, (BLOCK, 2)) * (on, off)
        for on_length, off_length in durations:
            yield t, t + on_length, boost
            t += on_length + off_length


def _segments(workload: Workload, rng: np.random.Generator) -> Iterator[tuple[float, float, float, float]]:
    """Intersect rate pieces with on-periods: ``(a, b, rate at a, slope)`` with the modulation applied."""
    pieces = iter(workload.rate_pieces())
    t0, t1, r0, r1 = next(pieces)
    slope = (r1 - r0) / (t1 - t0) if math.isfinite(t1) else 0.0
    for a, b, boost in _on_periods(workload.arrivals, rng):
        while a < b:
            while a >= t1:
                t0, t1, r0, r1 = next(pieces)
                slope = (r1 - r0) / (t1 - t0) if math.isfinite(t1) else 0.0
            end = min(b, t1)
            yield a, end, (r0 + slope * (a - t0)) * boost, slope * boost
            a = end


def _arrival_times(
    workload: Workload, gap_rng: np.random.Generator, on_rng: np.random.Generator
) -> Iterator[float]:
    """Real arrival times ``Λ⁻¹(g_1 + … + g_i)`` (see the module docstring), up to the duration."""
    gaps: np.ndarray = np.empty(0)
    used = 0
    need = 0.0
    horizon = workload.duration if workload.duration is not None else math.inf
    for a, b, rate, slope in _segments(workload, on_rng):
        if a >= horizon:
            return
        rate = max(rate, 0.0)
        while True:
            if need <= 0.0:
                if used == len(gaps):
                    gaps, used = workload.arrivals.gaps(gap_rng), 0
                need, used = float(gaps[used]), used + 1
            width = b - a
            mass = rate * width + slope * width * width / 2 if math.isfinite(width) else math.inf
            if rate <= 0 and slope <= 0:
                mass = 0.0
            if need > mass:
                need -= mass
                break
            # solve rate*x + slope*x²/2 = need for the smallest x >= 0 (stable form)
            x = 2 * need / (rate + math.sqrt(max(rate * rate + 2 * slope * need, 0.0)))
            a = min(a + x, b)
            rate = max(rate + slope * x, 0.0)
            need = 0.0
            yield a


def generate(workload: Workload) -> Iterator[Request]:
    """The workload's requests, sorted by arrival, numbered from 0."""
    gap_ss, on_ss, domain_ss, length_ss = np.random.SeedSequence(workload.seed).spawn(4)
    gap_rng, on_rng = np.random.default_rng(gap_ss), np.random.default_rng(on_ss)
    domain_rng = np.random.default_rng(domain_ss)
    length_seeds = iter(length_ss.spawn(2 * len(workload.shifts) + 2))
    samplers: dict[int, tuple[np.random.Generator, list[int]]] = {}

    def draw(dist: LengthDist) -> int:
        key = id(dist)
        if key not in samplers:
            samplers[key] = (np.random.default_rng(next(length_seeds)), [])
        rng, buffer = samplers[key]
        if not buffer:
            buffer.extend(dist.draw(rng, BLOCK)[::-1].tolist())
        return buffer.pop()

    prompt, output = workload.prompt, workload.output
    mix = normalized_mix(workload.domains) if workload.domains else None
    shifts = list(workload.shifts)
    uniforms: list[float] = []
    for count, t in enumerate(_arrival_times(workload, gap_rng, on_rng)):
        if workload.duration is not None and t >= workload.duration:
            return
        while shifts and shifts[0].at <= t:
            shift = shifts.pop(0)
            prompt = shift.prompt or prompt
            output = shift.output or output
            mix = normalized_mix(shift.domains) if shift.domains else mix
        domain = None
        if mix is not None:
            if not uniforms:
                uniforms = domain_rng.random(BLOCK)[::-1].tolist()
            names, cumulative = mix
            domain = names[
                min(int(np.searchsorted(cumulative, uniforms.pop(), side="right")), len(names) - 1)
            ]
        yield Request(count, t, draw(prompt), draw(output), domain)
        if count + 1 == workload.count:
            return


def lengths_from_trace(requests: Iterator[Request] | Sequence[Request]) -> tuple[LengthDist, LengthDist]:
    """Empirical prompt and output length distributions of a trace (e.g. ``load_trace(path)``)."""
    prompts, outputs = [], []
    for request in requests:
        prompts.append(request.prompt_tokens)
        outputs.append(request.output_tokens)
    if not prompts:
        raise ValueError("lengths_from_trace: the trace has no requests")
    return empirical(prompts), empirical(outputs)


def domain_shift(
    rate: float,
    duration: float,
    before: Mapping[str, float],
    after: Mapping[str, float],
    prompt: LengthDist,
    output: LengthDist,
    at: float | None = None,
    seed: int = 0,
) -> Workload:
    """Poisson arrivals whose domain mix switches from ``before`` to ``after`` at ``at`` (default: half)."""
    switch = duration / 2 if at is None else at
    return Workload(
        poisson(rate), prompt, output, before, (Shift(switch, domains=after),), duration=duration, seed=seed
    )


def load_ramp(
    rate_from: float,
    rate_to: float,
    duration: float,
    prompt: LengthDist,
    output: LengthDist,
    domains: Mapping[str, float] | None = None,
    seed: int = 0,
) -> Workload:
    """Poisson arrivals whose rate moves linearly from ``rate_from`` to ``rate_to`` over ``duration``."""
    ramp = Shift(duration, rate=rate_to, ramp=True)
    return Workload(poisson(rate_from), prompt, output, domains, (ramp,), duration=duration, seed=seed)


def length_from_dict(spec: Mapping[str, Any], where: str) -> LengthDist:
    """``{"kind": "lognormal", "mean": 512, "sigma": 1}``, ``{"kind": "fixed", "value": 128}``,
    ``{"kind": "empirical", "values": [...]}``; optional ``low`` / ``high``."""
    known = {"kind", "value", "mean", "sigma", "values", "low", "high"}
    unknown = set(spec) - known
    if unknown or "kind" not in spec:
        raise ValueError(
            f"{where}: length spec needs 'kind' and only keys {sorted(known)}; got {sorted(spec)}"
        )
    fields = dict(spec)
    if "values" in fields:
        fields["values"] = tuple(int(v) for v in fields["values"])
    return LengthDist(**fields)


def workload_from_dict(spec: Mapping[str, Any]) -> Workload:
    """Build a workload from a JSON-style config (docs/traces.md); :class:`WorkloadConfigError` if bad."""
    if not isinstance(spec, Mapping):
        raise WorkloadConfigError(f"workload config: expected a JSON object, found {type(spec).__name__}")
    try:
        return _workload_from_dict(spec)
    except WorkloadConfigError:
        raise
    except (ValueError, TypeError) as error:
        message = str(error)
        prefix = "" if message.startswith("workload config") else "workload config: "
        raise WorkloadConfigError(prefix + message) from None


def _workload_from_dict(spec: Mapping[str, Any]) -> Workload:
    """Build a workload from a JSON-style config (the format is documented in docs/traces.md).

    ``{"arrivals": {"rate": 5, "cv": 2, "on_seconds": 10, "off_seconds": 30},
    "prompt": {...}, "output": {...}, "domains": {"chat": 0.7, "code": 0.3},
    "shifts": [{"at": 300, "rate": 10, "ramp": true, "domains": {"code": 1}}],
    "duration": 600, "count": null, "seed": 0}``
    """
    known = {"arrivals", "prompt", "output", "domains", "shifts", "duration", "count", "seed"}
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"workload config: unknown key(s) {sorted(unknown)}; expected {sorted(known)}")
    for key in ("arrivals", "prompt", "output"):
        if key not in spec:
            raise ValueError(f"workload config: missing {key!r}")
    shifts = []
    for i, item in enumerate(spec.get("shifts", ())):
        shift = dict(item)
        for key in ("prompt", "output"):
            if key in shift:
                shift[key] = length_from_dict(shift[key], f"shifts[{i}].{key}")
        try:
            shifts.append(Shift(**shift))
        except TypeError as error:
            raise ValueError(f"workload config: shifts[{i}]: {error}") from None
    try:
        arrivals = Arrivals(**spec["arrivals"])
    except TypeError as error:
        raise ValueError(f"workload config: arrivals: {error}") from None
    return Workload(
        arrivals,
        length_from_dict(spec["prompt"], "prompt"),
        length_from_dict(spec["output"], "output"),
        spec.get("domains"),
        tuple(shifts),
        duration=spec.get("duration"),
        count=spec.get("count"),
        seed=int(spec.get("seed", 0)),
    )
