"""A minimal world with known truth, for unit tests and the policy's own speed benchmark,
and the tabulations that turn callables into the planner's inputs (:func:`pass_table_from`,
:func:`alpha_array`, :func:`cube_from`).

Requests are decoded one round at a time on a single simulated clock; every model call of
:mod:`policies.plan` costs ``pass_time(model, positions, batch, now)`` and every
verification accepts i.i.d. with ``alpha(lower, upper, domain, now)`` -- exactly the
process :mod:`policies.cost_model` describes, so the cost model's best route is the
true best route here.  TV samples are drawn for every pair of chain members at the
target's verified positions with mean ``1 - similarity(lower, upper)``, where the
similarity is ``alpha`` in sampling mode and ``alpha ** (1 / greedy_power)`` in greedy
mode (a non-identity ``f`` the policy must learn).

It implements :class:`policies.contract.WorldTruth`, so the oracle can run on it too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from policies.contract import (
    LadderInfo,
    LevelFeedback,
    PairTV,
    PassTiming,
    Policy,
    RoundFeedback,
    Route,
    RouteView,
)
from policies.cost_model import AlphaFn, PassTimeFn
from policies.plan import Verify, round_calls
from policies.planner import WIDTH_GRID, FloatArray, PassCube

TruthAlpha = Callable[[int, int, "str | None", float], float]
TruthTime = Callable[[int, int, int, float], float]


class RunStats(NamedTuple):
    seconds: float
    tokens: int
    rounds: int
    routes: list[Route]

    @property
    def time_per_token(self) -> float:
        return self.seconds / self.tokens


class SyntheticWorld:
    """Known acceptance and pass times; see the module docstring."""

    def __init__(
        self,
        ladder_size: int,
        alpha: TruthAlpha,
        pass_time: TruthTime,
        *,
        batch_size: int = 1,
        greedy_power: float | None = None,
        tv_noise: float = 0.1,
        domains: Sequence[str | None] = (None,),
        seed: int = 0,
    ):
        self.ladder = LadderInfo(tuple(f"M{i}" for i in range(ladder_size)))
        self._alpha = alpha
        self._pass_time = pass_time
        self.batch_size = batch_size
        self.greedy_power = greedy_power
        self.tv_noise = tv_noise
        self.domains = tuple(domains)
        self.rng = np.random.default_rng(seed)
        self.now = 0.0

    # -- WorldTruth ----------------------------------------------------------------------

    def alpha(self, lower: int, upper: int, domain: str | None, now: float) -> float:
        return self._alpha(lower, upper, domain, now)

    def pass_time(self, model: int, tokens: int, batch_size: int, now: float) -> float:
        return self._pass_time(model, tokens, batch_size, now)

    # -- driving a policy ----------------------------------------------------------------

    def similarity(self, lower: int, upper: int, domain: str | None) -> float:
        a = self.alpha(lower, upper, domain, self.now)
        return a if self.greedy_power is None else a ** (1.0 / self.greedy_power)

    def play_round(
        self,
        policy: Policy,
        request_id: int,
        generated: int,
        budget: int,
        domain: str | None,
        work_left: int | None = None,
    ) -> int:
        """Run one round of ``policy`` for a request; returns the target tokens committed.
        ``work_left``: the job's output still to go, when it is a closed set (``run``)."""
        k = self.ladder.size
        sizes = (self.batch_size,) * k
        view = RouteView(
            request_id, 64, generated, budget, domain, self.now, self.ladder, sizes, (0,) * k, 0, work_left
        )
        route = policy.route(view)
        started = self.now
        chain = route.chain
        passes: list[list[PassTiming]] = [[] for _ in chain]
        gen = round_calls(route, budget - generated)
        reply: int | None = None
        try:
            call = gen.send(None)
            while True:
                positions = call.candidates + 1 if isinstance(call, Verify) else 1
                seconds = self.pass_time(call.model, positions, self.batch_size, self.now)
                passes[call.level].append(
                    PassTiming(call.model, positions, self.batch_size, seconds, positions * self.batch_size)
                )
                self.now += seconds
                reply = self._accept(route, call, domain) if isinstance(call, Verify) else None
                call = gen.send(reply)
        except StopIteration as stop:
            counts = stop.value
        levels = tuple(
            LevelFeedback(m, counts.proposed[j], counts.accepted[j], counts.emitted[j], tuple(passes[j]))
            for j, m in enumerate(chain)
        )
        tv = self._tv_samples(chain, counts.proposed[-1], domain)
        committed = counts.emitted[-1]
        done = generated + committed >= budget
        policy.observe(RoundFeedback(request_id, domain, route, started, self.now, levels, tv, done))
        return committed

    def _accept(self, route: Route, call: Verify, domain: str | None) -> int:
        a = self.alpha(route.chain[call.level - 1], call.model, domain, self.now)
        draws = self.rng.random(call.candidates)
        rejected = np.flatnonzero(draws >= a)
        return int(rejected[0]) if len(rejected) else call.candidates

    def _tv_samples(self, chain: tuple[int, ...], positions: int, domain: str | None) -> tuple[PairTV, ...]:
        if positions == 0 or len(chain) < 2:
            return ()
        samples = []
        for i, lower in enumerate(chain[:-1]):
            for upper in chain[i + 1 :]:
                mean = 1.0 - self.similarity(lower, upper, domain)
                noise = self.rng.normal(0.0, self.tv_noise, positions)
                values = np.clip(mean + noise, 0.0, 1.0)
                samples.append(PairTV(lower, upper, tuple(float(v) for v in values)))
        return tuple(samples)

    def run(self, policy: Policy, requests: int, tokens_per_request: int = 128) -> RunStats:
        """Decode ``requests`` requests one after another (domains cycle): a closed job, so
        its views carry the work left."""
        started = self.now
        rounds = tokens = 0
        total = requests * tokens_per_request
        routes: list[Route] = []
        for rid in range(requests):
            domain = self.domains[rid % len(self.domains)]
            generated = 0
            while generated < tokens_per_request:
                left = total - tokens - generated
                committed = self.play_round(policy, rid, generated, tokens_per_request, domain, left)
                generated += committed
                rounds += 1
            tokens += generated
            routes.append(policy.route(self._peek_view(rid, domain)))
        return RunStats(self.now - started, tokens, rounds, routes)

    def _peek_view(self, request_id: int, domain: str | None) -> RouteView:
        k = self.ladder.size
        return RouteView(
            request_id, 64, 0, 128, domain, self.now, self.ladder, (self.batch_size,) * k, (0,) * k
        )


def matrix_alpha(matrix: Sequence[Sequence[float]]) -> TruthAlpha:
    return lambda lower, upper, _domain, _now: matrix[lower][upper]


def linear_pass_time(decode: Sequence[float], per_position: Sequence[float]) -> TruthTime:
    """``decode[m] + per_position[m] * (positions * batch - 1)``: a memory floor plus compute."""
    return lambda model, tokens, batch, _now: decode[model] + per_position[model] * (tokens * batch - 1)


# Planner inputs from callables (tests; the oracle tabulates its truth itself).


def cube_from(pass_time: Callable[[int, int, float], float], ladder_size: int, columns: int) -> PassCube:
    """Tabulate ``pass_time(model, positions, width)`` on the planner's width grid."""
    seconds = np.zeros((ladder_size, len(WIDTH_GRID), columns))
    for model in range(ladder_size):
        for w, width in enumerate(WIDTH_GRID):
            for n in range(1, columns):
                seconds[model, w, n] = pass_time(model, n, float(width))
    return PassCube(seconds)


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
