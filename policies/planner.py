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
* ``T_eff = E[latency] / E[target tokens]``.

The search space is bounded by ``grid_rows``: drafter lookaheads always span
``1 .. max_lookahead``; intermediate lookaheads span ``1 .. g`` with ``g`` the largest
value keeping ``rows <= grid_rows`` (``g = 8`` on 3-level chains, 3 on 4-level, 2 on
5-level with the default 1024).  Deeper intermediate lookaheads rarely pay: a level that
collects more tokens before handing them up only lengthens the run the target may reject.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from policies.contract import Route
from policies.cost_model import AlphaFn, PassTimeFn, enumerate_chains

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
    tail = np.cumsum(pmf[:, ::-1], axis=1)[:, ::-1]  # tail[:, k] = P(n >= k), k = 0..S-1
    at_least = np.zeros((rows, size))
    at_least[:, : size - 1] = tail[:, 1:]  # P(n >= k) for k = 1..S
    powers = np.clip(alpha, 0.0, 1.0)[:, None] ** np.arange(size)  # a^{k-1} for k = 1..S
    out = np.zeros((rows, size + 1))
    out[:, 1:] = powers * ((1.0 - np.clip(alpha, 0.0, 1.0))[:, None] * at_least + pmf)
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
    rows, length = members.shape
    if length == 1:
        return pass_table[members[:, 0], 1].copy(), np.ones(rows)
    drafted = grid[:, 0]
    pmf = np.zeros((rows, int(drafted.max()) + 1))
    pmf[np.arange(rows), drafted] = 1.0
    latency = drafted * pass_table[members[:, 0], 1]
    for level in range(1, length):
        lower, upper = members[:, level - 1], members[:, level]
        size = pmf.shape[1]
        if size + 1 > pass_table.shape[1]:
            raise ValueError(f"pass_table has {pass_table.shape[1]} columns; these routes need {size + 1}")
        verify_time = np.einsum("rn,rn->r", pmf, pass_table[upper, 1 : size + 1])
        step = _verify(pmf, alpha[lower, upper])
        step_latency = latency + verify_time
        if level == length - 1:
            return step_latency, step @ np.arange(step.shape[1])
        pmf, steps = _collect(step, grid[:, level])
        latency = steps * step_latency
    raise AssertionError("unreachable: the loop returns at the target level")


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
        self, alpha: FloatArray, pass_table: FloatArray, round_overhead: FloatArray | None = None
    ) -> list[ChainPlan]:
        """The best lookaheads of every chain (same order as ``self.chains``).

        ``round_overhead[c]`` (optional) is extra wall time per round of chain ``c`` --
        waiting between passes -- added to every round's latency before choosing.
        """
        plans: list[ChainPlan | None] = [None] * len(self.chains)
        for members, grid, chain_ids in self._groups:
            latency, tokens = evaluate_routes(members, grid, alpha, pass_table)
            if round_overhead is not None:
                latency = latency + round_overhead[chain_ids]
            cost = latency / tokens
            order = np.lexsort((cost, chain_ids))  # by chain, cheapest first
            firsts = order[np.r_[True, chain_ids[order][1:] != chain_ids[order][:-1]]]
            for row in firsts:
                route = self._route(members, grid, int(row))
                plans[int(chain_ids[row])] = ChainPlan(
                    route, float(cost[row]), float(latency[row]), float(tokens[row])
                )
        return [p for p in plans if p is not None]

    def plan(self, alpha: FloatArray, pass_table: FloatArray) -> ChainPlan:
        """The route with the lowest predicted ``T_eff`` (target-only always a candidate)."""
        best_row = None
        best_cost = np.inf
        for members, grid, _ in self._groups:
            latency, tokens = evaluate_routes(members, grid, alpha, pass_table)
            cost = latency / tokens
            row = int(np.argmin(cost))
            if cost[row] < best_cost:
                best_cost = float(cost[row])
                best_row = (members, grid, row, float(latency[row]), float(tokens[row]))
        assert best_row is not None
        members, grid, row, latency_best, tokens_best = best_row
        return ChainPlan(self._route(members, grid, row), best_cost, latency_best, tokens_best)

    def _route(self, members: np.ndarray, grid: np.ndarray, row: int) -> Route:
        """The Route of one grid row, built once and cached (routes are compared by identity)."""
        key = (len(grid[row]), row)
        route = self._routes.get(key)
        if route is None:
            chain = tuple(int(m) for m in members[row])
            route = self._routes[key] = Route(chain, tuple(int(g) for g in grid[row]), self.target)
        return route


def pass_table_from(pass_time: PassTimeFn, ladder_size: int, columns: int) -> FloatArray:
    """Tabulate a ``pass_time(model, positions)`` callable into a ``(K, columns)`` array."""
    table = np.zeros((ladder_size, columns))
    for model in range(ladder_size):
        for positions in range(1, columns):
            table[model, positions] = pass_time(model, positions)
    return table


def alpha_array(alpha: AlphaFn, ladder_size: int) -> FloatArray:
    """Tabulate an ``alpha(lower, upper)`` callable into a ``(K, K)`` array (upper triangle)."""
    matrix = np.ones((ladder_size, ladder_size))
    for lower in range(ladder_size):
        for upper in range(lower + 1, ladder_size):
            matrix[lower, upper] = alpha(lower, upper)
    return matrix
