"""Issue 13, policy and command rows: refused before any work, one line naming the knob or flag, exit 2.

Simulator-only (no torch models): policies and their knobs, ``simulate`` options and what its
``run.json`` records, ``search --knob``, ``compare --requests``, and the plot colours.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from cli_helpers import error_line

from specrouter.cli import main
from traces.records import read_records


@pytest.fixture()
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(
        "arrival,prompt_tokens,output_tokens\n" + "".join(f"{i / 4},{8 + i},{3 + i % 4}\n" for i in range(12))
    )
    return path


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("specrouter:nonsense=1", "unknown knob 'nonsense'"),
        ("bandit:foo=bar", "unknown knob 'foo'"),
        ("specrouter:time_rate=abc", "knob time_rate='abc': expected a number"),
        ("specrouter:max_lookahead=0", "knob max_lookahead='0' is out of range; expected >= 1"),
        ("dynamic-lookahead:-3", "knob drafter='-3' is out of range; expected >= 0"),
        ("specrouter:learn_waits=maybe", "knob learn_waits='maybe': expected true or false"),
        ("static:0>2:4", "does not fit the 4-model ladder"),
        ("static:0>5:4", "does not fit the 4-model ladder (M0..M3, target M3)"),
        ("static:2>1>3:4,1", "not strictly increasing"),
    ],
)
def test_bad_policies_are_refused_before_the_simulation(
    tmp_path: Path, trace: Path, capsys: pytest.CaptureFixture[str], policy: str, expected: str
) -> None:
    out = tmp_path / "run"
    code = main(
        ["simulate", "--trace", str(trace), "--cluster", "llama", "--policy", policy, "--out", str(out)]
    )
    assert code == 2
    line = error_line(capsys)
    assert f"policy {policy!r}" in line and expected in line, line
    assert not out.exists()


def test_good_knobs_are_typed_and_recorded_in_run_json(
    tmp_path: Path, trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    policy = "specrouter:learn_waits=false,max_lookahead=5"
    assert (
        main(["simulate", "--trace", str(trace), "--policy", policy, "--out", str(out), "--no-rounds"]) == 0
    )
    meta = read_records(out, rounds=False).metadata
    assert meta["policy_knobs"]["learn_waits"] is False and meta["policy_knobs"]["max_lookahead"] == 5
    assert meta["policy_knobs"]["time_rate"] == 0.02  # defaults filled in
    assert meta["trace_sha256"] == hashlib.sha256(trace.read_bytes()).hexdigest()
    assert meta["trace_load"]["rows"] == 12 and meta["trace_load"]["format"] == "csv"
    assert [m["name"] for m in meta["cluster_parameters"]["models"]][-1] == "llama-70b"
    assert len(meta["source"]["commit"]) == 40 and isinstance(meta["source"]["dirty"], bool)


def test_simulate_out_that_is_a_file_is_refused_before_simulating(
    tmp_path: Path, trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "taken"
    existing.write_text("keep me")
    assert main(["simulate", "--trace", str(trace), "--policy", "target-only", "--out", str(existing)]) == 2
    captured = capsys.readouterr()
    assert f"--out {existing}: is an existing file" in captured.err
    assert "policy target-only" not in captured.out  # no summary: nothing was simulated
    assert existing.read_text() == "keep me"


def test_huge_output_lengths_are_clipped_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "huge.csv"
    trace.write_text("arrival,prompt_tokens,output_tokens\n0.0,10,1000000000\n")
    out = tmp_path / "run"
    argv = [
        "simulate",
        "--trace",
        str(trace),
        "--policy",
        "target-only",
        "--max-tokens",
        "64",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert "1 output length(s) clipped to --max-tokens 64" in capsys.readouterr().err
    records = read_records(out, rounds=False)
    assert records.requests[0].output_tokens == 32  # output first, at most half the window
    assert records.metadata["clipped"]["outputs"] == 1


def test_burstgpt_failed_and_bad_rows_are_reported_and_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "burst.csv"
    trace.write_text(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "0,ChatGPT,10,5,15,Conversation log\n1,ChatGPT,10,0,10,Conversation log\n2,broken\n"
        "3,ChatGPT,12,4,16,Conversation log\n"
    )
    out = tmp_path / "run"
    base = ["simulate", "--trace", str(trace), "--policy", "target-only", "--no-rounds"]
    assert main([*base, "--out", str(out)]) == 2
    assert f"{trace}: line 4: expected 6 columns" in error_line(capsys)
    assert main([*base, "--out", str(out), "--skip-bad", "--format", "burstgpt"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 malformed rows" in err and "1 failed requests (0 output tokens) dropped" in err
    load = read_records(out, rounds=False).metadata["trace_load"]
    assert (load["skipped"], load["failed"], load["yielded"]) == (1, 1, 2)
    assert main([*base, "--out", str(tmp_path / "kept"), "--skip-bad", "--keep-failed"]) == 0
    assert len(read_records(tmp_path / "kept", rounds=False).requests) == 3


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["compare", "--requests", "-1"], "--requests -1: expected a positive whole number"),
        (["compare", "--requests", "0"], "--requests 0: expected a positive whole number"),
        (["search", "--policy", "specrouter", "--requests", "0"], "--requests 0: expected a positive"),
        (
            ["search", "--policy", "specrouter", "--knob", "ema_rate=0.01:0.5:log"],
            "policy 'specrouter' has no knob 'ema_rate'",
        ),
        (["search", "--policy", "specrouter", "--knob", "max_lookahead=2:8"], "takes integers; add :int"),
        (
            ["search", "--policy", "specrouter", "--knob", "max_lookahead=0:8:int"],
            "max_lookahead=0 is out of range",
        ),
        (["search", "--policy", "bandit", "--knob", "gamma=0.5:1.5"], "gamma"),
    ],
)
def test_counts_and_search_knobs_are_checked_before_any_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    assert expected in error_line(capsys)
    assert not out.exists()  # no study, no runs


def test_search_help_example_names_a_real_knob(capsys: pytest.CaptureFixture[str]) -> None:
    from policies.registry import knob_kinds

    with pytest.raises(SystemExit):
        main(["search", "--help"])
    examples = re.findall(r"--knob ([a-z_]+)=", capsys.readouterr().out)
    assert examples and all(name in knob_kinds("specrouter") for name in examples)
    loop_doc = (Path(__file__).parent.parent / "docs" / "loop.md").read_text()
    assert "ema_rate" not in loop_doc


def test_tpot_cdf_gives_every_policy_its_own_colour() -> None:
    from policies.registry import every_static_chain
    from specrouter.plots import NAMED_COLOURS, policy_colours

    labels = ["target-only", *every_static_chain(4), "dynamic-lookahead", "bandit", "specrouter", "oracle"]
    styles = policy_colours(labels)
    assert len(set(styles.values())) == len(labels) == 12
    assert styles["target-only"][0] != styles["specrouter"][0]
    assert styles["specrouter"] == (NAMED_COLOURS["specrouter"], "-")
    assert policy_colours(list(reversed(labels))) == styles  # the same in every figure of a run


@pytest.mark.parametrize("value", ["5:2", "0:3", "two:four", "2:x"])
def test_a_bad_ngram_flag_is_refused_before_the_ladder_loads(
    tmp_path: Path, trace: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    out = tmp_path / "run"
    code = main(["run", "--trace", str(trace), "--ngram", value, "--out", str(out)])
    assert code == 2
    line = error_line(capsys)
    assert f"--ngram {value}: expected MIN:MAX" in line, line
    assert not out.exists()


def test_ngram_with_the_simulated_compare_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["compare", "--ngram", "2:4", "--scenario", "stationary", "--out", str(tmp_path / "c")])
    assert code == 2
    assert "--ngram: only with --backend real" in error_line(capsys)


def test_a_policy_that_does_not_fit_the_ladder_with_its_lookup_member_is_refused(
    tmp_path: Path, trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(
        ["run", "--trace", str(trace), "--ngram", "2:4", "--policy", "static:0>4:4", "--out", str(out)]
    )
    assert code == 2
    assert "does not fit the 4-model ladder" in error_line(capsys)
