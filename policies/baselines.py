"""Baseline routing policies: what SpecRouter has to beat.

* :class:`TargetOnly` -- plain autoregressive decoding on the target.
* :class:`StaticChain` -- one fixed chain and fixed lookaheads for every round.
* :class:`DynamicLookahead` -- two-level speculation with the heuristic Hugging Face
  assisted generation uses for ``num_assistant_tokens_schedule="heuristic"``: after a
  round in which every draft was accepted the lookahead grows by 2, otherwise it shrinks
  by 1, never below 1.  State is per request, as it is per ``generate`` call there.
"""

from __future__ import annotations

from policies.contract import RoundFeedback, Route, RouteView


class TargetOnly:
    """Every round is one target decode step."""

    name = "target-only"

    def __init__(self) -> None:
        self._route: Route | None = None

    def route(self, view: RouteView) -> Route:
        route = self._route
        if route is None or route.target != view.ladder.target:
            route = self._route = Route.target_only(view.ladder.target)
        return route

    def observe(self, feedback: RoundFeedback) -> None:
        return None


class StaticChain:
    """The same chain and lookaheads for every round (ladder indices, target last)."""

    def __init__(self, chain: tuple[int, ...], lookaheads: tuple[int, ...], name: str | None = None):
        self._route = Route(tuple(chain), tuple(lookaheads), chain[-1])
        self.name = name or f"static:{self._route}"

    def route(self, view: RouteView) -> Route:
        if self._route.target != view.ladder.target:
            raise ValueError(
                f"{self.name}: chain ends at model {self._route.target} but the ladder's "
                f"target is model {view.ladder.target} ({view.ladder.size} models)"
            )
        return self._route

    def observe(self, feedback: RoundFeedback) -> None:
        return None


class DynamicLookahead:
    """Two levels (``drafter`` -> target) with Hugging Face's lookahead heuristic."""

    def __init__(self, drafter: int = 0, initial: int = 5, maximum: int = 32, name: str | None = None):
        if drafter < 0:
            raise ValueError(f"DynamicLookahead drafter must be a ladder index >= 0, got {drafter}")
        if initial < 1 or maximum < initial:
            raise ValueError(f"DynamicLookahead needs 1 <= initial <= maximum, got {initial}, {maximum}")
        self.drafter = drafter
        self.initial = initial
        self.maximum = maximum
        self.name = name or f"dynamic-lookahead:M{drafter}"
        self._lookahead: dict[int, int] = {}
        self._routes: dict[tuple[int, int], Route] = {}

    def lookahead(self, request_id: int) -> int:
        return self._lookahead.get(request_id, self.initial)

    def route(self, view: RouteView) -> Route:
        gamma = self._lookahead.get(view.request_id, self.initial)
        key = (gamma, view.ladder.target)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = Route(
                (self.drafter, view.ladder.target), (gamma,), view.ladder.target
            )
        return route

    def observe(self, feedback: RoundFeedback) -> None:
        rid = feedback.request_id
        if feedback.request_done:
            self._lookahead.pop(rid, None)
            return
        if len(feedback.route.chain) != 2:
            return
        gamma = self._lookahead.get(rid, self.initial)
        verifier = feedback.levels[-1]
        all_accepted = verifier.proposed > 0 and verifier.accepted == verifier.proposed
        self._lookahead[rid] = min(self.maximum, gamma + 2) if all_accepted else max(1, gamma - 1)
