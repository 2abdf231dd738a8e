"""Fidelity table and plots computed from result records (no world needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from specrouter import plots
from specrouter.experiments.fidelity import chain_agreement, fidelity_rows, pair_acceptance, write_table
from traces.records import RequestRecord, RoundRecord


def request(rid: int, tpot: float, tokens: int = 11, arrival: float = 0.0) -> RequestRecord:
    return RequestRecord(rid, arrival, arrival + 0.1, arrival + 0.1 + tpot * (tokens - 1), 16, tokens)


def round_(
    rid: int, time: float, chain: tuple[int, ...], proposed: tuple[int, ...], accepted: tuple[int, ...]
):
    return RoundRecord(
        rid, time, 0.01, ">".join(map(str, chain)), chain, (3,) * (len(chain) - 1), proposed, accepted,
        (0.001,) * len(chain), (1,) * len(chain), accepted[-1] + 1,
    )  # fmt: skip


def test_pair_acceptance_sums_every_verifying_level() -> None:
    rounds = [round_(0, 0.0, (0, 1, 2), (0, 3, 2), (0, 2, 1)), round_(0, 1.0, (0, 2), (0, 4), (0, 4))]
    assert pair_acceptance(rounds) == {(0, 1): (2, 3), (1, 2): (1, 2), (0, 2): (4, 4)}


def test_chain_agreement_aligns_rounds_per_request_in_time_order() -> None:
    sim = [round_(0, 1.0, (1, 2), (0, 3), (0, 1)), round_(0, 0.0, (0, 2), (0, 3), (0, 1)),
           round_(1, 0.0, (2,), (0,), (0,))]  # fmt: skip
    real = [round_(0, 0.0, (0, 2), (0, 3), (0, 1)), round_(0, 0.5, (0, 2), (0, 3), (0, 1)),
            round_(0, 0.9, (2,), (0,), (0,)), round_(1, 0.0, (2,), (0,), (0,))]  # fmt: skip
    agreement, aligned = chain_agreement(sim, real)
    assert aligned == 3 and agreement == pytest.approx(2 / 3)


def test_fidelity_rows_report_relative_errors(tmp_path: Path) -> None:
    sim_requests = [request(i, 0.011, arrival=i) for i in range(4)]
    real_requests = [request(i, 0.010, arrival=i) for i in range(4)]
    sim_rounds = [round_(0, 0.0, (0, 2), (0, 4), (0, 3))]
    real_rounds = [round_(0, 0.0, (0, 2), (0, 4), (0, 2)), round_(0, 0.1, (1, 2), (0, 2), (0, 2))]
    rows = {r["metric"]: r for r in fidelity_rows(sim_requests, real_requests, sim_rounds, real_rounds)}
    assert rows["tpot_mean"]["error"] == pytest.approx(0.1)
    assert rows["acceptance M0->M2"]["predicted"] == 0.75 and rows["acceptance M0->M2"]["error"] == 0.5
    assert math.isnan(rows["acceptance M1->M2"]["predicted"])  # the simulator never verified that pair
    assert rows["chain_agreement"]["measured"] == 1.0
    json_path, text_path = write_table(list(rows.values()), tmp_path)
    saved = {r["metric"]: r for r in json.loads(json_path.read_text())}
    assert saved["acceptance M1->M2"]["predicted"] is None  # NaN written as null, valid JSON
    assert "tpot_mean (ms)" in text_path.read_text() and "+10.0%" in text_path.read_text()


def test_plots_write_png_and_svg(tmp_path: Path) -> None:
    requests = {
        "a": [request(i, 0.01 + i / 1000) for i in range(5)],
        "b": [request(i, 0.02) for i in range(5)],
    }
    rounds = [round_(i % 3, i * 0.1, (0, 2) if i < 20 else (2,), (0, 4) if i < 20 else (0,),
                     (0, 3) if i < 20 else (0,)) for i in range(40)]  # fmt: skip
    markers = [plots.Marker(2.0, "domain shift"), plots.Marker(2.5, "slowdown", 3.0)]
    written = [
        *plots.latency_cdfs(requests, tmp_path / "cdf"),
        *plots.chain_usage(rounds, tmp_path / "chains", markers),
        *plots.acceptance_over_time(rounds, tmp_path / "acceptance", markers),
        *plots.predicted_vs_measured(
            [{"metric": "tpot_mean", "predicted": 1.1, "measured": 1.0}], tmp_path / "fidelity"
        ),
    ]
    for path in written:
        assert path.exists() and path.stat().st_size > 1000
    svg = (tmp_path / "chains.svg").read_text()
    assert "domain shift" in svg and "chain 0&gt;2" in svg
    series = plots.pair_acceptance_series(rounds, bins=4)
    assert (
        list(series) == [(0, 2)]
        and series[(0, 2)][0] == pytest.approx(0.75)
        and math.isnan(series[(0, 2)][-1])
    )
    with pytest.raises(ValueError, match="no round records"):
        plots.chain_usage([], tmp_path / "empty")
