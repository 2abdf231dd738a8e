"""Issue 13, trace rows: bad trace files get one line naming the file and line, exit status 2.

Every test goes through the command line (``specrouter.cli.main``) and checks both the exit
status and that the message names the culprit; files that are fine (a byte-order mark, gzip
without ``.gz``) must load.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from specrouter.cli import main

GENERIC_HEADER = "arrival,prompt_tokens,output_tokens\n"


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The command's stderr, which must be one line and no traceback."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("name", "text", "count"),
    [
        ("azure.csv", "\ufeffTIMESTAMP,ContextTokens,GeneratedTokens\r\n2023-11-16 18:15:00.5,10,5\r\n", 1),
        ("generic.csv", "\ufeff" + GENERIC_HEADER + "0.0,10,5\n0.5,4,2\n", 2),
        ("generic.jsonl", '\ufeff{"arrival": 0.0, "prompt_tokens": 3, "output_tokens": 2}\n', 1),
    ],
)
def test_a_byte_order_mark_is_read_in_any_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, count: int
) -> None:
    path = write(tmp_path / name, text)
    assert main(["trace", "stats", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["requests"] == count


def test_gzip_is_recognised_by_its_bytes_not_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "trace.csv"  # gzip data without .gz
    path.write_bytes(gzip.compress((GENERIC_HEADER + "0.0,10,5\n").encode()))
    assert main(["trace", "stats", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["requests"] == 1


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("fake.csv.gz", (GENERIC_HEADER + "0.0,10,5\n").encode(), "not gzip-compressed"),
        ("binary.csv", bytes(range(128, 256)) * 4, "line 1: not UTF-8 text"),
        ("late.csv", (GENERIC_HEADER + "0.0,10,5\n").encode() + b"1.0,\xff\xfe,3\n", "line 3: not UTF-8"),
        ("cut.csv.gz", gzip.compress((GENERIC_HEADER + "0.0,10,5\n" * 50).encode())[:40], "corrupt gzip"),
        ("huge.csv", (GENERIC_HEADER + "0.0,10,99999999999999999999999\n").encode(), "line 2: output_tokens"),
        ("negative.csv", (GENERIC_HEADER + "-5.0,10,5\n").encode(), "line 2: arrival '-5.0' is negative"),
        ("negative.jsonl", b'{"arrival": -1, "prompt_tokens": 3, "output_tokens": 2}\n', "line 1: arrival"),
        ("empty_prompt.csv", (GENERIC_HEADER + "0.0,0,5\n").encode(), "line 2: prompt_tokens is 0"),
    ],
)
def test_bad_trace_files_name_the_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    for argv in (
        ["trace", "stats", str(path)],
        ["simulate", "--trace", str(path), "--policy", "target-only"],
    ):
        assert main(argv) == 2
        line = error_line(capsys)
        assert str(path) in line and expected in line, line


def test_prompt_tokens_zero_never_reaches_the_simulator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = write(tmp_path / "zero.jsonl", '{"arrival": 0, "prompt_tokens": 0, "output_tokens": 4}\n')
    out = tmp_path / "run"
    assert main(["simulate", "--trace", str(trace), "--policy", "target-only", "--out", str(out)]) == 2
    assert "line 1: prompt_tokens is 0; expected at least 1" in error_line(capsys)
    assert not out.exists()  # refused before any record was written


def test_trace_generate_refuses_a_config_that_draws_empty_prompts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "workload.json"
    lengths = {"prompt": {"kind": "fixed", "value": 0}, "output": {"kind": "fixed", "value": 3}}
    config.write_text(json.dumps({"arrivals": {"rate": 5}, **lengths, "count": 4}))
    out = tmp_path / "w.jsonl"
    assert main(["trace", "generate", str(config), str(out)]) == 2
    line = error_line(capsys)
    assert str(config) in line and "prompt: lengths must be >= 1" in line
    assert not out.exists()


def test_trace_generate_into_a_directory_is_refused_before_generating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "workload.json"
    lengths = {"prompt": {"kind": "fixed", "value": 4}, "output": {"kind": "fixed", "value": 3}}
    config.write_text(json.dumps({"arrivals": {"rate": 5}, **lengths, "count": 4}))
    assert main(["trace", "generate", str(config), str(tmp_path)]) == 2
    line = error_line(capsys)
    assert f"OUT {tmp_path}: is a directory" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["workload.json"]  # nothing half-written


def test_trace_generate_output_is_complete_or_absent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "workload.json"
    lengths = {"prompt": {"kind": "fixed", "value": 4}, "output": {"kind": "fixed", "value": 3}}
    config.write_text(json.dumps({"arrivals": {"rate": 5}, **lengths, "count": 7}))
    out = tmp_path / "w.csv.gz"
    assert main(["trace", "generate", str(config), str(out)]) == 0
    assert gzip.decompress(out.read_bytes()).decode().count("\n") == 8  # header + 7 rows, compressed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.csv.gz", "workload.json"]  # no partial file left


@pytest.mark.parametrize("flag", ["0", "-3"])
def test_limit_below_one_is_refused_the_same_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    trace = write(tmp_path / "t.csv", GENERIC_HEADER + "0.0,10,5\n")
    for argv in (["trace", "stats", str(trace)], ["simulate", "--trace", str(trace)]):
        assert main([*argv, "--limit", flag]) == 2
        assert f"--limit {flag}: expected a positive whole number" in error_line(capsys)


def test_debug_shows_the_traceback_instead(tmp_path: Path) -> None:
    trace = write(tmp_path / "zero.csv", GENERIC_HEADER + "0.0,0,5\n")
    quiet = subprocess.run(
        [sys.executable, "-m", "specrouter", "trace", "stats", str(trace)], capture_output=True, text=True
    )
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert (
        quiet.stderr.strip()
        == f"specrouter trace stats: {trace}: line 2: prompt_tokens is 0; expected at least 1"
    )
    loud = subprocess.run(
        [sys.executable, "-m", "specrouter", "--debug", "trace", "stats", str(trace)],
        capture_output=True,
        text=True,
    )
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "TraceFormatError" in loud.stderr
