"""Predicted time per target token of a route (DESIGN.md §1, "Cost model").

Notation for a chain ``C = (M_1 .. M_N)`` with per-pair acceptance ``alpha_j`` between
``M_{j-1}`` and ``M_j``:

* the drafter emits ``n_1 = W`` tokens at ``W`` one-token passes;
* level ``j`` scores the ``n_{j-1}`` tokens of the level below in one pass of
  ``n_{j-1} + 1`` positions (the pending last committed token plus the candidates),
  accepts a prefix ``A`` with ``P(A = a) = alpha^a (1 - alpha)`` for ``a < n``,
  ``P(A = n) = alpha^n``, and emits ``A + 1`` tokens, so
  ``E[n_j | n_{j-1}] = (1 - alpha^{n_{j-1}+1}) / (1 - alpha)``;
* ``L(C) = W * V_1(1) + sum_{j>=2} V_j(n_{j-1} + 1)`` and ``T_eff(C) = E[L] / E[n_N]``.

``V_j(n)`` is the *measured* time for ``M_j`` to run a pass feeding ``n`` positions
(``pass_time(model, n)``); nothing assumes a verification pass costs a one-token decode.

Two refinements over the plain formula, both exact for the process :mod:`policies.plan`
executes under i.i.d. acceptance:

1. For ``N >= 3`` the count ``n_{j-1}`` reaching level ``j`` is random.  Plugging its
   mean into the concave ``(1 - alpha^{n+1}) / (1 - alpha)`` overstates the tokens per
   round (Jensen), so we propagate the whole distribution of emitted counts level by
   level.  For ``N = 2`` the count is the constant ``W`` and the result is Leviathan et
   al.'s Theorem 3.8 exactly.
2. Intermediate lookaheads ``g_j > 1`` (a level that collects ``g_j`` tokens over
   several sub-rounds before handing them up) are handled by a small renewal recursion
   over "tokens collected so far".

``T_eff`` is then the renewal-reward rate: long-run time per committed target token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import combinations
from typing import NamedTuple

from policies.contract import Route

AlphaFn = Callable[[int, int], float]
PassTimeFn = Callable[[int, int], float]
Pmf = list[float]  # pmf[k] = P(count == k)


class RoundEstimate(NamedTuple):
    latency: float  # E[L]: expected wall time of one round
    tokens: float  # E[n_N]: expected target tokens committed per round

    @property
    def t_eff(self) -> float:
        return self.latency / self.tokens


def enumerate_chains(ladder_size: int) -> list[tuple[int, ...]]:
    """All ``2^(K-1)`` chains of a K-model ladder: subsets of the drafts plus the target."""
    if ladder_size < 1:
        raise ValueError(f"a ladder needs at least one model, got size {ladder_size}")
    target = ladder_size - 1
    chains: list[tuple[int, ...]] = []
    for size in range(ladder_size):
        for drafts in combinations(range(target), size):
            chains.append((*drafts, target))
    return chains


def enumerate_routes(ladder_size: int, max_lookahead: int) -> Iterator[Route]:
    """Every chain with every lookahead in ``1..max_lookahead`` per non-target level."""
    target = ladder_size - 1
    for chain in enumerate_chains(ladder_size):
        yield from (Route(chain, la, target) for la in _lookahead_grid(len(chain) - 1, max_lookahead))


def _lookahead_grid(levels: int, max_lookahead: int) -> Iterator[tuple[int, ...]]:
    if levels == 0:
        yield ()
        return
    for head in range(1, max_lookahead + 1):
        for tail in _lookahead_grid(levels - 1, max_lookahead):
            yield (head, *tail)


def accepted_emission_pmf(candidates: int, alpha: float) -> Pmf:
    """pmf of tokens a verifier emits after scoring ``candidates`` tokens (index = count).

    ``A`` accepted then one correction or bonus token: ``P(A + 1 = k)`` for ``k = 1..n+1``.
    Written without division so ``alpha`` in ``{0, 1}`` is exact.
    """
    pmf = [0.0] * (candidates + 2)
    reach = 1.0  # alpha^a: probability the first a candidates were accepted
    for a in range(candidates):
        pmf[a + 1] = reach * (1.0 - alpha)
        reach *= alpha
    pmf[candidates + 1] = reach
    return pmf


def _verify_step(below: Pmf, alpha: float, model: int, pass_time: PassTimeFn) -> tuple[Pmf, float]:
    """Emission pmf and expected verify-pass time of one Verify on ``below`` candidates."""
    out = [0.0] * (len(below) + 1)
    verify_time = 0.0
    for n, p_n in enumerate(below):
        if p_n == 0.0:
            continue
        verify_time += p_n * pass_time(model, n + 1)
        for k, p_k in enumerate(accepted_emission_pmf(n, alpha)):
            out[k] += p_n * p_k
    return out, verify_time


def _collect_until(step: Pmf, goal: int) -> tuple[Pmf, float]:
    """Repeat a step with emission pmf ``step`` until >= ``goal`` tokens are collected.

    Returns the pmf of the total collected and the expected number of steps.
    """
    visit = [0.0] * goal  # probability the running total ever equals s (< goal)
    visit[0] = 1.0
    total = [0.0] * (goal + len(step))
    for s in range(goal):
        if visit[s] == 0.0:
            continue
        for k, p_k in enumerate(step):
            if p_k == 0.0:
                continue
            if s + k < goal:
                visit[s + k] += visit[s] * p_k
            else:
                total[s + k] += visit[s] * p_k
    return total, sum(visit)


def estimate_round(route: Route, alpha: AlphaFn, pass_time: PassTimeFn) -> RoundEstimate:
    """Expected latency and committed tokens of one round of ``route``."""
    chain, lookaheads = route.chain, route.lookaheads
    if route.is_target_only:
        return RoundEstimate(pass_time(chain[0], 1), 1.0)
    drafted = lookaheads[0]
    pmf: Pmf = [0.0] * drafted + [1.0]
    latency = drafted * pass_time(chain[0], 1)
    for level in range(1, len(chain)):
        lower, upper = chain[level - 1], chain[level]
        step, verify_time = _verify_step(pmf, alpha(lower, upper), upper, pass_time)
        step_latency = latency + verify_time
        if level == len(chain) - 1:
            tokens = sum(k * p for k, p in enumerate(step))
            return RoundEstimate(step_latency, tokens)
        pmf, steps = _collect_until(step, lookaheads[level])
        latency = steps * step_latency
    raise AssertionError("unreachable: the loop returns at the target level")


def t_eff(route: Route, alpha: AlphaFn, pass_time: PassTimeFn) -> float:
    """Predicted time per target token of ``route`` (lower is better)."""
    return estimate_round(route, alpha, pass_time).t_eff


def leviathan_speedup(alpha: float, gamma: int, cost_ratio: float) -> float:
    """Leviathan et al. (2023), Theorem 3.8: expected walltime improvement factor.

    ``(1 - alpha^{gamma+1}) / ((1 - alpha) (gamma c + 1))``; the ``alpha = 1`` limit is
    ``(gamma + 1) / (gamma c + 1)``.
    """
    tokens = gamma + 1.0 if alpha == 1.0 else (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)
    return tokens / (gamma * cost_ratio + 1.0)


def constant_pass_time(per_model: Sequence[float]) -> PassTimeFn:
    """A ``pass_time`` where a pass costs the same however many positions it feeds."""
    return lambda model, _tokens: per_model[model]


def alpha_from_matrix(matrix: Sequence[Sequence[float]]) -> AlphaFn:
    """An ``alpha`` callable reading ``matrix[lower][upper]``."""
    return lambda lower, upper: matrix[lower][upper]
