"""specrouter validate on a tiny seeded ladder: both worlds run, the table is written, a rerun resumes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from backend.testing import save_tiny_ladder
from policies.registry import PolicySpecError
from specrouter.cli import main
from specrouter.experiments.validate import ValidateConfig, ValidateError, validate, workload
from traces.world_profile import (
    ModelProfile,
    PassTimeTable,
    WorldProfile,
    load_world_profile,
    save_world_profile,
)


@pytest.fixture(scope="module")
def ladder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_ladder(tmp_path_factory.mktemp("ladder"), levels=3, seed=0)


def small(ladder: Path, out: Path, **changes: object) -> ValidateConfig:
    settings: dict[str, object] = dict(requests=3, prompt_tokens=12, output_tokens=8, max_batch=2, seed=1)
    settings.update(changes)
    return ValidateConfig(str(ladder), "static:0>2:3", str(out), **settings)  # type: ignore[arg-type]


def test_workload_is_seeded_and_fits_the_context_window(ladder: Path, tmp_path: Path) -> None:
    config = small(ladder, tmp_path, requests=5, rate=2.0, prompt_tokens=100, output_tokens=60)
    first = workload(config, ("code", "prose"), window=128)
    assert first == workload(config, ("code", "prose"), window=128)
    assert [r.domain for r in first] == ["code", "prose", "code", "prose", "code"]
    assert all(r.prompt_tokens + r.output_tokens <= 128 for r in first)
    assert first[0].arrival == 0.0 and all(b.arrival >= a.arrival for a, b in zip(first, first[1:]))
    assert first != workload(small(ladder, tmp_path, requests=5, rate=2.0, seed=2), ("code", "prose"))


def test_validate_runs_both_worlds_writes_the_table_and_resumes(ladder: Path, tmp_path: Path) -> None:
    out = tmp_path / "validate"
    result = validate(small(ladder, out), plot=False)
    assert len(result.sim.requests) == len(result.real.requests) == 3
    assert {r.request_id for r in result.sim.requests} == {r.request_id for r in result.real.requests}
    metrics = {row["metric"]: row for row in result.rows}
    assert {"tpot_mean", "tpot_p99", "ttft_mean", "throughput_tokens_per_s", "chain_agreement"} <= set(
        metrics
    )
    assert metrics["chain_agreement"]["measured"] == 1.0  # a static policy routes identically in both worlds
    assert metrics["acceptance M0->M2"]["predicted"] is not None
    assert metrics["tpot_mean"]["predicted"] > 0 and metrics["tpot_mean"]["measured"] > 0
    saved = json.loads((out / "fidelity.json").read_text())
    assert [row["metric"] for row in saved] == [row["metric"] for row in result.rows]
    profile_written = (out / "profile.json").stat().st_mtime_ns

    again = validate(small(ladder, out), plot=False)
    assert again.sim.reused and again.real.reused
    assert (out / "profile.json").stat().st_mtime_ns == profile_written
    assert [r.finish for r in again.real.requests] == [r.finish for r in result.real.requests]

    changed = validate(small(ladder, out, output_tokens=6), plot=False)  # other settings: rerun both worlds
    assert not changed.sim.reused and not changed.real.reused
    assert all(r.output_tokens == 6 for r in changed.real.requests)


def test_bad_inputs_say_what_to_do(ladder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValidateError, match="specrouter profile --ladder"):
        validate(small(ladder, tmp_path, profile=str(tmp_path / "missing.json")))
    two_level = tmp_path / "two-level.json"
    table = PassTimeTable((1,), (1,), ((0.001,),))
    models = tuple(ModelProfile(name, 1e3, table) for name in ("tiny0", "tiny1"))
    save_world_profile(WorldProfile("test", models), two_level)
    with pytest.raises(ValidateError, match="measured on models .tiny0, tiny1. but the ladder has"):
        validate(small(ladder, tmp_path, profile=str(two_level)))
    with pytest.raises(PolicySpecError, match="static:0>3:3' does not fit the 3-model ladder"):
        validate(ValidateConfig(str(ladder), "static:0>3:3", str(tmp_path)))
    with pytest.raises(PolicySpecError, match="simulator"):
        validate(ValidateConfig(str(ladder), "oracle", str(tmp_path)))
    assert main(["validate", "--ladder", str(ladder), "--policy", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown policy 'nope'; known:" in capsys.readouterr().err
    assert main(["validate", "--ladder", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "no ladder.json" in capsys.readouterr().err


def test_validate_with_the_lookup_member_profiles_and_runs_it_in_both_worlds(
    ladder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "validate-ngram"
    config = dataclasses.replace(small(ladder, out, ngram="1:3"), policy="static:0>1>3:3,2")
    result = validate(config, plot=False)
    profile = load_world_profile(out / "profile.json")
    assert profile.names[0] == "ngram" and profile.model_free == (0,)
    for run in (result.sim, result.real):  # every round asked the lookup for tokens in both worlds
        assert run.rounds and all(r.chain_models == (0, 1, 3) for r in run.rounds)
        assert sum(r.proposed[0] for r in run.rounds) > 0
    metrics = {row["metric"]: row for row in result.rows}
    assert metrics["chain_agreement"]["measured"] == 1.0
    with pytest.raises(ValidateError, match="--ngram 3:1: expected MIN:MAX"):
        validate(dataclasses.replace(config, ngram="3:1"))
    networks_only = tmp_path / "networks-only.json"
    table = PassTimeTable((1,), (1,), ((0.001,),))
    models = tuple(
        ModelProfile(name, 1e3 * (i + 1), table) for i, name in enumerate(("tiny0", "tiny1", "tiny2"))
    )
    save_world_profile(WorldProfile("test", models), networks_only)
    with pytest.raises(
        ValidateError, match="measured on models .tiny0, tiny1, tiny2. but the ladder has .ngram"
    ):
        validate(dataclasses.replace(config, profile=str(networks_only)))
