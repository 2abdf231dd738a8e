"""``specrouter simulate`` end to end on small traces, every preset ladder."""

from __future__ import annotations

from pathlib import Path

import pytest

from specrouter.cli import main
from traces.records import read_records
from traces.world_profile import ModelProfile, PairProfile, PassTimeTable, WorldProfile, save_world_profile


def small_trace(tmp_path: Path, rows: int = 25) -> Path:
    path = tmp_path / "azure.csv"
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    lines += [f"2023-11-16 18:15:{i:02d}.5000000,{100 + 13 * i},{5 + (7 * i) % 30}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("cluster", "policy"), [("llama", "static:0>2>3:4,1"), ("qwen", "specrouter"), ("cpu", "target-only")]
)
def test_simulate_writes_records_and_prints_summary(tmp_path, capsys, cluster: str, policy: str) -> None:
    out = tmp_path / "run"
    code = main(["simulate", "--trace", str(small_trace(tmp_path)), "--cluster", cluster, "--policy", policy,
                 "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    records = read_records(out)
    assert len(records.requests) == 25 and records.rounds
    assert sum(r.committed for r in records.rounds) == sum(r.output_tokens for r in records.requests)
    assert records.metadata["status"] == "complete" and records.metadata["cluster"] == cluster
    assert "ttft" in printed and "rounds" in printed and "req/s" in printed


def test_simulate_with_a_world_profile_in_empirical_mode(tmp_path, capsys) -> None:
    table = PassTimeTable((1, 8), (1, 16), ((0.002, 0.004), (0.004, 0.02)), 128)
    models = tuple(ModelProfile(n, p, table) for n, p in (("d", 4e5), ("m", 4e6), ("t", 1.5e7)))
    pairs = (PairProfile(0, 2, 0.5, None, "greedy", (0.9, 0.6, 0.3), (0.1, 0.5)), PairProfile(1, 2, 0.8))
    profile = tmp_path / "world.json"
    save_world_profile(WorldProfile("test", models, pairs), profile)
    argv = ["simulate", "--trace", str(small_trace(tmp_path)), "--cluster", "cpu", "--profile", str(profile),
            "--empirical", "--policy", "static:0>2:3", "--no-rounds"]  # fmt: skip
    assert main(argv) == 0
    assert "requests 25" in capsys.readouterr().out


def test_simulate_reports_bad_cluster(tmp_path, capsys) -> None:
    code = main(
        ["simulate", "--trace", str(small_trace(tmp_path)), "--cluster", "mistral", "--policy", "oracle"]
    )
    assert code == 2
    assert "mistral" in capsys.readouterr().err


def test_scenario_file_slows_the_target_and_shifts_domains(tmp_path) -> None:
    trace = small_trace(tmp_path)
    scenario = tmp_path / "scenario.json"
    scenario.write_text(
        '{"seed": 2, "slowdowns": [{"gpu": "big", "start": 0, "end": 1e9, "factor": 3.0}],'
        ' "domain_shifts": [{"at": 10, "mix": {"code": 1}}], "domains": {"code": 0.5}}'
    )

    def mean_e2e(extra: list[str], out: Path) -> tuple[float, list]:
        argv = ["simulate", "--trace", str(trace), "--cluster", "llama", "--policy", "static:0>2>3:4,1",
                "--out", str(out), "--seed", "2", *extra]  # fmt: skip
        assert main(argv) == 0
        requests = read_records(out).requests
        return sum(r.e2e for r in requests) / len(requests), requests

    calm, calm_requests = mean_e2e([], tmp_path / "calm")
    slowed, slowed_requests = mean_e2e(["--scenario", str(scenario)], tmp_path / "slow")
    assert slowed > 2.0 * calm
    assert {r.domain for r in calm_requests} == {None}
    assert [r.domain for r in slowed_requests].count("code") == sum(
        1 for r in calm_requests if r.arrival >= 10
    )
