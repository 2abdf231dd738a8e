"""SpecRouter: adaptive chain routing learned from round feedback (DESIGN.md §1).

Per round the policy answers from a cache; the work happens at re-plan time.

* **Profiling.** :class:`~policies.estimators.PassTimeProfile` learns every model's pass
  time ``V_j(n, b)`` from the :class:`PassTiming` records (global: latency does not
  depend on a request's domain).
* **Similarity and acceptance.** Per domain (or globally when views carry no tag),
  :class:`~policies.estimators.PairStats` keeps, for every ordered pair, the similarity
  ``1 - TV`` and discounted acceptance counts.  The acceptance the planner uses for a
  pair blends what was observed directly with what its similarity implies:

  ``alpha = (T a_obs + kappa W f(sim) + n0 a0) / (T + kappa W + n0)``

  with ``T`` discounted trials, ``W`` discounted TV samples, ``f`` the
  :class:`~policies.estimators.AcceptanceMap`, ``a0``/``n0`` a weak prior.
* **Exploration.** An optimism bonus ``c / sqrt(1 + n_eff)`` is added to each pair,
  where ``n_eff`` is its evidence decayed by how long ago it was last observed, so pairs
  nobody routes through slowly look attractive again and get re-measured.
* **Selection.** :class:`~policies.planner.RoutePlanner` scores every chain and its
  lookahead grid by ``T_eff`` at the current batch sizes (load awareness: a verify pass
  over ``n`` positions at batch ``b`` costs ``V(n b)``; under saturation that grows with
  ``n`` and target-only wins).  Hysteresis: the current chain is kept while its best
  ``T_eff`` is within ``hysteresis`` of the best chain's.
* **When to re-plan.** Plans are cached per domain and batch-size octave.  They are
  recomputed (a) every ``replan_every`` rounds of a domain, and (b) when the realised
  time per target token of the chosen route -- the sum of its pass times over its
  committed tokens, EMA'd -- leaves the prediction by more than ``surprise`` (a shift in
  acceptance or a slowdown), at most once per ``min_replan_gap`` rounds.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from policies.contract import LadderInfo, RoundFeedback, Route, RouteView
from policies.cost_model import estimate_round
from policies.estimators import AcceptanceMap, PairStats, PassTimeProfile, acceptance_trials
from policies.planner import RoutePlanner


class _Plan(NamedTuple):
    route: Route
    t_eff: float
    version: int


class _DomainState:
    """Everything SpecRouter keeps per domain tag."""

    def __init__(self, ladder_size: int, pair_rate: float):
        self.pairs = PairStats(ladder_size, pair_rate)
        self.version = 0  # bumped to invalidate every cached plan of this domain
        self.plans: dict[tuple[int, ...], _Plan] = {}  # raw batch sizes -> plan
        self.bucket_plans: dict[tuple[int, ...], _Plan] = {}  # batch octaves -> plan
        self.chain: tuple[int, ...] | None = None  # last chosen chain (hysteresis)
        self.planned_at = 0
        self.watch_route: Route | None = None  # route the surprise detector follows
        self.watch_prediction = 0.0
        self.watch_time = 0.0  # EMA of pass seconds per round of watch_route
        self.watch_tokens = 0.0  # EMA of committed tokens per round of watch_route


class SpecRouter:
    """The adaptive router.  See the module docstring for the model it learns.

    ``acceptance`` -- ``"sampling"`` (``f`` is the identity) or ``"fitted"`` (learn ``f``
    online; the right choice for greedy decoding, harmless for sampling).
    """

    name = "specrouter"

    def __init__(
        self,
        *,
        acceptance: str = "fitted",
        max_lookahead: int = 8,
        grid_rows: int = 64,
        hysteresis: float = 0.03,
        optimism: float = 0.5,
        prior_alpha: float = 0.5,
        prior_strength: float = 2.0,
        similarity_weight: float = 0.5,
        stale_rate: float = 0.001,
        time_rate: float = 0.05,
        pair_rate: float = 0.02,
        surprise: float = 0.15,
        watch_rate: float = 0.05,
        replan_every: int = 2048,
        min_replan_gap: int = 24,
        per_domain: bool = True,
        name: str | None = None,
    ):
        if not 0.0 <= prior_alpha <= 1.0:
            raise ValueError(f"SpecRouter prior_alpha must be in [0, 1], got {prior_alpha}")
        if replan_every < 1 or min_replan_gap < 1:
            raise ValueError("SpecRouter replan_every and min_replan_gap must be >= 1")
        self.acceptance_map = AcceptanceMap("sampling" if acceptance == "sampling" else "fitted")
        if acceptance not in ("sampling", "fitted"):
            raise ValueError(f"SpecRouter acceptance must be 'sampling' or 'fitted', got {acceptance!r}")
        self.max_lookahead = max_lookahead
        self.grid_rows = grid_rows
        self.hysteresis = hysteresis
        self.optimism = optimism
        self.prior_alpha = prior_alpha
        self.prior_strength = prior_strength
        self.similarity_weight = similarity_weight
        self.stale_keep = 1.0 - stale_rate
        self.time_rate = time_rate
        self.pair_rate = pair_rate
        self.surprise = surprise
        self.watch_rate = watch_rate
        self.replan_every = replan_every
        self.min_replan_gap = min_replan_gap
        self.per_domain = per_domain
        if name:
            self.name = name
        self.ladder: LadderInfo | None = None
        self.planner: RoutePlanner | None = None
        self.profile: PassTimeProfile | None = None
        self._domains: dict[str | None, _DomainState] = {}
        self.replans = 0

    # -- the contract --------------------------------------------------------------------

    def route(self, view: RouteView) -> Route:
        state = self._domains.get(view.domain if self.per_domain else None)
        if state is None:
            state = self._domain(view.domain, view.ladder)
        plan = state.plans.get(view.batch_sizes)
        if plan is None or plan.version != state.version:
            plan = self._plan_for(state, view.batch_sizes)
        return plan.route

    def observe(self, feedback: RoundFeedback) -> None:
        state = self._domains.get(feedback.domain if self.per_domain else None)
        profile = self.profile
        if state is None or profile is None:
            return  # a round this policy never routed
        pairs = state.pairs
        pairs.rounds += 1
        route = feedback.route
        chain = route.chain
        levels = feedback.levels
        spent = 0.0
        update = profile.update
        for level in levels:
            for timing in level.passes:
                update(timing.model, timing.tokens, timing.batch_size, timing.seconds)
                spent += timing.seconds
        fmap = self.acceptance_map
        size = pairs.ladder_size
        for j in range(1, len(levels)):
            level = levels[j]
            if level.proposed:
                lower = chain[j - 1]
                trials = acceptance_trials(level.proposed, level.accepted, level.emitted)
                pairs.add_acceptance(lower, chain[j], level.accepted, trials)
                if fmap.mode == "fitted" and trials:
                    key = lower * size + chain[j]
                    if pairs.similarity_weight[key] > 0:
                        fmap.add(pairs.similarity[key], level.accepted / trials, trials)
        for sample in feedback.tv:
            pairs.add_tv(sample.lower, sample.upper, sample.values)
        self._watch(state, route, spent, levels[-1].emitted)

    # -- internals -----------------------------------------------------------------------

    def _domain(self, domain: str | None, ladder: LadderInfo) -> _DomainState:
        if self.ladder is None:
            self.ladder = ladder
            self.planner = RoutePlanner(ladder.size, self.max_lookahead, self.grid_rows)
            self.profile = PassTimeProfile(ladder.size, self.time_rate, ladder.params)
        elif ladder.size != self.ladder.size:
            raise ValueError(
                f"{self.name}: view has a {ladder.size}-model ladder but this policy was built "
                f"for {self.ladder.size} models ({', '.join(self.ladder.names)})"
            )
        state = _DomainState(ladder.size, self.pair_rate)
        self._domains[domain if self.per_domain else None] = state
        return state

    def _watch(self, state: _DomainState, route: Route, spent: float, committed: int) -> None:
        """Surprise detector: realised pass time per committed token vs the prediction."""
        since = state.pairs.rounds - state.planned_at
        if since >= self.replan_every:
            state.version += 1
            return
        if route is not state.watch_route:
            return
        r = self.watch_rate
        state.watch_time += r * (spent - state.watch_time)
        state.watch_tokens += r * (committed - state.watch_tokens)
        if since >= self.min_replan_gap and state.watch_tokens > 0:
            ratio = state.watch_time / (state.watch_tokens * state.watch_prediction)
            if not (1.0 - self.surprise) <= ratio <= (1.0 + self.surprise):
                state.version += 1

    def alpha_matrix(self, state: _DomainState, optimism: float | None = None) -> np.ndarray:
        """Planning acceptance of every pair: blended estimate plus the optimism bonus."""
        pairs = state.pairs
        size = pairs.ladder_size
        bonus_scale = self.optimism if optimism is None else optimism
        fmap = self.acceptance_map
        alpha = np.ones((size, size))
        for lower in range(size):
            for upper in range(lower + 1, size):
                key = lower * size + upper
                trials = pairs.trials[key]
                tv_weight = self.similarity_weight * pairs.similarity_weight[key]
                evidence = trials + tv_weight + self.prior_strength
                estimate = (
                    pairs.accepted[key]
                    + (tv_weight * fmap(pairs.similarity[key]) if tv_weight else 0.0)
                    + self.prior_strength * self.prior_alpha
                ) / evidence
                fresh = (trials + tv_weight) * self.stale_keep ** pairs.staleness(lower, upper)
                bonus = bonus_scale / math.sqrt(1.0 + fresh)
                alpha[lower, upper] = min(1.0, estimate + bonus)
        return alpha

    def _plan_for(self, state: _DomainState, batch_sizes: tuple[int, ...]) -> _Plan:
        if state.plans and state.plans[next(iter(state.plans))].version != state.version:
            state.plans.clear()
            state.bucket_plans.clear()
        octaves = tuple(max(int(b), 1).bit_length() for b in batch_sizes)
        plan = state.bucket_plans.get(octaves)
        if plan is None or plan.version != state.version:
            plan = self._replan(state, batch_sizes)
            state.bucket_plans[octaves] = plan
        state.plans[batch_sizes] = plan
        return plan

    def _replan(self, state: _DomainState, batch_sizes: tuple[int, ...]) -> _Plan:
        assert self.planner is not None and self.profile is not None
        self.replans += 1
        self.acceptance_map.refit()
        sizes = tuple(batch_sizes) + (1,) * (self.planner.ladder_size - len(batch_sizes))
        table = self.profile.table(sizes, self.planner.columns)
        plans = self.planner.plan_chains(self.alpha_matrix(state), table)
        best = min(plans, key=lambda p: p.t_eff)
        if state.chain is not None and state.chain != best.route.chain:
            kept = next(p for p in plans if p.route.chain == state.chain)
            if kept.t_eff <= best.t_eff * (1.0 + self.hysteresis):
                best = kept
        # The detector compares against the estimate without the optimism bonus.
        honest = self.alpha_matrix(state, optimism=0.0)
        expected = estimate_round(
            best.route, lambda i, j: float(honest[i, j]), lambda m, n: float(table[m, n])
        )
        state.watch_route = best.route
        state.watch_prediction = expected.t_eff if math.isfinite(expected.t_eff) else 1.0
        state.watch_time = expected.latency
        state.watch_tokens = expected.tokens
        state.chain = best.route.chain
        state.planned_at = state.pairs.rounds
        return _Plan(best.route, best.t_eff, state.version)
