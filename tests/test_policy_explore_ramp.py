"""A young router explores less (``SpecRouter(explore_ramp=...)``, off by default).

The optimism bonus buys information whose worth is the rounds left to use it.  At zero evidence it
is 0.43 on every pair: a cold router plans as if every untried pair accepted ~93% and drafts long,
unmeasured lookaheads, which a short run (the real bench's 8 requests x 32 tokens) never earns
back.  The ramp scales the bonus by ``sqrt(rounds / explore_ramp)`` over the router's first rounds,
so the first plans rest on the estimates and exploration grows as the run shows it is long (long
runs pay for it: +1.7% mean TPOT over the six scenarios, docs/policies.md)."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from policies.contract import LadderInfo, RouteView
from policies.specrouter_policy import SpecRouter, _DomainState
from policies.synthetic import SyntheticWorld, linear_pass_time, matrix_alpha

LADDER = LadderInfo(("draft", "mid", "target"))


def young_state(router: SpecRouter, rounds: int) -> _DomainState:
    """The router's state for a domain it has routed once, ``rounds`` rounds into its run."""
    router.route(RouteView(0, 16, 0, 32, None, 0.0, LADDER, (1, 1, 1), (0, 0, 0)))
    router.rounds = rounds
    return router._domains[None]


@pytest.mark.parametrize("rounds", [0, 64, 256, 1000])
def test_the_bonus_grows_as_the_square_root_of_the_rounds_until_the_ramp_ends(rounds: int) -> None:
    ramped, constant = SpecRouter(explore_ramp=256), SpecRouter()
    alpha = ramped.alpha_matrix(young_state(ramped, rounds))
    reference = constant.alpha_matrix(young_state(constant, rounds))
    estimate = constant.alpha_matrix(young_state(constant, rounds), optimism=0.0)
    share = min(1.0, (rounds / 256) ** 0.5)
    upper = np.triu_indices(3, 1)
    # no evidence at all: the estimate is the prior (0.5) and the bonus is below 1 - 0.5
    np.testing.assert_allclose(alpha[upper], estimate[upper] + share * (reference - estimate)[upper])
    if rounds == 0:
        np.testing.assert_allclose(alpha[upper], 0.5)


def test_a_cold_router_with_the_ramp_loses_less_in_a_short_run() -> None:
    """Two requests of 32 tokens on a ladder whose drafters cost a CPU's share of the target (a
    third and a half of its pass), mean over 6 seeds: with a constant bonus the router spends the
    run on long exploratory lookaheads."""
    alpha: list[list[float]] = [[1, 0.62, 0.55], [1, 1, 0.7], [1, 1, 1]]
    timing = linear_pass_time((0.003, 0.005, 0.01), (1e-4, 2e-4, 4e-4))

    def time_per_token(router: SpecRouter, seed: int) -> float:
        world = SyntheticWorld(3, matrix_alpha(alpha), timing, seed=seed)
        return world.run(router, 2, tokens_per_request=32).time_per_token

    ramped = [time_per_token(SpecRouter(explore_ramp=768), seed) for seed in range(6)]
    constant = [time_per_token(SpecRouter(), seed) for seed in range(6)]
    assert statistics.mean(ramped) < 0.95 * statistics.mean(constant)
