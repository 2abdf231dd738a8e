"""Oracles of routing in the simulator: the truth planner and the phased hindsight router.

:class:`Oracle` (registry name ``oracle``) reads :class:`~policies.contract.WorldTruth` --
the true acceptance of every pair for the request's domain and the true expected pass
times, slowdowns included -- and picks the route with the lowest *system* cost
(:func:`policies.cost_model.estimate_system`) over the same
:class:`~policies.planner.RoutePlanner` search space SpecRouter uses: passes priced at the
width the route leads to, with the requests in flight and the committed-token rate it
observes (a :class:`~policies.estimators.LoadTracker` fed by the views and feedback, like
SpecRouter's), and the offered load while the admitted demand leads it, as SpecRouter does.
It knows the expected state, not the outcome of each draw, and it plans with a model: it is
the limit *of the cost model*, not of routing.  (The truth has no queueing, GPU sharing or
prefill riding in batches, so it is no bound: see :class:`PhasedRouter` and
``specrouter.scenarios.hindsight_oracle`` for the honest one.)

Plans are cached per (domain, time bucket of ``time_bucket`` seconds, half-octave of the
requests in flight and of the target's width); a cache miss costs one planner call and,
when the truth's pass times moved (a slowdown started or ended), a new table of them.

:class:`PhasedRouter` routes with one policy per phase of simulated time: the hindsight
oracle is the best such sequence found by replaying the scenario (seeded runs repeat
bit for bit), among candidates that include every static chain.  :class:`RouteCensus`
counts the routes a policy takes per phase: the routes an adaptive policy settles on are
static candidates the hindsight search would not otherwise try.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence

import numpy as np

from policies.contract import Policy, RoundFeedback, Route, RouteView, WorldTruth
from policies.cost_model import SystemLoad, stages_overlap
from policies.estimators import LoadTracker
from policies.planner import PassCube, RoutePlanner

ORACLE_WIDTH_STEPS = 3  # fixed-point steps of the widths and requests in flight


class Oracle:
    """Best route under the true acceptance and pass times, priced in the system (module doc)."""

    name = "oracle"

    def __init__(
        self,
        world: WorldTruth,
        *,
        time_bucket: float = 0.25,
        max_lookahead: int = 8,
        grid_rows: int = 64,
        objective: str = "system",
        offered_load: bool = True,
    ):
        if not isinstance(world, WorldTruth):
            raise TypeError(f"Oracle needs a WorldTruth (alpha, pass_time), got {type(world).__name__}")
        if time_bucket <= 0:
            raise ValueError(f"Oracle time_bucket must be > 0 seconds, got {time_bucket}")
        if objective not in ("system", "request"):
            raise ValueError(f"Oracle objective must be 'system' or 'request', got {objective!r}")
        self.world = world
        self.time_bucket = time_bucket
        self.max_lookahead = max_lookahead
        self.grid_rows = grid_rows
        self.objective = objective
        # The objective SpecRouter prices in (``SpecRouter(offered_load=True)``): while the
        # admitted requests' demand leads the committed rate, at the load it heads for.
        self.offered_load = offered_load
        self.planner: RoutePlanner | None = None
        self.tracker: LoadTracker | None = None
        self._cache: dict[tuple[object, ...], Route] = {}
        self._bucket = -1
        self._cube: PassCube | None = None
        self._cube_probe: tuple[float, ...] = ()

    def route(self, view: RouteView) -> Route:
        size = view.ladder.size
        if self.planner is None or self.planner.ladder_size != size:
            self.planner = RoutePlanner(size, self.max_lookahead, self.grid_rows)
            self.tracker = LoadTracker(size)
        tracker = self.tracker
        assert tracker is not None
        if not view.generated_tokens:
            tracker.see_view(view)
        for model, batch in enumerate(view.batch_sizes):
            if batch > tracker.widest[model]:
                tracker.widest[model] = batch
        bucket = int(view.now // self.time_bucket)
        if bucket != self._bucket:
            self._cache.clear()
            self._bucket = bucket
        key = (view.domain, _half_octave(tracker.in_flight), _half_octave(tracker.widths[-1]))
        route = self._cache.get(key)
        if route is None:
            route = self._cache[key] = self._best(view)
        return route

    def observe(self, feedback: RoundFeedback) -> None:
        tracker = self.tracker
        if tracker is None:
            return
        tracker.see_round(feedback)
        target = feedback.levels[-1]
        if target.passes:
            tracker.see_pass(target.model, target.passes[-1].batch_size)

    def system_load(self) -> SystemLoad:
        """The load a route is priced in: SpecRouter's by default (no device sums; the offered
        load while the demand leads, unless ``offered_load=False``)."""
        assert self.tracker is not None
        return self.tracker.system_load(ORACLE_WIDTH_STEPS, offered=self.offered_load)

    def truth_tables(self, view: RouteView) -> tuple[np.ndarray, np.ndarray]:
        """True acceptance matrix and pass-time table at this view's domain, time and batch sizes."""
        size = view.ladder.size
        if self.planner is None or self.planner.ladder_size != size:
            self.planner = RoutePlanner(size, self.max_lookahead, self.grid_rows)
        world, now, domain = self.world, view.now, view.domain
        alpha = np.ones((size, size))
        for lower in range(size):
            for upper in range(lower + 1, size):
                alpha[lower, upper] = min(max(world.alpha(lower, upper, domain, now), 0.0), 1.0)
        columns = self.planner.columns
        table = np.zeros((size, columns))
        for model in range(size):
            batch = max(int(view.batch_sizes[model]), 1) if model < len(view.batch_sizes) else 1
            for positions in range(1, columns):
                table[model, positions] = world.pass_time(model, positions, batch, now)
        return alpha, table

    def truth_cube(self, size: int, now: float) -> PassCube:
        """True pass times on the planner's width grid, rebuilt only when they changed."""
        assert self.planner is not None
        probe = tuple(self.world.pass_time(m, 1, 1, now) for m in range(size))
        if self._cube is None or probe != self._cube_probe:
            from policies.planner import WIDTH_GRID

            columns = self.planner.columns
            seconds = np.zeros((size, len(WIDTH_GRID), columns))
            for model in range(size):
                for w, width in enumerate(WIDTH_GRID):
                    batch = int(round(width))
                    for positions in range(1, columns):
                        seconds[model, w, positions] = self.world.pass_time(model, positions, batch, now)
            self._cube = PassCube(seconds)
            self._cube_probe = probe
        return self._cube

    def _best(self, view: RouteView) -> Route:
        alpha, table = self.truth_tables(view)
        assert self.planner is not None and self.tracker is not None
        if self.objective == "request":
            return self.planner.plan(alpha, table).route
        load = self.system_load()
        # Widths follow the route only where stages overlap; on one device they stay as experienced.
        cube = self.truth_cube(view.ladder.size, view.now) if stages_overlap(view.ladder.devices) else None
        return self.planner.plan(alpha, table, load, cube).route


