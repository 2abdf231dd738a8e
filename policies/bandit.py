"""A bandit over chains: the approach of BanditSpec / MetaSD, as a baseline for SpecRouter.

Each arm is a fixed route -- target-only, and every chain with drafter lookahead ``W`` in
``lookaheads`` (intermediate levels verify once and hand up).  The reward of a round is
``c_min / c`` with ``c`` its pass time per committed target token and ``c_min`` the
lowest such cost seen so far, so rewards lie in ``(0, 1]``.

Arm choice is discounted UCB (Garivier & Moulines 2011): with discount ``gamma`` every
arm's pull count ``N_a`` and reward sum ``S_a`` decay by ``gamma`` per round, and the arm
maximising ``S_a / N_a + sqrt(xi * ln(sum N) / N_a)`` is played; ``gamma = 1`` is UCB1.
Unplayed arms are played first, in order.  The bandit sees nothing but its rewards: no
acceptance, timings or load -- the contrast with SpecRouter's model-based routing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from policies.contract import RoundFeedback, Route, RouteView
from policies.cost_model import enumerate_chains


class ChainBandit:
    """Discounted UCB over fixed routes (UCB1 with ``gamma = 1``)."""

    def __init__(
        self,
        *,
        lookaheads: Sequence[int] = (2, 4, 6),
        gamma: float = 0.998,
        exploration: float = 0.5,
        name: str | None = None,
    ):
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"ChainBandit gamma must be in (0, 1], got {gamma}")
        if not lookaheads or min(lookaheads) < 1:
            raise ValueError(
                f"ChainBandit lookaheads must be a non-empty list of ints >= 1, got {lookaheads}"
            )
        self.lookaheads = tuple(lookaheads)
        self.gamma = gamma
        self.exploration = exploration
        self.name = name or ("bandit-ucb1" if gamma == 1.0 else "bandit")
        self.arms: list[Route] = []
        self._index: dict[Route, int] = {}
        self._pulls = np.zeros(0)
        self._rewards = np.zeros(0)
        self._best_cost = math.inf
        self._choice: Route | None = None

    def _build(self, ladder_size: int) -> None:
        target = ladder_size - 1
        for chain in enumerate_chains(ladder_size):
            if len(chain) == 1:
                self.arms.append(Route(chain, (), target))
                continue
            for w in self.lookaheads:
                self.arms.append(Route(chain, (w,) + (1,) * (len(chain) - 2), target))
        self._index = {arm: i for i, arm in enumerate(self.arms)}
        self._pulls = np.zeros(len(self.arms))
        self._rewards = np.zeros(len(self.arms))

    def route(self, view: RouteView) -> Route:
        if not self.arms:
            self._build(view.ladder.size)
        elif self.arms[0].target != view.ladder.target:
            raise ValueError(
                f"{self.name}: built for a {self.arms[0].target + 1}-model ladder; "
                f"the view has {view.ladder.size} models"
            )
        if self._choice is None:
            self._choice = self._select()
        return self._choice

    def _select(self) -> Route:
        pulls = self._pulls
        unplayed = np.flatnonzero(pulls < 1e-12)
        if len(unplayed):
            return self.arms[int(unplayed[0])]
        total = pulls.sum()
        index = self._rewards / pulls + np.sqrt(self.exploration * math.log(max(total, 1.0)) / pulls)
        return self.arms[int(np.argmax(index))]

    def observe(self, feedback: RoundFeedback) -> None:
        arm = self._index.get(feedback.route)
        committed = feedback.levels[-1].emitted
        if arm is None or committed <= 0:
            return
        spent = sum(t.seconds for level in feedback.levels for t in level.passes)
        if not math.isfinite(spent) or spent < 0:
            return
        cost = spent / committed
        if cost < self._best_cost:
            self._best_cost = cost
        reward = self._best_cost / cost if cost > 0 else 1.0
        if self.gamma < 1.0:
            self._pulls *= self.gamma
            self._rewards *= self.gamma
        self._pulls[arm] += 1.0
        self._rewards[arm] += reward
        self._choice = None
