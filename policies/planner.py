"""Vectorised route search: ``T_eff`` of every chain over a grid of lookaheads at once.

:func:`policies.cost_model.estimate_round` scores one route in pure Python; a policy that
re-plans over every chain and lookahead combination of a 5-model ladder (16 chains,
``9^4 = 6561`` routes with lookaheads 1..8) cannot afford that inside a 1 ms budget.
This module computes the *same* quantities -- it is tested against ``estimate_round``
route by route -- for all lookahead rows of one chain in a handful of numpy operations.

Per chain ``(m_0 .. m_{N-1})`` and lookahead rows ``G`` (``B x (N-1)``):

* level 0 drafts ``W = G[:, 0]`` tokens: the count pmf is a one-hot at ``W`` and the
  latency ``W * V_{m_0}(1)``;
* a verify at level ``j`` with acceptance ``a`` maps the pmf ``p(n)`` of candidates to the
  pmf of emitted tokens ``q(k) = a^{k-1} ((1 - a) P(n >= k) + p(k - 1))`` for
  ``k = 1 .. n_max + 1`` -- the closed form of ``accepted_emission_pmf`` mixed over
  ``n`` -- and costs ``E[V_{m_j}(n + 1)]``;
* an intermediate level with goal ``g`` repeats (sub-round below + verify) until it has
  collected ``>= g`` tokens: a renewal recursion over "tokens so far" whose visit
  probabilities sum to the expected number of repetitions;
* ``T_eff = E[latency] / E[target tokens]``;
* with a :class:`~policies.cost_model.SystemLoad` (pass widths ``b_m``, ``R`` requests in
  flight, device placement) the cost is the system objective of
  :func:`policies.cost_model.estimate_system`,
  ``T_sys = max(L, R B + lambda (L - B)) / E[target tokens]``, ``B = max_d sum_{m on d} P_m / b_m``,
  from the same
  per-level pass times ``P_m`` (the caller reads the pass table at the widths ``b_m``).

The search space is bounded by ``grid_rows``: drafter lookaheads always span
``1 .. max_lookahead``; intermediate lookaheads span ``1 .. g`` with ``g`` the largest
value keeping ``rows <= grid_rows`` (``g = 8`` on 3-level chains, 3 on 4-level, 2 on
5-level with the default 1024).  Deeper intermediate lookaheads rarely pay: a level that
collects more tokens before handing them up only lengthens the run the target may reject.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from policies.contract import Route
from policies.cost_model import LATENCY_SHOW_THROUGH, SystemLoad, enumerate_chains

FloatArray = np.ndarray


class ChainPlan(NamedTuple):
    """The best lookaheads found for one chain and their predicted cost."""

    route: Route
    t_eff: float
    latency: float
    tokens: float


def lookahead_grid(levels: int, max_lookahead: int, grid_rows: int) -> np.ndarray:
    """Rows of lookaheads for a chain with ``levels`` non-target members (see module doc)."""
    if levels == 0:
        return np.zeros((1, 0), dtype=np.int64)
    inner = 1
    if levels > 1:
        while inner < max_lookahead and max_lookahead * (inner + 1) ** (levels - 1) <= grid_rows:
            inner += 1
    axes = [np.arange(1, max_lookahead + 1)] + [np.arange(1, inner + 1)] * (levels - 1)
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1).astype(np.int64)


def _verify(pmf: FloatArray, alpha: FloatArray) -> FloatArray:
    """Emitted-count pmf ``(B, S+1)`` after a verify of candidate pmf ``pmf`` ``(B, S)``.

    ``alpha`` holds one acceptance per row.
    """
    rows, size = pmf.shape
    # (B, 1) acceptance clipped to [0, 1]: two ufuncs, once (np.clip's wrapper costs more)
    accept = np.minimum(np.maximum(alpha, 0.0), 1.0)[:, None]
    at_least = np.zeros((rows, size))
    at_least[:, : size - 1] = pmf[:, :0:-1].cumsum(axis=1)[:, ::-1]  # P(n >= k) for k = 1..S
    powers = accept ** np.arange(size)  # a^{k-1} for k = 1..S
    out = np.zeros((rows, size + 1))
    out[:, 1:] = powers * ((1.0 - accept) * at_least + pmf)
    return out


def _collect(step: FloatArray, goals: np.ndarray) -> tuple[FloatArray, FloatArray]:
    """Repeat a step (emitted pmf ``step``) until ``>= goals`` tokens: total pmf, E[steps].

    ``mass[:, t]`` is, for ``t < goal``, the probability that the running total ever
    equals ``t`` (a renewal "visit"); for ``t >= goal`` the probability that collection
    stops at ``t``.  Only visits propagate; ``step[:, 0] == 0`` (a verify emits >= 1).
    The expected number of steps is the sum of the visit probabilities.
    """
    rows, size = step.shape
    top = int(goals.max())
    open_ = (np.arange(top)[None, :] < goals[:, None]).astype(float)  # (rows, top)
    mass = np.zeros((rows, top + size))
    mass[:, 0] = 1.0
    for s in range(top):
        mass[:, s : s + size] += (mass[:, s] * open_[:, s])[:, None] * step
    steps = np.einsum("rt,rt->r", mass[:, :top], open_)
    mass[:, :top] *= 1.0 - open_
    return mass, steps


def evaluate_routes(
    members: np.ndarray, grid: np.ndarray, alpha: FloatArray, pass_table: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Expected latency and target tokens per round of many routes of one chain length.

    Row ``r`` is the chain ``members[r]`` (``B x N`` ladder indices) with lookaheads
    ``grid[r]`` (``B x (N-1)``).  ``alpha[i, j]`` is the acceptance of model ``i``'s tokens
    by model ``j``; ``pass_table[m, n]`` the time of a pass of model ``m`` feeding ``n``
    positions (column 0 unused).  Returns two arrays of length ``B``.
    """
    parts, tokens = evaluate_route_parts(members, grid, alpha, pass_table)
    return parts.sum(axis=1), tokens


