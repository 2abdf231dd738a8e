"""Trace loaders: the shared samples, round trips of every format, options and bad input."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import math
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traces.loaders import EmptyTraceError, TraceFormatError, load_trace, write_trace
from traces.request import Request

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "traces"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"sample traces not found at {SAMPLES}")
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def azure_seconds(text: str) -> float:
    """Independent timestamp parse (strptime takes at most 6 fractional digits)."""
    date, clock = text.split(" ")
    whole, _, fraction = clock.partition(".")
    stamp = dt.datetime.strptime(f"{date} {whole}", "%Y-%m-%d %H:%M:%S")
    return stamp.timestamp() + float(f"0.{fraction or 0}")


@needs_samples
@pytest.mark.parametrize("name", ["AzureLLMInferenceTrace_conv.csv", "AzureLLMInferenceTrace_code.csv"])
def test_azure_samples_load_with_exact_counts_means_and_times(name: str) -> None:
    with open(SAMPLES / name, newline="") as handle:
        rows = list(csv.DictReader(handle))
    reader = load_trace(SAMPLES / name)
    requests = list(reader)
    assert reader.format == "azure"
    assert len(requests) == len(rows) == {"conv": 19366, "code": 8819}[name.split("_")[1][:4]]
    assert [r.request_id for r in requests] == list(range(len(rows)))
    prompt_mean = sum(int(row["ContextTokens"]) for row in rows) / len(rows)
    output_mean = sum(int(row["GeneratedTokens"]) for row in rows) / len(rows)
    assert sum(r.prompt_tokens for r in requests) / len(requests) == pytest.approx(prompt_mean, rel=1e-12)
    assert sum(r.output_tokens for r in requests) / len(requests) == pytest.approx(output_mean, rel=1e-12)
    start = azure_seconds(rows[0]["TIMESTAMP"])
    for row, request in zip(rows[::997], requests[::997]):
        assert request.arrival == pytest.approx(azure_seconds(row["TIMESTAMP"]) - start, abs=1e-6)
    assert requests[0].arrival == 0.0
    assert all(a.arrival <= b.arrival for a, b in zip(requests, requests[1:]))


@needs_samples
def test_mooncake_sample_loads_with_exact_count_means_and_millisecond_times() -> None:
    path = SAMPLES / "mooncake_conversation_trace.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    requests = list(load_trace(path))
    assert len(requests) == len(rows) == 12031
    assert sum(r.prompt_tokens for r in requests) / len(requests) == pytest.approx(
        sum(row["input_length"] for row in rows) / len(rows), rel=1e-12
    )
    assert sum(r.output_tokens for r in requests) / len(requests) == pytest.approx(
        sum(row["output_length"] for row in rows) / len(rows), rel=1e-12
    )
    assert requests[-1].arrival == pytest.approx(rows[-1]["timestamp"] / 1000.0)


@needs_samples
def test_sample_options_window_limit_rate_and_sampling() -> None:
    path = SAMPLES / "AzureLLMInferenceTrace_code.csv"
    full = list(load_trace(path))
    window = list(load_trace(path, start=600, end=1200))
    expected = [r for r in full if 600 <= r.arrival < 1200]
    assert len(window) == len(expected) > 0
    assert [w.arrival for w in window] == pytest.approx([r.arrival - 600 for r in expected])
    assert [w.request_id for w in window] == list(range(len(window)))
    fast = list(load_trace(path, rate_scale=2.0, limit=100))
    assert len(fast) == 100
    assert [f.arrival for f in fast] == pytest.approx([r.arrival / 2 for r in full[:100]])
    half = list(load_trace(path, sample=0.5, seed=7, validate_first=False))
    again = list(load_trace(path, sample=0.5, seed=7, validate_first=False))
    other = list(load_trace(path, sample=0.5, seed=8, end=1000))
    assert half == again and other != [r for r in half if r.arrival < 1000]
    # Bernoulli thinning keeps n*p +- 5 sigma rows
    assert abs(len(half) - len(full) / 2) < 5 * math.sqrt(len(full) / 4)


sorted_times = st.lists(st.floats(0, 1e5, allow_nan=False), min_size=1, max_size=30).map(sorted)
lengths = st.integers(1, 200_000)  # a prompt has at least one token (0 is refused on load)


@st.composite
def requests_strategy(draw: st.DrawFn, with_text: bool) -> list[Request]:
    times = draw(sorted_times)
    out = []
    for i, t in enumerate(times):
        domain = draw(st.none() | st.text(min_size=1, max_size=8)) if with_text else None
        text = draw(st.none() | st.text(min_size=1, max_size=40)) if with_text else None
        out.append(Request(i, t, draw(lengths), draw(st.integers(1, 100_000)), domain, text))
    return out


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".jsonl.gz"])
@FAST
@given(requests=requests_strategy(with_text=True))
def test_generic_formats_round_trip_exactly(tmp_path: Path, suffix: str, requests: list[Request]) -> None:
    path = tmp_path / f"trace{suffix}"
    assert write_trace(requests, path) == len(requests)
    assert list(load_trace(path)) == requests


@pytest.mark.parametrize(("fmt", "tolerance"), [("azure", 1.1e-7), ("burstgpt", 0.0), ("mooncake", 5e-4)])
@FAST
@given(requests=requests_strategy(with_text=False))
def test_public_formats_round_trip(
    tmp_path: Path, fmt: str, tolerance: float, requests: list[Request]
) -> None:
    suffix = ".jsonl" if fmt == "mooncake" else ".csv"
    path = tmp_path / f"trace{suffix}"
    write_trace(requests, path, fmt)
    loaded = list(load_trace(path))
    # azure timestamps are wall-clock dates: the loader counts from the first one
    origin = requests[0].arrival if fmt == "azure" else 0.0
    assert [(r.prompt_tokens, r.output_tokens) for r in loaded] == [
        (r.prompt_tokens, r.output_tokens) for r in requests
    ]
    for got, want in zip(loaded, requests):
        assert got.arrival == pytest.approx(want.arrival - origin, abs=tolerance + 1e-12 * want.arrival)


@FAST
@given(requests=requests_strategy(with_text=False), scale=st.floats(0.1, 10), limit=st.integers(1, 40))
def test_rate_scale_and_limit_properties(
    tmp_path: Path, requests: list[Request], scale: float, limit: int
) -> None:
    path = tmp_path / "trace.jsonl"
    write_trace(requests, path)
    loaded = list(load_trace(path, rate_scale=scale, limit=limit))
    assert len(loaded) == min(limit, len(requests))
    assert [r.arrival for r in loaded] == pytest.approx([r.arrival / scale for r in requests[:limit]])


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
GOOD_ROW = "2023-11-16 18:17:03.9799600,4808,10\n"


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("2023-11-16 18:17:04.0000000,4808\n", "expected 3 columns, found 2"),
        ("2023-11-16 18:17:04.0000000,many,10\n", "ContextTokens 'many' is not an integer"),
        ("2023-11-16 18:17:04.0000000,100,-3\n", "GeneratedTokens is negative (-3)"),
        ("2023-11-16 25:17:04.0000000,100,3\n", "timestamp '2023-11-16 25:17:04.0000000'"),
        ("yesterday,100,3\n", "timestamp 'yesterday'"),
    ],
)
def test_malformed_row_names_file_line_and_problem(tmp_path: Path, row: str, problem: str) -> None:
    path = write(tmp_path, "bad.csv", AZURE_HEADER + GOOD_ROW + GOOD_ROW + row + GOOD_ROW)
    with pytest.raises(TraceFormatError) as info:
        list(load_trace(path))
    assert str(path) in str(info.value) and "line 4" in str(info.value) and problem in str(info.value)
    assert info.value.line == 4
    reader = load_trace(path, on_error="skip")
    with pytest.warns(UserWarning, match="skipped 1 malformed rows"):
        kept = list(reader)
    assert len(kept) == 3 and reader.report.skipped == 1 and reader.report.skipped_lines == [4]


def test_error_is_raised_before_any_request_is_handed_out(tmp_path: Path) -> None:
    path = write(tmp_path, "late.csv", AZURE_HEADER + GOOD_ROW * 50 + "2023-11-16 18:17:04.1,x,1\n")
    reader = load_trace(path)
    with pytest.raises(TraceFormatError, match="line 52"):
        next(reader)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"timestamp": 0, "input_length": 5, "output_length": 2}\n{"timestamp": 1, "input_', "invalid JSON"),
        ('{"timestamp": 0, "input_length": 5, "output_length": 2}\n{"timestamp": 3, "input_length": 5}\n',
         "missing key(s) ['output_length']"),
        ('{"timestamp": 0, "input_length": 5, "output_length": 2}\n{"timestamp": "x", "input_length": 5, '
         '"output_length": 2}\n', "timestamp 'x' is not a number"),
        ('{"timestamp": 0, "input_length": 5, "output_length": 2}\n[1, 2]\n', "expected a JSON object"),
    ],
)  # fmt: skip
def test_malformed_mooncake_rows(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, "bad.jsonl", text)
    with pytest.raises(TraceFormatError) as info:
        list(load_trace(path))
    assert f"{path}: line 2: " in str(info.value) and problem in str(info.value)


def test_unsorted_timestamps_are_sorted_with_a_warning(tmp_path: Path) -> None:
    rows = ["2023-11-16 18:00:05.0,5,1\n", "2023-11-16 18:00:01.5,1,1\n", "2023-11-16 18:00:03.0,3,1\n"]
    path = write(tmp_path, "unsorted.csv", AZURE_HEADER + "".join(rows))
    reader = load_trace(path)
    with pytest.warns(UserWarning, match="not sorted"):
        requests = list(reader)
    assert [r.prompt_tokens for r in requests] == [1, 3, 5]
    assert [r.arrival for r in requests] == [0.0, 1.5, 3.5]
    assert reader.report.unsorted


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("empty.csv", "", "the file has no lines"),
        ("blank.jsonl", "\n\n", "the file has no lines"),
        ("header.csv", AZURE_HEADER, "no data rows"),
        ("allbad.csv", AZURE_HEADER + "x,1,1\n", "all 1 data rows are malformed"),
    ],
)
def test_empty_trace_is_an_error(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(EmptyTraceError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        list(load_trace(path, on_error="skip"))


def test_window_that_keeps_nothing_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", AZURE_HEADER + GOOD_ROW)
    with pytest.raises(EmptyTraceError, match="no requests left"):
        list(load_trace(path, start=10.0))


def test_burstgpt_failed_requests_dropped_or_kept_and_counted(tmp_path: Path) -> None:
    header = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    rows = "5,ChatGPT,472,18,490,Conversation log\n45,ChatGPT,1087,0,1087,Conversation log\n"
    rows += "118,GPT-4,417,251,668,API log\n"
    path = write(tmp_path, "burst.csv", header + rows)
    dropped = load_trace(path)
    assert [(r.arrival, r.output_tokens) for r in dropped] == [(5.0, 18), (118.0, 251)]
    assert dropped.format == "burstgpt" and dropped.report.failed == 1
    kept = load_trace(path, keep_failed=True)
    assert [r.output_tokens for r in kept] == [18, 0, 251] and kept.report.failed == 1


def test_header_problems_and_unknown_formats(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unrecognised header"):
        load_trace(write(tmp_path, "x.csv", "a,b,c\n1,2,3\n"))
    with pytest.raises(TraceFormatError, match=r"line 1: header .* lacks column\(s\) \['GeneratedTokens'\]"):
        list(load_trace(write(tmp_path, "y.csv", "TIMESTAMP,ContextTokens\n1,2\n"), "azure"))
    with pytest.raises(ValueError, match="unknown trace format"):
        load_trace(write(tmp_path, "z.csv", AZURE_HEADER + GOOD_ROW), "parquet")
    with pytest.raises(FileNotFoundError, match="no such trace file"):
        load_trace(tmp_path / "missing.csv")


def test_generic_rows_with_text_only_and_domain_default(tmp_path: Path) -> None:
    lines = [
        {"arrival": 0.5, "prompt_text": "x" * 40, "output_tokens": 3, "domain": "code"},
        {"arrival": 1.0, "prompt_tokens": 7, "output_tokens": 2},
    ]
    path = write(tmp_path, "g.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    got = list(load_trace(path, domain="chat", count_tokens=len))
    assert got == [Request(0, 0.5, 40, 3, "code", "x" * 40), Request(1, 1.0, 7, 2, "chat", None)]
    bad = write(tmp_path, "b.jsonl", json.dumps({"arrival": 0, "output_tokens": 3}) + "\n")
    with pytest.raises(TraceFormatError, match="line 1: needs prompt_tokens or prompt_text"):
        list(load_trace(bad))


def test_gzip_traces_are_read_transparently(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(AZURE_HEADER + GOOD_ROW)
    assert [r.prompt_tokens for r in load_trace(path)] == [4808]


def test_single_pass_gives_the_same_requests_and_rejects_disorder(tmp_path: Path) -> None:
    rows = ["2023-11-16 18:00:01.5,1,1\n", "2023-11-16 18:00:03.0,3,1\n", "2023-11-16 18:00:02.0,2,1\n"]
    sorted_path = write(tmp_path, "sorted.csv", AZURE_HEADER + rows[0] + rows[2] + rows[1])
    assert list(load_trace(sorted_path, validate_first=False)) == list(load_trace(sorted_path))
    single = load_trace(write(tmp_path, "unsorted.csv", AZURE_HEADER + "".join(rows)), validate_first=False)
    assert next(single).prompt_tokens == 1
    with pytest.raises(TraceFormatError, match="line 4: timestamp earlier than the previous row"):
        list(single)
    bad = write(tmp_path, "bad.csv", AZURE_HEADER + rows[0] + "x,1,1\n" + rows[1])
    skipping = load_trace(bad, validate_first=False, on_error="skip")
    with pytest.warns(UserWarning, match="skipped 1"):
        assert [r.prompt_tokens for r in skipping] == [1, 3]
    with pytest.raises(EmptyTraceError, match="no data rows"):
        list(load_trace(write(tmp_path, "h.csv", AZURE_HEADER), validate_first=False))


def test_azure_2024_offsets_midnight_and_100ns_digits(tmp_path: Path) -> None:
    rows = [
        "2024-05-10 23:59:59.9999999+00:00,10,1\n",
        "2024-05-11 00:00:00.0000001Z,11,1\n",
        "2024-05-11 02:00:01.5+02:00,12,1\n",  # 00:00:01.5 UTC
        "2024-05-11T00:00:02,13,1\n",
    ]
    requests = list(load_trace(write(tmp_path, "azure2024.csv", AZURE_HEADER + "".join(rows)), "azure2024"))
    assert [r.arrival for r in requests] == pytest.approx([0.0, 2e-7, 1.5000001, 2.0000001], abs=1e-9)
