"""``specrouter trace stats`` and ``specrouter trace generate``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from specrouter.cli import main
from traces.loaders import load_trace, write_trace
from traces.request import Request
from traces.stats import ascii_histogram, compute_stats


def small_trace(tmp_path: Path) -> tuple[Path, list[Request]]:
    requests = [
        Request(i, 0.5 * i, 100 + 37 * i, 1 + (i % 7), "code" if i % 4 else "chat") for i in range(41)
    ]
    path = tmp_path / "small.jsonl"
    write_trace(requests, path)
    return path, requests


def test_stats_prints_count_duration_rate_percentiles_and_histograms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, requests = small_trace(tmp_path)
    assert main(["trace", "stats", str(path)]) == 0
    out = capsys.readouterr().out
    assert "requests   41" in out and "duration   20.00 s" in out and "rate       2.000 req/s" in out
    prompts = np.array([r.prompt_tokens for r in requests])
    prompt_line = next(line for line in out.splitlines() if line.startswith("prompt "))
    assert prompt_line.split()[1:3] == [f"{prompts.mean():.1f}", f"{np.percentile(prompts, 50):.0f}"]
    assert "domains    code 73.2%, chat 26.8%" in out
    assert "prompt (tokens, log2 bins)" in out and "#" in out


def test_stats_json_options_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, requests = small_trace(tmp_path)
    plot = tmp_path / "trace.png"
    assert (
        main(["trace", "stats", str(path), "--json", "--start", "5", "--limit", "10", "--plot", str(plot)])
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["requests"] == 10 and summary["format"] == "jsonl"
    kept = [r for r in requests if r.arrival >= 5][:10]
    assert summary["output_mean"] == pytest.approx(np.mean([r.output_tokens for r in kept]))
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_stats_reports_bad_rows_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.0,5,1\n2023-11-16 18:00:01,5\n"
    )
    assert main(["trace", "stats", str(bad)]) == 2
    assert f"{bad}: line 3: expected 3 columns, found 2" in capsys.readouterr().err
    assert main(["trace", "stats", str(bad), "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "requests   1" in captured.out and "skipped 1 malformed rows" in captured.err


def test_generate_writes_the_configured_workload(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = {
        "arrivals": {"rate": 20},
        "prompt": {"kind": "lognormal", "mean": 200},
        "output": {"kind": "fixed", "value": 8},
        "domains": {"chat": 1},
        "shifts": [{"at": 5, "domains": {"code": 1}}],
        "duration": 10,
        "seed": 3,
    }
    (tmp_path / "w.json").write_text(json.dumps(config))
    out = tmp_path / "w.csv"
    assert main(["trace", "generate", str(tmp_path / "w.json"), str(out)]) == 0
    requests = list(load_trace(out))
    assert f"wrote {len(requests)} requests" in capsys.readouterr().out
    assert {r.domain for r in requests if r.arrival >= 5} == {"code"} and {
        r.output_tokens for r in requests
    } == {8}
    (tmp_path / "bad.json").write_text(json.dumps({**config, "speed": 1}))
    assert main(["trace", "generate", str(tmp_path / "bad.json"), str(out)]) == 2


def test_histogram_counts_every_value_once() -> None:
    values = np.array([0, 1, 2, 3, 4, 1000])
    text = ascii_histogram(values, "x")
    counts = [int(line.split()[1]) for line in text.splitlines()[1:]]
    assert sum(counts) == len(values)
    assert text.splitlines()[1].split()[:2] == ["0", "1"] and "512-1023" in text
    stats = compute_stats([Request(0, 1.0, 3, 4), Request(1, 3.0, 5, 6)])
    assert (stats.duration, stats.rate) == (2.0, 0.5)
