"""Predicted time per target token of a route (docs/design.md §1, "Cost model").

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

**The system objective** (:func:`estimate_system`).  ``T_eff`` prices a round as if the
request ran alone.  In a continuous batch it does not: each call joins a pass of ``b_m``
sequences on model ``m``, whose time ``V_m(n, b_m)`` grows with the positions the whole
batch feeds (``n b_m``: memory-bound while that is small, compute-bound beyond), and
``R`` requests in flight compete for the same devices.  With ``P_m`` the expected time of
model ``m``'s passes in one round (read at width ``b_m``) and ``d(m)`` its device:

* latency of a round: ``L = sum_m P_m`` (plus waits the caller adds);
* device ``d`` is busy ``B_d = sum_{m: d(m) = d} P_m / b_m`` per round of one request (a
  pass serves ``b_m`` sequences), so ``R`` requests cannot complete rounds faster than one
  per ``R max_d B_d``;
* ``T_sys = max(L, R B + lambda (L - B)) / E[n_N]`` with ``B = max_d B_d``: time per
  committed token of one request, latency-bound while the devices keep up,
  throughput-bound (the bottleneck device's committed tokens per second) under backlog.
  ``lambda = 0.1`` lets a round's own latency show through a backlog (a bottleneck is
  never busy 100% of the time under bursty arrivals), and breaks the tie between routes
  that load the bottleneck equally: drafting elsewhere is not free.

**Widths and load follow the route** (:func:`solve_widths`).  The width a call joins depends on the
route everybody runs: plain decoding gathers every request at the target, speculation
spreads them over the chain.  By Little's law, stage ``m`` holds ``R P_m / L`` of the ``R``
requests, so ``b_m = min(cap_m, max(1, R P_m / L))`` with ``cap_m`` the widest batch the
model runs; ``P_m`` depends on ``b_m``, so the widths are found by a few fixed-point steps
from the widths observed.  While no cap binds this gives ``R B = L`` (no queue: the
devices keep up by batching wider); a capped bottleneck gives ``R B > L``, a queue.
``R`` itself follows the route: requests stay ``N T_sys`` for ``N`` tokens, so with
``Lambda`` committed tokens per second (measured) Little's law gives ``R = Lambda T_sys``,
capped by the admission limit.  A route that cannot keep up runs at the cap (saturated);
one that drains the backlog is priced at the smaller ``R`` it leads to -- without this a
router stuck in a backlog its speculation caused prices plain decoding at that backlog.

With ``b_m = 1`` and ``R = 1``, ``B <= L`` so ``B + lambda (L - B) <= L`` and
``T_sys = T_eff`` exactly: the per-request cost model is the batch-1 special case.
Under load a verify over ``k + 1`` positions costs ``V(n b)`` at a compute-bound width,
so long lookaheads lose and target-only wins (the vLLM finding) -- no special case.
"""

from __future__ import annotations

import math
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


class RoundParts(NamedTuple):
    """A round's expectation split by chain level: ``level_time[j]`` is E[time of chain[j]'s passes]."""

    level_time: tuple[float, ...]
    tokens: float

    @property
    def latency(self) -> float:
        return sum(self.level_time)


def estimate_round_parts(route: Route, alpha: AlphaFn, pass_time: PassTimeFn) -> RoundParts:
    """:func:`estimate_round` with the latency split into each level's pass time."""
    chain, lookaheads = route.chain, route.lookaheads
    if route.is_target_only:
        return RoundParts((pass_time(chain[0], 1),), 1.0)
    drafted = lookaheads[0]
    pmf: Pmf = [0.0] * drafted + [1.0]
    parts = [drafted * pass_time(chain[0], 1)]
    for level in range(1, len(chain)):
        lower, upper = chain[level - 1], chain[level]
        step, verify_time = _verify_step(pmf, alpha(lower, upper), upper, pass_time)
        parts.append(verify_time)
        if level == len(chain) - 1:
            return RoundParts(tuple(parts), sum(k * p for k, p in enumerate(step)))
        pmf, steps = _collect_until(step, lookaheads[level])
        parts = [steps * part for part in parts]  # the sub-round below repeats `steps` times
    raise AssertionError("unreachable: the loop returns at the target level")


