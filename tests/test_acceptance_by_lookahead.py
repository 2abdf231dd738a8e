"""Acceptance per lookahead: the profiler walks each lookahead apart, the simulator uses the row
of the verify's candidate count, and the profile schema keeps the rows.

Rounds of ``K`` drafts start where rounds of ``K`` stop, so a long draft meets a text's hard
spots elsewhere than a short one; one pooled row over-predicted long drafts by 25% on the
embedded ladder's prose.
"""

from __future__ import annotations

import numpy as np
import pytest

from backend.profiler import lookahead_acceptance, visited_acceptance
from sim.acceptance import AcceptanceModel
from traces.world_profile import (
    ModelProfile,
    PairProfile,
    PassTimeTable,
    WorldProfile,
    validate_world_profile,
    world_profile_to_dict,
)


def test_each_lookahead_is_walked_apart() -> None:
    series = [np.array([1, 1, 0, 1, 0, 0, 1, 1, 1, 1])]
    rows = lookahead_acceptance(series, 3)
    # a round that accepts its run of k drafts commits k + 1 tokens, so the next one starts there
    # K = 1: starts 0 (accept) 2 (reject) 3 (accept) 5 (reject) 6 (accept) 8 (accept)
    assert rows[0] == pytest.approx((4 / 6,))
    # K = 2: starts 0 (1,1) 3 (1,0) 5 (0) 6 (1,1); start 9 has no room for 2 drafts
    assert rows[1] == pytest.approx((3 / 4, 2 / 3))
    # K = 3: starts 0 (1,1,0) 3 (1,0) 5 (0) 6 (1,1,1)
    assert rows[2] == pytest.approx((3 / 4, 2 / 3, 1 / 2))
    _, pooled = visited_acceptance(series, 3)
    assert pooled[0] == pytest.approx((4 + 3 + 3) / (6 + 4 + 4))  # the pooled row mixes the walks


def profile_with(by_lookahead: tuple[tuple[float, ...], ...], positions: tuple[float, ...]) -> WorldProfile:
    table = PassTimeTable((1,), (1,), ((0.001,),), 16)
    models = (ModelProfile("a", 1e6, table), ModelProfile("b", 1e7, table))
    pair = PairProfile(0, 1, 0.5, None, "greedy", positions, (0.5,), 100, by_lookahead)
    return WorldProfile("cpu", models, (pair,))


def mean_accepted(model: AcceptanceModel, candidates: int, draws: int = 20000) -> float:
    return float(np.mean([model.verify(0, 1, None, 0.0, [], 0, candidates, None) for _ in range(draws)]))


def test_the_simulator_uses_the_row_of_the_candidate_count() -> None:
    rows = ((0.2,), (0.9, 0.9))
    model = AcceptanceModel([1e6, 1e7], correlation=0.0, profile=profile_with(rows, (0.5, 0.5)))
    assert mean_accepted(model, 1) == pytest.approx(0.2, abs=0.015)
    assert mean_accepted(model, 2) == pytest.approx(0.9 + 0.81, abs=0.03)
    # longer than profiled: the longest row, its last value repeating
    assert mean_accepted(model, 3) == pytest.approx(0.9 + 0.81 + 0.729, abs=0.04)
    pooled = AcceptanceModel([1e6, 1e7], correlation=0.0, profile=profile_with((), (0.5, 0.5)))
    assert mean_accepted(pooled, 1) == pytest.approx(0.5, abs=0.015)  # older profiles: one pooled row


def test_the_schema_keeps_the_rows() -> None:
    profile = profile_with(((0.25,), (0.5, 0.75)), (0.5,))
    again = validate_world_profile(world_profile_to_dict(profile))
    assert again.acceptance[0].by_lookahead == ((0.25,), (0.5, 0.75))
    document = world_profile_to_dict(profile)
    document["acceptance"][0]["by_lookahead"] = [[1.5]]
    with pytest.raises(ValueError, match=r"by_lookahead\[0\]\[0\]"):
        validate_world_profile(document, "p.json")
