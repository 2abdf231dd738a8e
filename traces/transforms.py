"""Workload transforms: what a scenario does to the requests, the same in both worlds.

A scenario file (:mod:`specrouter.scenarios`) can change the *workload* -- load ramps and domain
shifts -- or the *world* it runs in (slowdowns, acceptance overrides: :mod:`sim.scenario`).  The
workload half lives here, in ``traces``, so the real backend replays exactly the requests the
simulator does: :meth:`WorkloadTransforms.apply` maps any :class:`~traces.request.Request`
iterator lazily.

* ``load_ramps`` compress inter-arrival gaps after ``at`` by ``factor`` (cumulative, acting on
  the original arrival times);
* ``domain_shifts`` re-tag every request arriving after ``at`` (on the ramped times) with a
  domain drawn, seeded, from ``mix``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from traces.request import Request


@dataclass(frozen=True)
class LoadRamp:
    at: float
    factor: float


@dataclass(frozen=True)
class DomainShift:
    at: float
    mix: tuple[tuple[str, float], ...]


def ramp_time(arrival: float, ramps: tuple[LoadRamp, ...]) -> float:
    """Arrival time after the load ramps: gaps after ``ramp.at`` shrink by ``ramp.factor``."""
    shifted, speed, previous = 0.0, 1.0, 0.0
    for ramp in ramps:
        if arrival <= ramp.at:
            break
        shifted += (ramp.at - previous) / speed
        speed *= ramp.factor
        previous = ramp.at
    return shifted + (arrival - previous) / speed


@dataclass(frozen=True)
class WorkloadTransforms:
    """The workload half of a scenario: load ramps, then domain shifts (seeded)."""

    load_ramps: tuple[LoadRamp, ...] = ()
    domain_shifts: tuple[DomainShift, ...] = ()
    seed: int = 0

    def apply(self, requests: Iterable[Request]) -> Iterator[Request]:
        """``load_ramps`` on the original arrival times, then ``domain_shifts`` on the new ones."""
        rng = np.random.default_rng([self.seed, 11])
        mixes = [
            (s.at, [name for name, _ in s.mix], np.cumsum([w for _, w in s.mix]) / sum(w for _, w in s.mix))
            for s in self.domain_shifts
        ]
        for request in requests:
            arrival = ramp_time(request.arrival, self.load_ramps) if self.load_ramps else request.arrival
            domain = request.domain
            active = [m for m in mixes if m[0] <= arrival]
            if active:
                _, names, cumulative = active[-1]
                drawn = int(np.searchsorted(cumulative, rng.random(), side="right"))
                domain = names[min(drawn, len(names) - 1)]
            if arrival != request.arrival or domain != request.domain:
                request = request._replace(arrival=arrival, domain=domain)
            yield request
