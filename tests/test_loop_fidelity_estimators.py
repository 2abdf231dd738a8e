"""Per-token acceptance estimator and profile calibration used by the fidelity loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from specrouter.experiments.fidelity import fidelity_rows, pair_acceptance, per_token_acceptance
from traces.records import RequestRecord, RoundRecord


def synthetic_rounds(alpha: float, lookaheads: list[int], seed: int) -> list[RoundRecord]:
    """Rounds of chain 0>2 whose verifies stop at the first rejection of i.i.d. Bernoulli(alpha) verdicts."""
    rng = np.random.default_rng(seed)
    rounds = []
    for i, k in enumerate(lookaheads):
        verdicts = rng.random(k) < alpha
        accepted = int(np.argmin(verdicts)) if not verdicts.all() else k
        rounds.append(
            RoundRecord(
                0,
                float(i),
                0.01,
                "0>2",
                (0, 2),
                (k,),
                (0, k),
                (0, accepted),
                (0.001, 0.002),
                (k, 1),
                accepted + 1,
            )  # fmt: skip
        )
    return rounds


@pytest.mark.parametrize("alpha", [0.3, 0.6, 0.85])
def test_mle_recovers_alpha_whatever_the_lookahead(alpha: float) -> None:
    short = synthetic_rounds(alpha, [1] * 4000, seed=1)
    long = synthetic_rounds(alpha, [8] * 1500, seed=2)
    mixed = synthetic_rounds(alpha, [1 + i % 8 for i in range(3000)], seed=3)
    for rounds in (short, long, mixed):
        estimate, verifies = per_token_acceptance(rounds)[(0, 2)]
        assert verifies == len(rounds)
        assert estimate == pytest.approx(alpha, abs=0.03)
    # the lookahead-dependent ratio is NOT comparable across lookaheads (why the MLE rows exist)
    ratio_short = pair_acceptance(short)[(0, 2)]
    ratio_long = pair_acceptance(long)[(0, 2)]
    assert ratio_short[0] / ratio_short[1] - ratio_long[0] / ratio_long[1] > 0.1


def test_mle_counts_only_verifies_that_rejected() -> None:
    rounds = synthetic_rounds(1.0, [4, 4], seed=0)  # everything accepted: alpha_hat = 1
    assert per_token_acceptance(rounds)[(0, 2)] == (1.0, 2)
    rejected_at_once = synthetic_rounds(0.0, [4, 2, 1], seed=0)
    assert per_token_acceptance(rejected_at_once)[(0, 2)] == (0.0, 3)


def test_fidelity_rows_carry_alpha_rows_for_both_worlds() -> None:
    requests = [RequestRecord(0, 0.0, 0.1, 0.5, 16, 11)]
    sim = synthetic_rounds(0.8, [4] * 500, seed=4)
    real = synthetic_rounds(0.8, [1] * 1500, seed=5)
    rows = {r["metric"]: r for r in fidelity_rows(requests, requests, sim, real)}
    row = rows["alpha M0->M2"]
    assert row["samples"] == [500, 1500]
    assert abs(row["error"]) < 0.06  # same per-token alpha, different lookaheads
    assert abs(rows["acceptance M0->M2"]["error"]) > 0.2  # the per-round ratio disagrees
    assert not math.isnan(row["predicted"])


# ---- in-run calibration of pass times (backend.profile_calibration) ---------------------------


def test_monotone_envelope_lowers_only_inflated_cells() -> None:
    from backend.profile_calibration import monotone_envelope

    consistent = [[1.0, 2.0, 3.0], [2.0, 3.0, 5.0]]
    assert monotone_envelope(consistent) == consistent
    spiked = [[1.0, 50.0, 3.0], [2.0, 3.0, 5.0]]  # a hiccup at (b=1, n=2): above both dominating cells
    assert monotone_envelope(spiked) == [[1.0, 3.0, 3.0], [2.0, 3.0, 5.0]]


def test_table_seconds_is_bilinear_and_extends_linearly() -> None:
    from backend.profile_calibration import table_seconds

    seconds = [[1.0, 3.0], [2.0, 6.0]]  # batch (1, 3) x tokens (1, 5)
    assert table_seconds(seconds, (1, 3), (1, 5), 1, 1) == pytest.approx(1.0)
    assert table_seconds(seconds, (1, 3), (1, 5), 2, 3) == pytest.approx((2.0 + 4.0) / 2)
    assert table_seconds(seconds, (1, 3), (1, 5), 1, 9) == pytest.approx(5.0)  # linear beyond the grid


def test_in_run_calibration_counts_every_model_and_scales_the_tables() -> None:
    import dataclasses

    from backend.profile_calibration import (
        apply_calibration,
        calibration_from_clocks,
        clock_calibration_workload,
    )
    from backend.profiler import ProfileSettings, profile_ladder
    from backend.replay import RandomTokenPrompts, prompt_set
    from backend.testing import tiny_ladder

    ladder = tiny_ladder(3, seed=1)
    settings = ProfileSettings(
        tokens=(1, 4), batch_sizes=(1, 2), contexts=(8,), warmup=0, repeats=1, prompts_per_domain=2,
        continuation=4, draft_positions=2,
    )  # fmt: skip
    prompts = prompt_set(RandomTokenPrompts(ladder.vocab_size, seed=0), 2, 10, [None])
    profile = profile_ladder(ladder, prompts, settings, calibrate_in_run=True)
    meta = profile.meta["in_run_calibration"]
    assert set(meta["factors"]) == set(ladder.names) and all(f > 0 for f in meta["factors"].values())
    assert all(p > 0 for p in meta["passes"].values())  # every model ran passes in the calibration rounds
    assert (
        profile.meta["pass_time_grid_isolated"]["tiny0"]["seconds"]
        != profile.meta["pass_time_grid"]["tiny0"]["seconds"]
    )

    # the same tables, 10x slower: the factors measured against them come out about 10x smaller
    tables = [(m.pass_time.seconds, m.pass_time.batch_sizes, m.pass_time.tokens) for m in profile.models]
    slow = [([[10.0 * v for v in row] for row in s], b, t) for s, b, t in tables]
    clocks = clock_calibration_workload(ladder, prompts["all"], output_tokens=12)
    assert {clock.model for clock in clocks} == {0, 1, 2} and max(clock.width for clock in clocks) >= 10
    fast_factors = calibration_from_clocks(clocks, tables).factors
    slow_factors = calibration_from_clocks(clocks, slow).factors
    for fast, slower in zip(fast_factors, slow_factors):
        assert slower == pytest.approx(fast / 10.0)

    # applying a calibration: factor * envelope in every table cell, the loop overhead in meta,
    # where the simulator's latency model reads it
    from backend.profile_calibration import InRunCalibration, LoopOverhead

    overhead = LoopOverhead(0.001, 0.0002, 0.0005)
    calibration = InRunCalibration((2.0, 3.0, 4.0), overhead, (1.0, 1.0, 1.0), 1)
    calibrated = apply_calibration(profile, calibration)
    for before, after, factor in zip(profile.models, calibrated.models, calibration.factors):
        from backend.profile_calibration import monotone_envelope

        envelope = monotone_envelope(before.pass_time.seconds)
        for row_env, row_after in zip(envelope, after.pass_time.seconds):
            assert row_after == pytest.approx([factor * v for v in row_env])
    from sim.latency import loop_overhead

    assert loop_overhead(calibrated) == pytest.approx((0.001, 0.0002, 0.0005))
    assert profile.meta["loop_overhead"]["per_pass_s"] > 0  # profile_ladder measured one
    uncalibrated = dataclasses.replace(profile, meta={})
    assert loop_overhead(uncalibrated) == (0.0, 0.0, 0.0)  # an uncalibrated profile charges none


# ---- the simulator's admission limit (the real engine's slots) --------------------------------


def test_simulator_admits_at_most_max_running_requests(tmp_path) -> None:
    import dataclasses

    from policies.baselines import TargetOnly
    from sim.engine import Simulation
    from sim.presets import preset
    from sim.scenario import Scenario
    from sim.world import World
    from traces.request import Request
    from traces.world_profile import ModelProfile, PassTimeTable, WorldProfile, save_world_profile

    models = [
        ModelProfile(name, 1e9, PassTimeTable((1, 8), (1, 64), ((0.01, 0.02), (0.01, 0.02)), 0))
        for name in preset("llama").names
    ]
    path = tmp_path / "fixed.json"
    save_world_profile(WorldProfile("test", tuple(models)), path)
    requests = [Request(i, 0.0, 4, 5) for i in range(4)]

    def run(limit: int) -> list:
        cluster = dataclasses.replace(preset("llama", profile=str(path)), max_running_requests=limit)
        result = Simulation(World(cluster, Scenario(seed=0)), TargetOnly()).run(requests)
        return sorted(result.requests, key=lambda r: r.request_id)

    one_at_a_time = run(1)
    for earlier, later in zip(one_at_a_time, one_at_a_time[1:]):
        assert later.first_token > earlier.finish  # starts only once the previous one finished
    together = run(0)
    assert max(r.first_token for r in together) < min(r.finish for r in together)  # all decode at once
    assert sum(r.first_token for r in one_at_a_time) > sum(r.first_token for r in together)


# ---- greedy acceptance as the executor walks it (backend.profiler.visited_acceptance) ---------


def test_visited_acceptance_walks_rounds_from_each_correction() -> None:
    from backend.profiler import visited_acceptance

    # K = 1: a round at s drafts s and the target emits s + 1 (bonus or correction), so rounds
    # start at 0 (accept), 2 (accept), 4 (reject), 5 (reject); position 1 is never drafted
    alpha, positions = visited_acceptance([np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])], 1)
    assert alpha == pytest.approx(2 / 4) and positions == pytest.approx((2 / 4,))
    # i.i.d. matches: the walk recovers alpha at every position
    rng = np.random.default_rng(0)
    series = [(rng.random(400) < 0.7).astype(float) for _ in range(20)]
    alpha, positions = visited_acceptance(series, 4)
    assert alpha == pytest.approx(0.7, abs=0.02) and len(positions) == 4
    assert all(p == pytest.approx(0.7, abs=0.04) for p in positions)


def test_visited_acceptance_sees_clustered_rejections() -> None:
    from backend.profiler import conditional_acceptance, visited_acceptance

    # hard stretches: a rejection is followed by more rejections; every-start averaging misses it
    pattern = np.array([1.0] * 6 + [0.0] * 3)
    series = [np.tile(pattern, 30)]
    alpha_visited, _ = visited_acceptance(series, 4)
    assert alpha_visited < float(np.mean(np.concatenate(series))) - 0.05
    every_start = conditional_acceptance(series, 4)
    assert every_start[0] == pytest.approx(6 / 9, abs=0.02)  # the old estimate: the plain match rate


def test_padded_batches_charge_the_widest_feed(tmp_path) -> None:
    import dataclasses

    from policies.baselines import TargetOnly
    from sim.engine import Simulation
    from sim.presets import preset
    from sim.scenario import Scenario
    from sim.world import World
    from traces.request import Request
    from traces.world_profile import ModelProfile, PassTimeTable, WorldProfile, save_world_profile

    # pass time linear in positions per sequence: 1 ms at n = 1, 64 ms at n = 64
    models = [
        ModelProfile(name, 1e9, PassTimeTable((1, 8), (1, 64), ((0.001, 0.064), (0.001, 0.064)), 0))
        for name in preset("llama").names
    ]
    path = tmp_path / "linear.json"
    save_world_profile(WorldProfile("test", tuple(models)), path)
    # one prefill pass of widths 20 and 60 (both wide: policies.serving.WIDE_FEED)
    requests = [Request(0, 0.0, 20, 1), Request(1, 0.0, 60, 1)]

    def first_token(padded: bool) -> float:
        cluster = dataclasses.replace(preset("llama", profile=str(path)), padded_batches=padded)
        result = Simulation(World(cluster, Scenario(seed=0)), TargetOnly()).run(requests)
        return max(r.first_token for r in result.requests)

    # padded: V(2, 60) ~ 60 ms; ragged: V(2, mean 40) ~ 40 ms
    assert first_token(True) == pytest.approx(0.001 + 0.063 * 59 / 63, rel=1e-6)
    assert first_token(False) == pytest.approx(0.001 + 0.063 * 39 / 63, rel=1e-6)


def test_validate_profiles_at_the_workload_operating_point() -> None:
    from backend.profiler import ProfileSettings
    from specrouter.experiments.validate import ACCEPTANCE_PROMPTS, ValidateConfig, profile_settings

    config = ValidateConfig("ladder", "specrouter", "out", prompt_tokens=40, output_tokens=24, max_batch=3)
    settings = profile_settings(config, ProfileSettings.quick())
    assert settings.continuation == 24 and settings.prompts_per_domain >= ACCEPTANCE_PROMPTS
    assert settings.statistic == "min" and settings.repeats >= 5
    assert settings.contexts == (40 + 12,) and settings.batch_sizes == (1, 2, 3)
    with pytest.raises(ValueError, match="statistic"):
        ProfileSettings(statistic="mean")


def test_loop_overhead_fit_recovers_known_costs_and_ignores_hiccups() -> None:
    from backend.executor import PassClock
    from backend.profile_calibration import fit_loop_overhead

    rng = __import__("random").Random(4)
    clocks, ended = [], 0.0
    for index in range(200):
        rows, rounds = rng.randint(1, 8), rng.choice([0, 0, 3])
        forward = 0.002 * rows
        gap = 0.0005 + 0.0001 * rows + 0.0003 * rounds
        if index % 25 == 7:
            gap += 0.05  # a scheduler hiccup
        ended += gap + forward
        clocks.append(PassClock(0, rows, 1, rounds, forward, ended - forward - 1e-6, ended))
    fitted = fit_loop_overhead(clocks)
    assert fitted.per_pass_s == pytest.approx(0.0005, rel=1e-3)
    assert fitted.per_row_s == pytest.approx(0.0001, rel=1e-3)
    assert fitted.per_round_s == pytest.approx(0.0003, rel=1e-3)
    assert fitted.seconds(4, 3) == pytest.approx(0.0005 + 0.0004 + 0.0009, rel=1e-3)


def test_prefill_passes_get_their_own_factor() -> None:
    """Narrow (decode) and wide (prefill) passes are calibrated apart; the wide factor scales the
    table's columns wider than WIDE_FEED only."""
    from backend.executor import PassClock
    from backend.profile_calibration import calibrated_seconds, calibration_from_clocks
    from policies.serving import WIDE_FEED

    table = ([[0.001, 0.002, 0.01]], (1,), (1, WIDE_FEED, 64))  # seconds at 1, 16 and 64 positions
    clocks = [PassClock(0, 1, 1, 0, 2 * 0.001, 0.0, 0.0) for _ in range(9)]  # decode: 2x the table
    clocks += [PassClock(0, 1, 64, 1, 0.5 * 0.01, 0.0, 0.0) for _ in range(3)]  # prefill: 0.5x
    calibration = calibration_from_clocks(clocks, [table])
    assert calibration.factors == pytest.approx((2.0,)) and calibration.wide_factors == pytest.approx((0.5,))
    scaled = calibrated_seconds([table[0]], 2.0, table[2], 0.5)[0][0]
    assert scaled == pytest.approx([0.002, 0.004, 0.005])


def test_calibration_runs_combine_by_their_median() -> None:
    from backend.profile_calibration import InRunCalibration, LoopOverhead, median_calibration

    runs = [
        InRunCalibration((1.0, 2.0), LoopOverhead(1e-5, 2e-5, 3e-5), (5.0, 6.0), 7, (0.5, 0.9)),
        InRunCalibration((3.0, 2.2), LoopOverhead(9e-5, 2e-5, 3e-5), (5.0, 6.0), 7, (0.6, 0.8)),  # a busy run
        InRunCalibration((1.2, 2.1), LoopOverhead(2e-5, 1e-5, 4e-5), (5.0, 6.0), 7, (0.4, 1.0)),
    ]
    combined = median_calibration(runs)
    assert combined.factors == pytest.approx((1.2, 2.1))
    assert combined.wide_factors == pytest.approx((0.5, 0.9))
    assert tuple(combined.overhead) == pytest.approx((2e-5, 2e-5, 3e-5))
