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
