"""A warm start for SpecRouter: what a world profile measured, as its starting estimates.

SpecRouter learns pass times and acceptance online.  Over a long replay that costs nothing, but
a short run pays for it: on the real embedded ladder a cold SpecRouter spends its first hundreds
of rounds exploring chains (the optimism bonus is largest where nothing was seen) and ends a
run of a few hundred tokens slower than the best static chain.  The paper schedules chains
"from profiled times"; a :class:`RoutingPrior` is that profile in the policy's own terms:

* ``pass_times[m]``: model ``m``'s measured ``(N, V)`` points, ``N = n b`` the positions the
  whole batch feeds (the axis of :class:`policies.estimators.PassTimeProfile`), ``V`` seconds;
  several table cells with the same ``N`` are averaged;
* ``acceptance[(domain, lower, upper)]``: the profiled per-token acceptance ``α`` of the pair
  (``domain`` ``None``: all domains), the quantity :class:`policies.estimators.PairStats`
  estimates (greedy: the stop-at-first-rejection MLE ``A / (A + R)``);
* ``names``: the ladder it was measured on, checked against the ladder the policy routes;
* ``pass_widths[m]``: the mean batch width of the cells behind each point of ``pass_times[m]``,
  and ``sequence_costs[m]``: the profile's per-sequence cost ``c_m`` (seconds per sequence at
  a fixed ``N``: the within-``N`` least-squares slope of the table's times on the width, at
  least 0), the width axis of ``PassTimeProfile(width_cost=True)``.

SpecRouter seeds its estimators with the prior as ``prior_trials`` pseudo-observations (pass
times: a few samples per cell), so the first plan is the profile's best route and real feedback
overrides the prior within a few rounds.  Pairs whose lower member is model-free are not seeded:
their planning acceptance counts "proposed nothing" as a rejection, which the profile's ``α``
(acceptance of what was proposed) does not.

Pure Python on :mod:`traces.world_profile`, like the rest of :mod:`policies`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from traces.world_profile import WorldProfile, WorldProfileError, load_world_profile


class RoutingPrior(NamedTuple):
    """Starting estimates for SpecRouter (module docstring)."""

    names: tuple[str, ...]
    pass_times: tuple[tuple[tuple[float, float], ...], ...]
    """Per model, ``(N, seconds)`` sorted by ``N``; empty for a model the profile did not time."""
    acceptance: Mapping[tuple[str | None, int, int], float]
    """``(domain, lower, upper) -> α``; ``domain`` ``None`` is every domain."""
    source: str = "<profile>"
    """Where it came from (a file name), for run records."""
    pass_widths: tuple[tuple[float, ...], ...] = ()
    """Per model, the mean batch width of each ``pass_times`` point (empty: not known)."""
    sequence_costs: tuple[float, ...] = ()
    """Per model, the profile's seconds per sequence at a fixed ``N`` (empty: not known)."""

    def alpha(self, domain: str | None, lower: int, upper: int) -> float | None:
        """The pair's profiled acceptance on ``domain``, else on all domains, else ``None``."""
        found = self.acceptance.get((domain, lower, upper))
        return found if found is not None else self.acceptance.get((None, lower, upper))


def prior_from_profile(
    profile: WorldProfile, mode: str | None = None, source: str = "<profile>"
) -> RoutingPrior:
    """The prior of a world profile.  ``mode`` ``"greedy"`` or ``"sampling"`` picks the
    acceptance entries (default: greedy when the profile has any, as the backend decodes)."""
    modes = {pair.mode for pair in profile.acceptance}
    if mode is None:
        mode = "greedy" if "greedy" in modes or not modes else "sampling"
    if mode not in ("greedy", "sampling"):
        raise ValueError(f"routing prior mode must be 'greedy' or 'sampling', got {mode!r}")
    pass_times = []
    pass_widths = []
    sequence_costs = []
    for model in profile.models:
        table = model.pass_time
        by_total: dict[float, list[tuple[float, float]]] = defaultdict(list)
        if not model.model_free:  # a lookup pass is timed by rows, not positions: learned online
            for batch, row in zip(table.batch_sizes, table.seconds):
                for tokens, seconds in zip(table.tokens, row):
                    by_total[float(batch * tokens)].append((float(batch), seconds))
        cells = sorted(by_total.items())
        pass_times.append(tuple((total, sum(v for _, v in c) / len(c)) for total, c in cells))
        pass_widths.append(tuple(sum(b for b, _ in c) / len(c) for _, c in cells))
        sequence_costs.append(_sequence_cost([c for _, c in cells]))
    model_free = set(profile.model_free)
    acceptance = {
        (pair.domain, pair.lower, pair.upper): pair.alpha
        for pair in profile.acceptance
        if pair.mode == mode and pair.lower not in model_free
    }
    return RoutingPrior(
        profile.names, tuple(pass_times), acceptance, source, tuple(pass_widths), tuple(sequence_costs)
    )


def _sequence_cost(cells: list[list[tuple[float, float]]]) -> float:
    """Seconds per sequence at a fixed ``N``: the least-squares slope of time on width within
    the cells (``(width, seconds)`` of one ``N`` each) that hold several widths, at least 0."""
    moment = spread = 0.0
    for cell in cells:
        if len(cell) < 2:
            continue
        mean_width = sum(b for b, _ in cell) / len(cell)
        mean_time = sum(v for _, v in cell) / len(cell)
        moment += sum((b - mean_width) * (v - mean_time) for b, v in cell)
        spread += sum((b - mean_width) ** 2 for b, _ in cell)
    return max(moment / spread, 0.0) if spread > 0.0 else 0.0


def load_prior(path: str | Path, mode: str | None = None) -> RoutingPrior:
    """:func:`prior_from_profile` of a world-profile file (errors name the file and key)."""
    try:
        profile = load_world_profile(path)
    except OSError as error:
        raise WorldProfileError(f"{path}: cannot read the world profile ({error.strerror})") from None
    return prior_from_profile(profile, mode, str(path))
