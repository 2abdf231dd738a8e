"""Result records: conversion from feedback, incremental writing, reading back, summaries."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.contract import LevelFeedback, PassTiming, RoundFeedback, Route
from traces.records import (
    SLO,
    RecordWriter,
    RequestRecord,
    RoundRecord,
    format_summary,
    read_records,
    round_record_from_feedback,
    summarize,
)

FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def feedback(request_id: int = 4, started: float = 2.0) -> RoundFeedback:
    drafter = LevelFeedback(0, 0, 0, 3, tuple(PassTiming(0, 1, 2, 0.01) for _ in range(3)))
    middle = LevelFeedback(2, 3, 2, 3, (PassTiming(2, 4, 2, 0.05),))
    target = LevelFeedback(3, 3, 1, 2, (PassTiming(3, 4, 2, 0.25),))
    route = Route((0, 2, 3), (3, 1), 3)
    return RoundFeedback(
        request_id, "code", route, started, started + 0.33, (drafter, middle, target), (), False
    )


def test_round_record_from_feedback_reads_every_level() -> None:
    record = round_record_from_feedback(feedback())
    assert record.chain == "0>2>3" and record.chain_models == (0, 2, 3) and record.lookaheads == (3, 1)
    assert record.proposed == (0, 3, 3) and record.accepted == (0, 2, 1)
    assert record.pass_seconds == pytest.approx((0.03, 0.05, 0.25)) and record.passes == (3, 1, 1)
    assert record.committed == 2 and record.time == 2.0 and record.latency == pytest.approx(0.33)
    assert record.domain == "code" and record.request_id == 4


def test_request_record_derived_latencies() -> None:
    record = RequestRecord(1, arrival=1.0, first_token=1.5, finish=3.5, prompt_tokens=10, output_tokens=5)
    assert (record.ttft, record.e2e, record.tpot) == (0.5, 2.5, 0.5)
    assert math.isnan(record._replace(output_tokens=1).tpot)


names = st.none() | st.text(min_size=1, max_size=6)
times = st.floats(0, 1e6, allow_nan=False)
small = st.integers(0, 10**6)
request_records = st.builds(RequestRecord, small, times, times, times, small, small, names)
per_level = st.integers(1, 4)


@st.composite
def round_records(draw: st.DrawFn) -> RoundRecord:
    levels = draw(per_level)
    chain = tuple(sorted(draw(st.sets(st.integers(0, 9), min_size=levels, max_size=levels))))
    ints = st.lists(small, min_size=levels, max_size=levels).map(tuple)
    seconds = st.lists(times, min_size=levels, max_size=levels).map(tuple)
    return RoundRecord(
        draw(small), draw(times), draw(times), ">".join(map(str, chain)), chain,
        tuple(draw(st.lists(st.integers(1, 9), min_size=levels - 1, max_size=levels - 1))),
        draw(ints), draw(ints), draw(seconds), draw(ints), draw(small), draw(names),
    )  # fmt: skip


@pytest.mark.parametrize("keep", ["parquet", "csv"])
@FAST
@given(
    requests=st.lists(request_records, min_size=1, max_size=12), rounds=st.lists(round_records(), max_size=12)
)
def test_records_round_trip_through_parquet_and_csv(
    tmp_path_factory: pytest.TempPathFactory,
    keep: str,
    requests: list[RequestRecord],
    rounds: list[RoundRecord],
) -> None:
    out = tmp_path_factory.mktemp("run")
    with RecordWriter(out, {"seed": 3}, write_csv=True, flush_every=5) as writer:
        writer.add_requests(requests)
        for record in rounds:
            writer.add_round(tuple(record))  # plain tuples are accepted
    if keep == "csv":
        (out / "requests.parquet").unlink()
        (out / "rounds.parquet").unlink()
    back = read_records(out)
    assert back.requests == requests and back.rounds == rounds
    assert back.metadata["rows"] == {"requests": len(requests), "rounds": len(rounds)}


def test_writer_flushes_incrementally_and_keeps_rows_after_an_interrupt(tmp_path: Path) -> None:
    rows = [RequestRecord(i, i, i + 0.5, i + 2.0, 10, 4, None) for i in range(7)]
    with (
        pytest.raises(KeyboardInterrupt),
        RecordWriter(tmp_path, {"seed": 1}, write_csv=True, flush_every=3) as writer,
    ):
        writer.add_requests(rows[:6])
        with (tmp_path / "requests.csv").open() as handle:  # two row groups are on disk already
            assert sum(1 for _ in csv.reader(handle)) == 1 + 6
        assert json.loads((tmp_path / "run.json").read_text())["status"] == "running"
        writer.add_request(rows[6])
        writer.add_feedback(feedback())
        raise KeyboardInterrupt
    assert pq.ParquetFile(tmp_path / "requests.parquet").metadata.num_row_groups == 3
    back = read_records(tmp_path)
    assert back.requests == rows and len(back.rounds) == 1
    meta = back.metadata
    assert meta["status"] == "interrupted: KeyboardInterrupt" and meta["seed"] == 1
    assert meta["rows"] == {"requests": 7, "rounds": 1}
    assert meta["machine"]["cpu_count"] >= 1 and meta["packages"]["pyarrow"]


def test_round_recording_can_be_turned_off(tmp_path: Path) -> None:
    with RecordWriter(tmp_path, record_rounds=False) as writer:
        writer.add_request(RequestRecord(0, 0.0, 0.1, 0.2, 1, 1))
        writer.add_feedback(feedback())
        writer.add_round(round_record_from_feedback(feedback()))
    assert not (tmp_path / "rounds.parquet").exists()
    assert read_records(tmp_path).rounds == []


def test_writer_misuse_is_reported(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not open"):
        RecordWriter(tmp_path).add_request(RequestRecord(0, 0.0, 0.1, 0.2, 1, 1))
    with pytest.raises(ValueError, match=r"\[3\] fields; expected 7"), RecordWriter(tmp_path) as writer:
        writer.add_request((1, 2.0, 3.0))
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        read_records(tmp_path / "nope")


def test_summary_matches_an_independent_computation() -> None:
    # TTFT 0.01 (i + 1), TPOT 0.002 i, 10 output tokens
    records = [
        RequestRecord(i, i, i + 0.01 * (i + 1), i + 0.01 * (i + 1) + 0.018 * i, 5, 10) for i in range(100)
    ]
    records.append(RequestRecord(100, 100.0, 100.5, 100.5, 5, 1))  # no TPOT: a single token
    slo = SLO(ttft=0.4, tpot=0.1)
    summary = summarize(records, slo)
    ttft = [r.first_token - r.arrival for r in records]
    tpot = [(r.finish - r.first_token) / (r.output_tokens - 1) for r in records if r.output_tokens > 1]
    quantiles = statistics.quantiles(ttft, n=100, method="inclusive")
    assert summary["ttft_mean"] == pytest.approx(statistics.fmean(ttft))
    assert (summary["ttft_p50"], summary["ttft_p90"], summary["ttft_p99"]) == pytest.approx(
        (quantiles[49], quantiles[89], quantiles[98])
    )
    assert summary["tpot_p90"] == pytest.approx(statistics.quantiles(tpot, n=100, method="inclusive")[89])
    span = max(r.finish for r in records) - min(r.arrival for r in records)
    assert summary["throughput_tokens_per_s"] == pytest.approx(sum(r.output_tokens for r in records) / span)
    good = [
        r
        for r in records
        if r.first_token - r.arrival <= 0.4
        and (r.output_tokens == 1 or (r.finish - r.first_token) / (r.output_tokens - 1) <= 0.1)
    ]
    assert 0 < len(good) < len(records)
    assert summary["slo_attainment"] == pytest.approx(len(good) / len(records))
    assert summary["goodput_requests_per_s"] == pytest.approx(len(good) / span)
    assert summary["goodput_tokens_per_s"] == pytest.approx(sum(r.output_tokens for r in good) / span)
    assert "SLO attained by" in format_summary(summary)


def test_summary_rejects_empty_and_inconsistent_records() -> None:
    with pytest.raises(ValueError, match="no request records"):
        summarize([])
    with pytest.raises(ValueError, match="first_token < arrival"):
        summarize([RequestRecord(0, 5.0, 4.0, 6.0, 1, 2)])