class PhasedRouter:
    """Route with ``policies[k]`` while simulated time is in phase ``k``.

    ``boundaries`` are the ``len(policies) - 1`` increasing times at which phases change.
    Every sub-policy observes every round (a learning one keeps its estimates warm).
    """

    def __init__(self, boundaries: Sequence[float], policies: Sequence[Policy], name: str = "phased"):
        if len(policies) != len(boundaries) + 1:
            raise ValueError(
                f"PhasedRouter needs one policy per phase: {len(boundaries) + 1} phases, "
                f"{len(policies)} policies"
            )
        if any(b <= a for a, b in zip(boundaries, boundaries[1:])):
            raise ValueError(f"PhasedRouter boundaries must increase, got {list(boundaries)}")
        self.boundaries = list(boundaries)
        self.policies = list(policies)
        self.name = name

    def route(self, view: RouteView) -> Route:
        return self.policies[bisect_right(self.boundaries, view.now)].route(view)

    def observe(self, feedback: RoundFeedback) -> None:
        for policy in self.policies:
            policy.observe(feedback)


class RouteCensus:
    """A policy, unchanged, whose routes are counted per phase of simulated time.

    ``boundaries`` split time into phases as in :class:`PhasedRouter`; ``counts[k]`` maps
    each route taken while ``view.now`` was in phase ``k`` to its number of request-rounds.
    """

    def __init__(self, policy: Policy, boundaries: Sequence[float]):
        self.policy = policy
        self.name = policy.name
        self.boundaries = list(boundaries)
        self.counts: list[Counter[Route]] = [Counter() for _ in range(len(self.boundaries) + 1)]

    def route(self, view: RouteView) -> Route:
        route = self.policy.route(view)
        self.counts[bisect_right(self.boundaries, view.now)][route] += 1
        return route

    def observe(self, feedback: RoundFeedback) -> None:
        self.policy.observe(feedback)

    def modal_routes(self) -> list[Route]:
        """The most taken route of the whole run, then of each phase in turn, without repeats."""
        whole: Counter[Route] = sum(self.counts, Counter())
        found: list[Route] = []
        for counts in (whole, *self.counts):
            if counts:
                route = counts.most_common(1)[0][0]
                if route not in found:
                    found.append(route)
        return found


def _half_octave(value: float) -> int:
    return int(2.0 * math.log2(value)) if value > 1.0 else 0
