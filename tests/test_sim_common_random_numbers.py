"""Common random numbers: a request's verdicts depend on its own routes, not on the others'.

Every request draws from its own stream (``AcceptanceModel.stream``), so two policies that route
one request alike give it the same verdicts even where they route other requests differently --
a comparison of policies on one seed then measures the policies.  With one stream shared by all
requests (the known-wrong variant, what the simulator did before) a single changed route moves
every later draw and the same check fails.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from policies.baselines import StaticChain
from policies.contract import Route, RouteView
from sim.acceptance import AcceptanceModel
from sim.engine import Simulation
from sim.presets import preset
from sim.scenario import Scenario
from sim.world import World
from traces.request import Request

ROUTED = Route((0, 2, 3), (4, 4), 3)
ODD_ONE = 7  # the request the second policy routes otherwise


class AllButOne(StaticChain):
    """``0>2>3:4,4`` for every request but ``ODD_ONE``, which goes ``1>3:3``."""

    def __init__(self) -> None:
        super().__init__(ROUTED.chain, ROUTED.lookaheads)

    def route(self, view: RouteView) -> Route:
        return Route((1, 3), (3,), 3) if view.request_id == ODD_ONE else ROUTED


def verdicts(policy) -> dict[int, list[tuple]]:
    """Per request, what each of its rounds proposed, accepted and committed, in order."""
    world = World(preset("llama"), Scenario(seed=3, noise_sigma=0.1, correlation=0.5))
    requests = [Request(i, i * 0.01, 200 + 13 * i, 40 + i % 23, "code") for i in range(40)]
    rounds = Simulation(world, policy).run(requests).rounds
    by_request: dict[int, list[tuple]] = defaultdict(list)
    for r in rounds:
        by_request[r.request_id].append((r.chain, r.proposed, r.accepted, r.committed))
    return by_request


def test_a_request_routed_alike_draws_alike_whatever_the_others_do() -> None:
    same, changed = verdicts(StaticChain(ROUTED.chain, ROUTED.lookaheads)), verdicts(AllButOne())
    assert same[ODD_ONE] != changed[ODD_ONE]  # the odd request's own rounds differ
    others = [i for i in same if i != ODD_ONE]
    assert len(others) == 39
    assert all(same[i] == changed[i] for i in others)


def test_one_shared_stream_fails_the_same_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AcceptanceModel, "stream", lambda self, request_id: self.pool)
    same, changed = verdicts(StaticChain(ROUTED.chain, ROUTED.lookaheads)), verdicts(AllButOne())
    others = [i for i in same if i != ODD_ONE]
    assert sum(same[i] != changed[i] for i in others) > 10


def test_streams_are_seeded_by_world_and_request() -> None:
    def drawn(seed: int, request_id: int) -> list[float]:
        pool = AcceptanceModel([68e6, 1e9, 8e9, 70e9], seed=seed).stream(request_id)
        values = []
        for _ in range(3):  # 3 x 200 normals: two refills, each a fresh chunk of the same stream
            pool.reserve(200, 0)
            values += pool.normals[pool.n : pool.n + 200]
            pool.n += 200
        return values

    assert drawn(5, 1) == drawn(5, 1)
    assert drawn(5, 1) != drawn(5, 2) and drawn(5, 1) != drawn(6, 1)