class SystemLoad(NamedTuple):
    """The batch a round joins: per model the pass width ``b_m``, and ``R`` requests in flight.

    ``devices[m]`` names the device model ``m`` runs on (models on one device share its
    time); ``None`` means every model has its own.  ``caps[m]`` is the widest batch model
    ``m`` runs (``None``: no cap); ``iterations`` the fixed-point steps of
    :func:`solve_widths` (0: the widths are taken as given).  With a ``token_rate``
    ``Lambda`` the requests in flight follow the route too (Little's law over the whole
    system: ``R = Lambda T_sys``, at most ``max_in_flight``).
    """

    batch_sizes: tuple[float, ...]
    in_flight: float = 1.0
    devices: tuple[int, ...] | None = None
    caps: tuple[float, ...] | None = None
    iterations: int = 0
    token_rate: float = 0.0  # Lambda: committed tokens per second, all requests (0: R as given)
    max_in_flight: float = math.inf  # the most requests that can decode at once (admission)
    min_in_flight: float = 1.0  # sequences in the batches that are not ours (other tenants)


BATCH_ONE = SystemLoad(())  # an empty width tuple reads as b_m = 1 for every model

BatchPassTimeFn = Callable[[int, int, float], float]  # (model, positions per sequence, batch width)


class SystemEstimate(NamedTuple):
    latency: float  # L: expected wall time of one round of this request
    tokens: float  # E[n_N]
    bottleneck_busy: float  # max_d B_d: the busiest device's time per round of one request
    in_flight: float  # R

    @property
    def t_sys(self) -> float:
        return system_time(self.latency, self.bottleneck_busy, self.in_flight) / self.tokens


LATENCY_SHOW_THROUGH = 0.1  # lambda of the module docstring


def system_time(latency: float, bottleneck_busy: float, in_flight: float) -> float:
    """Seconds per round of one request: ``max(L, R B + lambda (L - B))``."""
    backlog = in_flight * bottleneck_busy + LATENCY_SHOW_THROUGH * (latency - bottleneck_busy)
    return max(latency, backlog)


def width(load: SystemLoad, model: int) -> float:
    return max(load.batch_sizes[model], 1.0) if model < len(load.batch_sizes) else 1.0


def stages_overlap(devices: Sequence[int] | None) -> bool:
    """Do the ladder's models run passes at the same time (more than one device)?

    Only then do the requests spread over a chain's stages by Little's law
    (:func:`solve_widths`).  On one device one pass runs at a time (the lockstep serving loop
    of both worlds): a request waits at its model while the device serves the others, and
    the next pass of that model takes every request waiting there, so the widths stay what
    the passes experience (about ``R`` each), not ``R P_m / L``.  ``None`` (placement not
    known) reads as separate devices.
    """
    return devices is None or len(set(devices)) > 1


def little_width(in_flight: float, stage_time: float, round_time: float, cap: float) -> float:
    """Requests at one stage by Little's law, ``R P_m / L``, within ``[1, cap]``."""
    share = in_flight * stage_time / round_time if round_time > 0 else 1.0
    return min(max(share, 1.0), max(cap, 1.0))


def solve_widths(
    route: Route, alpha: AlphaFn, pass_time: BatchPassTimeFn, load: SystemLoad, wait: float = 0.0
) -> dict[int, float]:
    """Pass width of every chain member under ``route`` (module docstring, "widths")."""
    return solve_load(route, alpha, pass_time, load, wait)[0]


