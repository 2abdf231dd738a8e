"""The oracle router: the best route under the world's true state, every round (simulator only).

It reads :class:`~policies.contract.WorldTruth` -- the true acceptance of every pair for
the request's domain and the true expected pass times at the current batch sizes,
slowdowns included -- and picks the route with the lowest ``T_eff`` with the same
:class:`~policies.planner.RoutePlanner` search space SpecRouter uses.  That makes it the
physical limit of routing *within that search space and the cost model*: it knows the
expected state, not the outcome of each draw.

Plans are cached per (domain, time bucket of ``time_bucket`` seconds, batch-size octave
of every model); a cache miss costs ``K * positions`` truth queries and one planner call.
"""

from __future__ import annotations

import numpy as np

from policies.contract import RoundFeedback, Route, RouteView, WorldTruth
from policies.planner import RoutePlanner


class Oracle:
    """Best route under the true acceptance and pass times (see the module docstring)."""

    name = "oracle"

    def __init__(
        self, world: WorldTruth, *, time_bucket: float = 0.25, max_lookahead: int = 8, grid_rows: int = 64
    ):
        if not isinstance(world, WorldTruth):
            raise TypeError(f"Oracle needs a WorldTruth (alpha, pass_time), got {type(world).__name__}")
        if time_bucket <= 0:
            raise ValueError(f"Oracle time_bucket must be > 0 seconds, got {time_bucket}")
        self.world = world
        self.time_bucket = time_bucket
        self.max_lookahead = max_lookahead
        self.grid_rows = grid_rows
        self.planner: RoutePlanner | None = None
        self._cache: dict[tuple[object, ...], Route] = {}
        self._bucket = -1

    def route(self, view: RouteView) -> Route:
        bucket = int(view.now // self.time_bucket)
        if bucket != self._bucket:
            self._cache.clear()
            self._bucket = bucket
        key = (view.domain, view.batch_sizes)
        route = self._cache.get(key)
        if route is None:
            octaves = (view.domain, *(max(int(b), 1).bit_length() for b in view.batch_sizes))
            route = self._cache.get(octaves)
            if route is None:
                route = self._cache[octaves] = self._best(view)
            self._cache[key] = route
        return route

    def observe(self, feedback: RoundFeedback) -> None:
        return None

    def truth_tables(self, view: RouteView) -> tuple[np.ndarray, np.ndarray]:
        """True acceptance matrix and pass-time table for this view's domain, time and load."""
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

    def _best(self, view: RouteView) -> Route:
        alpha, table = self.truth_tables(view)
        assert self.planner is not None
        return self.planner.plan(alpha, table).route
