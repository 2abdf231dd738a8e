"""``specrouter profile`` and ``specrouter run`` on a saved tiny ladder (files in, files out)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.testing import save_tiny_ladder
from specrouter.cli import main
from traces.records import read_records
from traces.world_profile import load_world_profile


@pytest.fixture(scope="module")
def ladder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_ladder(tmp_path_factory.mktemp("ladder"), levels=2, seed=3)


def test_profile_command_writes_a_loadable_profile(
    ladder_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "profile.json"
    assert main(["profile", "--ladder", str(ladder_dir), "--out", str(out), "--quick", "--prompts", "1"]) == 0
    profile = load_world_profile(out)
    assert profile.names == ("tiny0", "tiny1")
    assert profile.meta["machine"]["torch"] and profile.meta["settings"]["repeats"] == 3
    assert "pair 0->1 greedy" in capsys.readouterr().out


def test_run_command_replays_a_trace(
    ladder_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:03.00,12,5\n"
        "2023-11-16 18:17:03.01,5000,4\n"  # longer than the 1024-position window: clipped
        "2023-11-16 18:17:03.02,7,6\n"
    )
    out = tmp_path / "run"
    argv = ["run", "--ladder", str(ladder_dir), "--trace", str(trace), "--policy", "static:M0[3]>M1"]
    assert main([*argv, "--out", str(out), "--replay", "fast", "--max-batch", "2", "--csv"]) == 0
    records = read_records(out)
    assert sorted(r.output_tokens for r in records.requests) == [4, 5, 6]
    assert records.metadata["policy"] == "static:M0[3]>M1" and records.metadata["status"] == "complete"
    assert records.metadata["clipped"]["prompts"] == 1
    assert (out / "rounds.csv").exists() and sum(r.committed for r in records.rounds) == 15
    captured = capsys.readouterr()
    assert "throughput" in captured.out and "clipped" in captured.err


@pytest.mark.parametrize(
    ("name", "message"), [("nonsense", "unknown policy 'nonsense'"), ("oracle", "runs only in the simulator")]
)
def test_run_command_refuses_policies_it_cannot_build(
    name: str, message: str, ladder_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.00,12,5\n")
    argv = ["run", "--ladder", str(ladder_dir), "--trace", str(trace), "--policy", name]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_run_command_with_the_lookup_member_records_it(
    ladder_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("arrival,prompt_tokens,output_tokens\n0.0,40,12\n0.01,30,9\n")
    out = tmp_path / "run"
    argv = ["run", "--ladder", str(ladder_dir), "--trace", str(trace), "--policy", "static:0>2:4"]
    assert main([*argv, "--ngram", "1:3", "--out", str(out), "--replay", "fast"]) == 0
    records = read_records(out)
    assert records.metadata["models"] == ["ngram", "tiny0", "tiny1"]
    assert records.metadata["lookup"] == {"member": 0, "min_n": 1, "max_n": 3}
    assert sorted(r.output_tokens for r in records.requests) == [9, 12]
    # every round starts at the lookup (member 0); it is asked for tokens (its level's "proposed")
    # except in a request's last round with room for the target's token only
    assert all(r.chain_models[0] == 0 for r in records.rounds)
    assert (
        sum(r.proposed[0] == 0 for r in records.rounds) <= 2
        and sum(r.proposed[0] for r in records.rounds) > 0
    )
    assert "static:0>2:4" in capsys.readouterr().out
