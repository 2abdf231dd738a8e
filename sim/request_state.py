"""Per-request simulation state: cheap, slotted, reset once per round."""

from __future__ import annotations

from policies.contract import PassTiming, Route
from policies.plan import Call, DraftStep, RoundGen
from traces.request import Request

_NO_CALL = DraftStep(0, 0)


class RequestState:
    """Where a request stands: output so far, the round in flight and each model's KV length.

    ``cached[m]`` is how many committed tokens model ``m`` has scored (its KV length).  The
    committed sequence has ``prompt + generated`` tokens, the last of which is *pending*
    (fed as the first position of the next pass), so a model is in sync when
    ``cached[m] == committed - 1`` and otherwise catches up the difference.
    """

    __slots__ = (
        "request_id", "arrival", "prompt_tokens", "budget", "domain", "generated", "first_token", "cached",
        "route", "chain", "plan", "call", "round_started", "emitted", "latent", "passes", "tv",
    )  # fmt: skip

    def __init__(self, request: Request, ladder_size: int) -> None:
        self.request_id = request.request_id
        self.arrival = request.arrival
        self.prompt_tokens = request.prompt_tokens
        self.budget = request.output_tokens
        self.domain = request.domain
        self.generated = 0
        self.first_token = -1.0
        self.cached = [0] * ladder_size
        self.route: Route = Route((ladder_size - 1,), (), ladder_size - 1)
        self.chain: tuple[int, ...] = self.route.chain
        self.plan: RoundGen
        self.call: Call = _NO_CALL
        self.round_started = 0.0
        self.emitted: list[int] = []
        self.latent: list[float] = []
        self.passes: list[list[PassTiming]] = []
        self.tv: list[list[float]] = []

    def begin_round(self, route: Route, plan: RoundGen, now: float) -> None:
        levels = len(route.chain)
        self.route = route
        self.chain = route.chain
        self.plan = plan
        self.round_started = now
        self.emitted = [0] * levels
        self.latent = []
        self.passes = [[] for _ in range(levels)]
        self.tv = [[] for _ in range(levels)]

    def call_positions(self, model: int) -> tuple[int, int]:
        """Positions this request feeds to ``model`` for its current call, and its context.

        A draft step feeds 1 position, a verify of ``k`` candidates ``k + 1``, plus any
        catch-up (prefill) of committed tokens ``model`` has not scored (the server books it
        as done when the call joins a batch).  Context = committed tokens already cached +
        tokens this level emitted earlier in the round.
        """
        call = self.call
        in_sync = self.prompt_tokens + self.generated - 1
        lag = in_sync - self.cached[model]
        positions = call.candidates + 1 if len(call) == 3 else 1
        return positions + lag, in_sync - lag + self.emitted[call.level]

    def sync_caches(self, chain: tuple[int, ...]) -> None:
        """After a round every chain member holds the committed prefix."""
        in_sync = self.prompt_tokens + self.generated - 1
        cached = self.cached
        for model in chain:
            cached[model] = in_sync
