from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from specrouter.cli import COMMAND_MODULES, main

LOOP_COMMANDS = ("demo", "validate", "compare", "search")


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    for command in COMMAND_MODULES:
        assert command in out


@pytest.mark.parametrize("command", LOOP_COMMANDS)
def test_loop_commands_have_help_with_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"specrouter {command}" in out


def test_demo_without_a_ladder_says_how_to_get_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--ladder", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "specrouter zoo build" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_the_whole_loop_on_a_tiny_ladder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from backend.testing import save_tiny_ladder

    ladder = save_tiny_ladder(tmp_path / "ladder", levels=3, seed=0)
    out = tmp_path / "demo"
    policies = ["--policy", "target-only", "--policy", "static:0>2:3", "--policy", "specrouter"]
    argv = ["demo", "--ladder", str(ladder), "--out", str(out), "--trace-requests", "12"]
    assert main([*argv, "--validate-requests", "2", "--output-tokens", "4", *policies]) == 0
    printed = capsys.readouterr().out
    assert "target-only" in printed and "vs target" in printed and "tpot_mean" in printed
    rows = json.loads((out / "compare" / "comparison.json").read_text())
    assert [row["policy"] for row in rows] == ["target-only", "static:0>2:3", "specrouter"]
    assert rows[0]["speedup_vs_target_only"] == 1.0
    assert (out / "compare" / "azure-conv" / "tpot_cdf.png").exists()
    assert (out / "validate" / "fidelity.json").exists() and (
        out / "validate" / "predicted_vs_measured.svg"
    ).exists()
    # the validation runs SpecRouter warm-started from the profile it just measured, in both worlds
    for world in ("sim", "real"):
        record = json.loads((out / "validate" / world / "run.json").read_text())
        assert record["policy"] == f"specrouter:prior={out / 'validate' / 'profile.json'}", record["policy"]


def test_compare_runs_policies_on_a_scenario_and_keeps_finished_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compare", "--scenario", "slowdown", "--requests", "40", "--out", str(tmp_path)]
    policies = ["--policy", "target-only", "--policy", "static:0>2>3:4,1", "--policy", "specrouter"]
    assert main([*argv, *policies]) == 0
    out = capsys.readouterr().out
    assert "slowdown" in out and "vs static" in out
    rows = json.loads((tmp_path / "comparison.json").read_text())
    assert {row["policy"] for row in rows} == {"target-only", "static:0>2>3:4,1", "specrouter"}
    assert all(row["tpot_mean"] > 0 for row in rows)
    assert (tmp_path / "slowdown" / "tpot_cdf.svg").exists()
    assert (tmp_path / "slowdown" / "specrouter" / "chains.png").exists()
    written = (tmp_path / "slowdown" / "specrouter" / "run.json").stat().st_mtime_ns
    assert main([*argv, *policies, "--no-plots"]) == 0
    assert (tmp_path / "slowdown" / "specrouter" / "run.json").stat().st_mtime_ns == written
    assert json.loads((tmp_path / "comparison.json").read_text()) == rows


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "--scenario", "no-such"], "unknown scenario(s) no-such; shipped:"),
        (["compare", "--scenario", "stationary", "--policy", "nope"], "unknown policy 'nope'; known:"),
        (["compare", "--backend", "real", "--scenario", "stationary", "--policy", "oracle"], "simulator"),
        (["compare", "--scenario", "stationary", "--policy", "static:0>2:3"], "not fit the 4-model ladder"),
        (["search", "--policy", "nope"], "unknown policy 'nope'"),
        (["search", "--policy", "specrouter", "--scenario", "no-such"], "unknown scenario(s) no-such"),
        (["search", "--policy", "target-only"], "declares no knobs"),
        (["search", "--policy", "specrouter", "--knob", "ema"], "expected name=low:high"),
    ],
)
def test_bad_inputs_fail_with_what_to_do(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_compare_on_the_real_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from backend.testing import save_tiny_ladder

    ladder = save_tiny_ladder(tmp_path / "ladder", levels=3, seed=0)
    argv = [
        "compare",
        "--backend",
        "real",
        "--ladder",
        str(ladder),
        "--scenario",
        "stationary",
        "--requests",
        "2",
    ]
    argv += ["--output-tokens", "4", "--out", str(tmp_path / "out"), "--no-plots"]
    assert main([*argv, "--policy", "target-only", "--policy", "static:0>2:3"]) == 0
    rows = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert [row["policy"] for row in rows] == ["target-only", "static:0>2:3"]
    records = (tmp_path / "out" / "stationary" / "static_0_2_3" / "run.json").read_text()
    assert '"world": "real"' in records
    assert main([*argv, "--policy", "static:0>3:4"]) == 2
    assert "does not fit the 3-model ladder" in capsys.readouterr().err


def test_search_command_writes_results_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["search", "--policy", "dynamic-lookahead", "--world", "plan", "--scenario", "plan-stationary"]
    argv += ["--workers", "1", "--out", str(tmp_path)]
    assert main([*argv, "--trials", "2"]) == 0
    first = json.loads((tmp_path / "search.json").read_text())
    assert len(first["trials"]) == 2 and set(first["best_params"]) == {"initial", "maximum"}
    assert main([*argv, "--trials", "3"]) == 0
    second = json.loads((tmp_path / "search.json").read_text())
    assert second["trials"][:2] == first["trials"] and len(second["trials"]) == 3
    assert "best ms per token" in capsys.readouterr().out


def test_console_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "specrouter", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "specrouter" in result.stdout