def evaluate_route_parts(
    members: np.ndarray, grid: np.ndarray, alpha: FloatArray, pass_table: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Per level expected pass time (``B x N``) and target tokens (``B``) of many routes.

    ``parts[r, j]`` is the expected time of chain member ``j``'s passes in one round: the
    vectorised :func:`policies.cost_model.estimate_round_parts`.
    """
    rows, length = members.shape
    if length == 1:
        return pass_table[members[:, 0], 1][:, None].copy(), np.ones(rows)
    drafted = grid[:, 0]
    pmf = np.zeros((rows, int(drafted.max()) + 1))
    pmf[np.arange(rows), drafted] = 1.0
    parts = np.zeros((rows, length))
    parts[:, 0] = drafted * pass_table[members[:, 0], 1]
    for level in range(1, length):
        lower, upper = members[:, level - 1], members[:, level]
        size = pmf.shape[1]
        if size + 1 > pass_table.shape[1]:
            raise ValueError(f"pass_table has {pass_table.shape[1]} columns; these routes need {size + 1}")
        parts[:, level] = np.einsum("rn,rn->r", pmf, pass_table[upper, 1 : size + 1])
        step = _verify(pmf, alpha[lower, upper])
        if level == length - 1:
            return parts, step @ np.arange(step.shape[1])
        pmf, steps = _collect(step, grid[:, level])
        parts[:, : level + 1] *= steps[:, None]  # the sub-round below repeats `steps` times
    raise AssertionError("unreachable: the loop returns at the target level")


WIDTH_STEPS_PER_OCTAVE = 4
WIDTH_GRID = 2.0 ** (np.arange(0, 10 * WIDTH_STEPS_PER_OCTAVE + 1) / WIDTH_STEPS_PER_OCTAVE)  # 1 .. 1024


class WidthSpread(NamedTuple):
    """How wide a model's passes are around their mean: pass ``w`` of the batch's passes runs
    ``factors[m, q]`` times the mean width with weight ``weights[m, q]`` (rows sum to 1).

    A continuous batch's width varies from pass to pass, and pass time is convex in it (flat
    while the weights stream, steep once compute-bound), so the mean pass time exceeds the
    pass time at the mean width (Jensen): in the demo's world at a mean width of 1.2 (85% of
    passes alone, the rest 2-4 wide) a verify of 5 positions costs 14.7 ms on average, not the
    12.3 ms of one alone, and an extra drafted token ~2.3 ms of round time, not ~1.2.
    """

    factors: FloatArray  # (K, Q) width / mean width
    weights: FloatArray  # (K, Q) share of the passes (0 pads)


class PassCube(NamedTuple):
    """Pass times at any width: ``seconds[m, w, n]`` for ``WIDTH_GRID[w]`` sequences each
    feeding ``n`` positions (column 0 unused); read log-linearly between grid widths.  With a
    ``spread`` a read is the expected pass time over the model's width distribution scaled to
    the width asked for (:class:`WidthSpread`)."""

    seconds: FloatArray  # (K, len(WIDTH_GRID), columns)
    spread: WidthSpread | None = None

    def read(self, models: np.ndarray, widths: FloatArray, columns: int) -> FloatArray:
        """``out[r, n]`` for model ``models[r]`` at width ``widths[r]``, ``n < columns``."""
        spread = self.spread
        if spread is None:
            return self._read_at(models, widths, columns)
        out = np.zeros((len(models), columns))
        for q in range(spread.factors.shape[1]):
            weight = spread.weights[models, q]
            if weight.any():
                out += weight[:, None] * self._read_at(models, widths * spread.factors[models, q], columns)
        return out

    def _read_at(self, models: np.ndarray, widths: FloatArray, columns: int) -> FloatArray:
        position = np.log2(np.clip(widths, 1.0, WIDTH_GRID[-1])) * WIDTH_STEPS_PER_OCTAVE
        low = np.minimum(position.astype(np.int64), len(WIDTH_GRID) - 2)
        weight = (position - low)[:, None]
        cube = self.seconds
        return cube[models, low, :columns] * (1.0 - weight) + cube[models, low + 1, :columns] * weight


def evaluate_route_parts_at(
    members: np.ndarray, grid: np.ndarray, alpha: FloatArray, cube: PassCube, widths: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """:func:`evaluate_route_parts` with each row's passes at its own widths (``B x N``)."""
    rows, length = members.shape
    if length == 1:
        return cube.read(members[:, 0], widths[:, 0], 2)[:, 1:2].copy(), np.ones(rows)
    drafted = grid[:, 0]
    pmf = np.zeros((rows, int(drafted.max()) + 1))
    pmf[np.arange(rows), drafted] = 1.0
    parts = np.zeros((rows, length))
    parts[:, 0] = drafted * cube.read(members[:, 0], widths[:, 0], 2)[:, 1]
    for level in range(1, length):
        size = pmf.shape[1]
        if size + 1 > cube.seconds.shape[2]:
            raise ValueError(f"pass cube has {cube.seconds.shape[2]} columns; these routes need {size + 1}")
        table = cube.read(members[:, level], widths[:, level], size + 1)
        parts[:, level] = np.einsum("rn,rn->r", pmf, table[:, 1:])
        step = _verify(pmf, alpha[members[:, level - 1], members[:, level]])
        if level == length - 1:
            return parts, step @ np.arange(step.shape[1])
        pmf, steps = _collect(step, grid[:, level])
        parts[:, : level + 1] *= steps[:, None]
    raise AssertionError("unreachable: the loop returns at the target level")


