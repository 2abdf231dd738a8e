"""The vectorised planner computes exactly what policies.cost_model computes, route by route."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.contract import Route
from policies.cost_model import estimate_round
from policies.planner import RoutePlanner, evaluate_routes, lookahead_grid
from policies.synthetic import alpha_array, pass_table_from


def random_world(k: int, seed: int) -> tuple[np.ndarray, np.ndarray, RoutePlanner]:
    rng = np.random.default_rng(seed)
    planner = RoutePlanner(k)
    alpha = rng.uniform(0.0, 1.0, (k, k))
    alpha[rng.random((k, k)) < 0.15] = 0.0
    alpha[rng.random((k, k)) < 0.15] = 1.0
    base = np.sort(rng.uniform(1e-4, 1.0, k))
    slope = rng.uniform(0.0, 0.3, k)
    table = pass_table_from(lambda m, n: base[m] * (1.0 + slope[m] * (n - 1)), k, planner.columns)
    return alpha, table, planner


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_every_planned_route_matches_estimate_round(k: int, seed: int) -> None:
    alpha, table, planner = random_world(k, seed)
    for members, grid, _ in planner._groups:
        latency, tokens = evaluate_routes(members, grid, alpha, table)
        for row in range(0, len(grid), max(1, len(grid) // 12)):
            route = Route(tuple(int(m) for m in members[row]), tuple(int(g) for g in grid[row]), k - 1)
            expected = estimate_round(route, lambda i, j: alpha[i, j], lambda m, n: table[m, n])
            assert math.isclose(latency[row], expected.latency, rel_tol=1e-9)
            assert math.isclose(tokens[row], expected.tokens, rel_tol=1e-9)


@settings(max_examples=15, deadline=None)
@given(k=st.integers(2, 4), seed=st.integers(0, 10_000))
def test_plan_is_the_minimum_over_its_grid_and_chain_plans_agree(k: int, seed: int) -> None:
    alpha, table, planner = random_world(k, seed)
    best = planner.plan(alpha, table)
    per_chain = planner.plan_chains(alpha, table)
    assert len(per_chain) == 2 ** (k - 1)
    assert math.isclose(best.t_eff, min(p.t_eff for p in per_chain), rel_tol=1e-12)
    brute = min(
        estimate_round(
            Route(chain, tuple(int(g) for g in la), k - 1), lambda i, j: alpha[i, j], lambda m, n: table[m, n]
        ).t_eff
        for chain, grid in zip(planner.chains, [lookahead_grid(len(c) - 1, 8, 64) for c in planner.chains])
        for la in grid
    )
    assert math.isclose(best.t_eff, brute, rel_tol=1e-9)


def test_grid_sizes_follow_the_row_budget() -> None:
    assert lookahead_grid(0, 8, 64).shape == (1, 0)
    assert lookahead_grid(1, 8, 64).shape == (8, 1)
    assert lookahead_grid(2, 8, 64).shape == (64, 2)  # full 8 x 8 on 3-level chains
    assert lookahead_grid(3, 8, 64).max(axis=0).tolist() == [8, 2, 2]
    planner = RoutePlanner(5)
    assert len(planner.chains) == 16 and planner.route_count == 1 + 4 * 8 + 6 * 64 + 4 * 32 + 64


def test_zero_acceptance_everywhere_picks_target_only() -> None:
    planner = RoutePlanner(4)
    table = pass_table_from(lambda m, n: [0.1, 0.3, 1.0, 4.0][m], 4, planner.columns)
    assert planner.plan(np.zeros((4, 4)), table).route.is_target_only


def test_alpha_array_reads_the_upper_triangle() -> None:
    matrix = alpha_array(lambda i, j: 0.1 * i + 0.01 * j, 3)
    assert math.isclose(matrix[0, 2], 0.02) and math.isclose(matrix[1, 2], 0.12) and matrix[2, 0] == 1.0