def solve_load(
    route: Route, alpha: AlphaFn, pass_time: BatchPassTimeFn, load: SystemLoad, wait: float = 0.0
) -> tuple[dict[int, float], float]:
    """Widths of the chain members and requests in flight under ``route`` (fixed point)."""
    widths = {m: width(load, m) for m in route.chain}
    in_flight = max(load.in_flight, 1.0)
    for _ in range(load.iterations):
        parts = estimate_round_parts(route, alpha, _at_widths(pass_time, widths))
        round_time = parts.latency + wait
        if load.token_rate > 0:
            busy = max(seconds / widths[m] for m, seconds in zip(route.chain, parts.level_time))
            if load.devices is not None:
                busy = _device_busy(route, parts.level_time, widths, load.devices)
            cost = system_time(round_time, busy, in_flight) / parts.tokens
            in_flight = min(
                max(load.token_rate * cost, load.min_in_flight, 1.0), max(load.max_in_flight, 1.0)
            )
        foreign = max(load.min_in_flight, 1.0) - 1.0  # other tenants' sequences sit in every batch
        widths = {
            m: foreign
            + little_width(in_flight - foreign, seconds, round_time, load.caps[m] if load.caps else math.inf)
            for m, seconds in zip(route.chain, parts.level_time)
        }
        if load.caps:
            widths = {m: min(b, max(load.caps[m], 1.0)) for m, b in widths.items()}
    return widths, in_flight


def _at_widths(pass_time: BatchPassTimeFn, widths: dict[int, float]) -> PassTimeFn:
    return lambda model, positions: pass_time(model, positions, widths[model])


def _device_busy(
    route: Route, level_time: Sequence[float], widths: dict[int, float], devices: Sequence[int]
) -> float:
    busy: dict[int, float] = {}
    for model, seconds in zip(route.chain, level_time):
        busy[devices[model]] = busy.get(devices[model], 0.0) + seconds / widths[model]
    return max(busy.values())


def estimate_system(
    route: Route, alpha: AlphaFn, pass_time: BatchPassTimeFn, load: SystemLoad = BATCH_ONE, wait: float = 0.0
) -> SystemEstimate:
    """The round priced in the batch it joins (module docstring, "system objective").

    ``wait`` is time per round spent between passes (queues the caller measured); it adds
    to the latency, not to any device's busy time.
    """
    widths, in_flight = solve_load(route, alpha, pass_time, load, wait)
    parts = estimate_round_parts(route, alpha, _at_widths(pass_time, widths))
    devices = load.devices if load.devices is not None else range(max(route.chain) + 1)
    busy = _device_busy(route, parts.level_time, widths, devices)
    return SystemEstimate(parts.latency + wait, parts.tokens, busy, in_flight)


def t_sys(route: Route, alpha: AlphaFn, pass_time: BatchPassTimeFn, load: SystemLoad = BATCH_ONE) -> float:
    """Predicted time per committed token of ``route`` in the batch ``load`` describes."""
    return estimate_system(route, alpha, pass_time, load).t_sys


def t_eff(route: Route, alpha: AlphaFn, pass_time: PassTimeFn) -> float:
    """Predicted time per target token of ``route`` (lower is better)."""
    return estimate_round(route, alpha, pass_time).t_eff


def leviathan_speedup(alpha: float, gamma: int, cost_ratio: float) -> float:
    """Leviathan et al. (2023), Theorem 3.8: expected walltime improvement factor.

    ``(1 - alpha^{gamma+1}) / ((1 - alpha) (gamma c + 1))``.  The expected tokens per round,
    ``(1 - alpha^{gamma+1}) / (1 - alpha)``, is summed as ``1 + alpha + ... + alpha^gamma``:
    the closed form cancels catastrophically near ``alpha = 1`` (off by 1e-12 relative at
    ``alpha = 0.99999``) and needs a special case at 1, the sum neither.
    """
    tokens = math.fsum(alpha**k for k in range(gamma + 1))
    return tokens / (gamma * cost_ratio + 1.0)


def constant_pass_time(per_model: Sequence[float]) -> PassTimeFn:
    """A ``pass_time`` where a pass costs the same however many positions it feeds."""
    return lambda model, _tokens: per_model[model]