def member_values(members: np.ndarray, values: Sequence[float] | None, default: float) -> FloatArray:
    """``values[members]`` as floats (``default`` where a model has no entry)."""
    table = np.full(int(members.max()) + 1, default, dtype=float)
    if values is not None:
        known = min(len(values), len(table))
        table[:known] = np.asarray(values[:known], dtype=float)
    return table[members]


class TargetWait(NamedTuple):
    """A round's wait at the target, per row: ``max(0, c P_T + h (d P_T - P_D))``.

    ``c`` (``per_target_second``): seconds waited per second of target pass, pooled over the
    rounds -- a round waits at the target for the pass in progress there, which lasts as long
    as the passes routes put on the target.  ``P_T`` is the row's target pass time, ``P_D``
    the time of its other passes (drafting), ``d`` (``drafting_per_target_second``) the
    drafting seconds per target second of the rounds ``c`` was measured on, and ``h``
    (``hidden``) the share of drafting that hides in the wait: a request that drafts longer
    reaches a busy target later and waits less for its next pass (``h = 1``: the round lasts
    the target's cycle whatever the drafting; ``h = 0``: waits and drafting add up).  A route
    drafting what the measured rounds drafted (``P_D = d P_T``) waits ``c P_T`` either way.

    With ``reach`` (samples of ``rho``, the seconds from a round's start until the target took
    its verify per second of its target pass, for rounds that started with the target's queue
    in one bucket: ``estimators.QueueReach``) the wait is ``mean over rho of max(0, rho P_T - P_D)``
    instead: drafting fully hidden, over the measured distribution of the target's reach.
    """

    per_target_second: float = 0.0
    hidden: float = 0.0
    drafting_per_target_second: float = 0.0
    reach: FloatArray | None = None  # measured rho of the round's queue bucket (estimators.QueueReach)

    def rows(self, parts: FloatArray) -> FloatArray:
        """Each row's wait (``parts``: one column per chain level, the target's last)."""
        target = parts[:, -1]
        if self.reach is not None:
            drafting = parts[:, :-1].sum(axis=1)
            # the target is free rho P_T after the round starts; the round waits for what its
            # drafting does not cover: E max(0, rho P_T - P_D) over the measured rho
            return np.maximum(self.reach[None, :] * target[:, None] - drafting[:, None], 0.0).mean(axis=1)
        wait = self.per_target_second * target
        if self.hidden > 0.0:
            drafting = parts[:, :-1].sum(axis=1)
            wait = np.maximum(wait + self.hidden * (self.drafting_per_target_second * target - drafting), 0.0)
        return wait


NO_TARGET_WAIT = TargetWait()


def with_target_wait(
    waits: FloatArray | None, parts: FloatArray, target_wait: TargetWait
) -> FloatArray | None:
    """Row waits plus each row's wait at the target (:class:`TargetWait`)."""
    if target_wait.per_target_second <= 0.0 and target_wait.reach is None:
        return waits
    extra = target_wait.rows(parts)
    return extra if waits is None else waits + extra


def solve_row_widths(
    members: np.ndarray,
    grid: np.ndarray,
    alpha: FloatArray,
    cube: PassCube,
    load: SystemLoad,
    waits: FloatArray | None,
    target_wait: TargetWait = NO_TARGET_WAIT,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Little's-law widths and requests in flight per row (:func:`policies.cost_model.solve_load`),
    then parts and tokens at them."""
    widths = np.maximum(member_values(members, load.batch_sizes, 1.0), 1.0)
    caps = np.maximum(member_values(members, load.caps, np.inf), 1.0)
    in_flight = np.full(len(members), max(load.in_flight, 1.0))
    parts, tokens = evaluate_route_parts_at(members, grid, alpha, cube, widths)
    for _ in range(load.iterations):
        row_waits = with_target_wait(waits, parts, target_wait)
        round_time = parts.sum(axis=1) + (row_waits if row_waits is not None else 0.0)
        if load.token_rate > 0:  # R = Lambda T_sys(R), within the admission limit
            cost = system_cost(members, parts, tokens, load, row_waits, widths, in_flight)
            floor = max(load.min_in_flight, 1.0)
            in_flight = np.clip(load.token_rate * cost, floor, max(load.max_in_flight, floor))
        # Our requests spread over the stages by Little's law; other tenants' sequences
        # (min_in_flight) sit in every batch.
        foreign = max(load.min_in_flight, 1.0) - 1.0
        ours = np.maximum(in_flight - foreign, 1.0)
        share = ours[:, None] * parts / np.where(round_time > 0, round_time, 1.0)[:, None]
        widths = np.minimum(foreign + np.minimum(np.maximum(share, 1.0), caps), caps)
        parts, tokens = evaluate_route_parts_at(members, grid, alpha, cube, widths)
    return parts, tokens, widths, in_flight


def system_cost(
    members: np.ndarray,
    parts: FloatArray,
    tokens: FloatArray,
    load: SystemLoad,
    waits: FloatArray | None,
    widths: FloatArray | None = None,
    in_flight: FloatArray | None = None,
) -> FloatArray:
    """``T_sys = max(L, R B + lambda (L - B)) / tokens`` per row, ``L`` with the waits
    (:func:`policies.cost_model.system_time`); ``widths`` per row and member, else the load's."""
    latency = parts.sum(axis=1)
    if waits is not None:
        latency = latency + waits
    if widths is None:
        widths = np.maximum(member_values(members, load.batch_sizes, 1.0), 1.0)
    shares = parts / widths  # each pass's time is shared by the b_m sequences it serves
    if load.devices is None or members.shape[1] == 1:
        busy = shares.max(axis=1)
    else:
        device_of = np.asarray(load.devices)[members]
        busy = np.zeros(len(members))
        for device in np.unique(device_of):
            busy = np.maximum(busy, np.where(device_of == device, shares, 0.0).sum(axis=1))
    requests = in_flight if in_flight is not None else max(load.in_flight, 1.0)
    backlog = requests * busy + LATENCY_SHOW_THROUGH * (latency - busy)
    return np.maximum(latency, backlog) / tokens


def _widest_pass(grid: np.ndarray) -> int:
    """Most positions one verify pass of these routes can feed (candidates + 1)."""
    if grid.shape[1] == 0:
        return 1
    size = int(grid[:, 0].max()) + 1  # candidate counts 0..W
    for level in range(1, grid.shape[1]):
        size = int(grid[:, level].max()) + size + 1  # verify adds one, collect adds the goal
    return size


class RoutePlanner:
    """Best route over every chain of a ladder, for given acceptance and pass times.

    Routes are grouped by chain length and each group is scored in one vectorised pass,
    so :meth:`plan` costs a few dozen numpy operations whatever the ladder.
    """

    def __init__(self, ladder_size: int, max_lookahead: int = 8, grid_rows: int = 64):
        if max_lookahead < 1:
            raise ValueError(f"max_lookahead must be >= 1, got {max_lookahead}")
        if grid_rows < max_lookahead:
            raise ValueError(f"grid_rows ({grid_rows}) must be >= max_lookahead ({max_lookahead})")
        self.ladder_size = ladder_size
        self.max_lookahead = max_lookahead
        self.target = ladder_size - 1
        self.chains = enumerate_chains(ladder_size)
        self._groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # members, grid, chain id
        self._routes: dict[tuple[int, int], Route] = {}
        for length in range(1, ladder_size + 1):
            ids = [i for i, c in enumerate(self.chains) if len(c) == length]
            grid = lookahead_grid(length - 1, max_lookahead, grid_rows)
            members = np.repeat(np.array([self.chains[i] for i in ids]), len(grid), axis=0)
            chain_ids = np.repeat(np.array(ids), len(grid))
            self._groups.append((members, np.tile(grid, (len(ids), 1)), chain_ids))
        self.positions = max(_widest_pass(grid) for _, grid, _ in self._groups)

    @property
    def route_count(self) -> int:
        return sum(len(members) for members, _, _ in self._groups)

    @property
    def columns(self) -> int:
        """Columns a pass table must have: ``positions + 1`` (column index = positions fed)."""
        return self.positions + 1

    def plan_chains(
        self,
        alpha: FloatArray,
        pass_table: FloatArray,
        round_overhead: FloatArray | None = None,
        load: SystemLoad | None = None,
        pass_time_at: PassCube | None = None,
        target_wait: TargetWait = NO_TARGET_WAIT,
        keep: Route | None = None,
        keep_within: float = 0.0,
    ) -> list[ChainPlan]:
        """The best lookaheads of every chain (same order as ``self.chains``).

        ``round_overhead[c]`` (optional) is extra wall time per round of chain ``c`` --
        waiting between passes -- added to every round's latency before choosing.
        ``load`` (optional) prices routes by the system objective; ``pass_table`` must then
        hold each model's pass times at its width ``load.batch_sizes[m]``, unless
        ``pass_time_at`` (a :class:`PassCube`) answers at any width: then the widths follow
        each route by Little's law (``load.iterations`` steps).  ``ChainPlan.t_eff`` is the cost minimised.
        ``keep`` (optional): its chain's plan keeps ``keep``'s lookaheads while they cost at most
        ``1 + keep_within`` times that chain's best (hysteresis on the lookaheads).
        """
        plans: list[ChainPlan | None] = [None] * len(self.chains)
        for members, grid, chain_ids in self._groups:
            latency, tokens, cost = self._score(
                members, grid, chain_ids, alpha, pass_table, round_overhead, load, pass_time_at, target_wait
            )
            order = np.lexsort((cost, chain_ids))  # by chain, cheapest first
            ranked = chain_ids[order]
            firsts = order[np.concatenate(([True], ranked[1:] != ranked[:-1]))]
            for row in firsts:
                route = self._route(members, grid, int(row))
                if keep is not None and route.chain == keep.chain and route.lookaheads != keep.lookaheads:
                    same = (chain_ids == chain_ids[row]) & (grid == keep.lookaheads).all(axis=1)
                    kept = np.nonzero(same)[0]
                    if len(kept) and cost[kept[0]] <= cost[row] * (1.0 + keep_within):
                        row = kept[0]
                        route = self._route(members, grid, int(row))
                plans[int(chain_ids[row])] = ChainPlan(
                    route, float(cost[row]), float(latency[row]), float(tokens[row])
                )
        return [p for p in plans if p is not None]

    def plan(
        self,
        alpha: FloatArray,
        pass_table: FloatArray,
        load: SystemLoad | None = None,
        pass_time_at: PassCube | None = None,
    ) -> ChainPlan:
        """The route with the lowest predicted cost (target-only always a candidate)."""
        best_row = None
        best_cost = np.inf
        for members, grid, chain_ids in self._groups:
            latency, tokens, cost = self._score(
                members, grid, chain_ids, alpha, pass_table, None, load, pass_time_at
            )
            row = int(np.argmin(cost))
            if cost[row] < best_cost:
                best_cost = float(cost[row])
                best_row = (members, grid, row, float(latency[row]), float(tokens[row]))
        assert best_row is not None
        members, grid, row, latency_best, tokens_best = best_row
        return ChainPlan(self._route(members, grid, row), best_cost, latency_best, tokens_best)

    @staticmethod
    def _score(
        members: np.ndarray,
        grid: np.ndarray,
        chain_ids: np.ndarray,
        alpha: FloatArray,
        pass_table: FloatArray,
        round_overhead: FloatArray | None,
        load: SystemLoad | None,
        pass_time_at: PassCube | None = None,
        target_wait: TargetWait = NO_TARGET_WAIT,
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Latency (waits included), tokens and the minimised cost of every row; ``target_wait``
        adds each row's wait at the target (system objective only: :func:`with_target_wait`)."""
        waits = round_overhead[chain_ids] if round_overhead is not None else None
        if load is None:
            latency, tokens = evaluate_routes(members, grid, alpha, pass_table)
            if waits is not None:
                latency = latency + waits
            return latency, tokens, latency / tokens
        widths: FloatArray | None = None  # None: the load's widths and requests in flight
        in_flight: FloatArray | None = None
        if pass_time_at is None:
            parts, tokens = evaluate_route_parts(members, grid, alpha, pass_table)
        else:
            parts, tokens, widths, in_flight = solve_row_widths(
                members, grid, alpha, pass_time_at, load, waits, target_wait
            )
        waits = with_target_wait(waits, parts, target_wait)
        latency = parts.sum(axis=1) + (waits if waits is not None else 0.0)
        return latency, tokens, system_cost(members, parts, tokens, load, waits, widths, in_flight)

    def _route(self, members: np.ndarray, grid: np.ndarray, row: int) -> Route:
        """The Route of one grid row, built once and cached (routes are compared by identity)."""
        key = (len(grid[row]), row)
        route = self._routes.get(key)
        if route is None:
            chain = tuple(int(m) for m in members[row])
            route = self._routes[key] = Route(chain, tuple(int(g) for g in grid[row]), self.target)
        return route
