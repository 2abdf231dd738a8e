"""The model-free n-gram drafter in the simulator: calibrated by the profiler, replayed per domain.

* The profiler's proposal pmf and the acceptance of the lookup's tokens by the target are what
  real ``lookup > target`` greedy rounds, run back to back by the executor, give.
* A simulated ``static:0>T`` commits what the profile implies per round, and more on a domain
  whose prompts repeat spans than on one whose do not.
* Seeded runs with the lookup repeat bit for bit (lockstep and pipelined schedulers).
* Cluster configs and profiles with a model-free member: errors name the key.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from backend.executor import MultiLevelExecutor
from backend.ngram import NgramDrafter
from backend.profiler import ProfileSettings, profile_ladder
from backend.sampling import SamplingConfig
from backend.testing import agreeing_ladder
from policies.contract import Route
from policies.registry import make_policy
from sim.config import ConfigError, cluster_from_dict
from sim.engine import Simulation
from sim.presets import PRESETS
from sim.scenario import Scenario
from sim.world import World
from traces.request import Request
from traces.world_profile import (
    ModelProfile,
    PairProfile,
    PassTimeTable,
    ProposalProfile,
    WorldProfile,
    WorldProfileError,
    save_world_profile,
    validate_world_profile,
    world_profile_to_dict,
)

torch.set_num_threads(1)

SETTINGS = ProfileSettings(
    tokens=(1, 3), batch_sizes=(1, 2), contexts=(16,), warmup=0, repeats=1, prompts_per_domain=3,
    continuation=14, draft_positions=3,
)  # fmt: skip


def repeating(seed: int, count: int, length: int, vocab: int = 64) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        span = rng.integers(4, vocab, size=int(rng.integers(3, 6))).tolist()
        out.append((span * length)[:length])
    return out


def plain(seed: int, count: int, length: int, vocab: int = 64) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.permutation(np.arange(4, vocab))[:length].tolist() for _ in range(count)]


PROMPTS = {"copy": repeating(1, 3, 12), "plain": plain(2, 3, 12)}


@pytest.fixture(scope="module")
def profiled() -> tuple[Any, WorldProfile]:
    ladder = agreeing_ladder(3, seed=1).with_lookup(NgramDrafter(min_n=1, max_n=3))
    return ladder, profile_ladder(ladder, PROMPTS, SETTINGS)


def executor_lookup_rounds(ladder: Any, prompts: list[list[int]], continuation: int, limits: int) -> Any:
    """Real greedy rounds of ``lookup > target`` back to back per prompt and limit: the pmf of the
    number proposed per limit and ``(reached, accepted)`` per candidate count and position."""
    target = ladder.target
    executor = MultiLevelExecutor(ladder, SamplingConfig(temperature=0.0), eos_token_id=-1)
    proposed = [[0] * (k + 2) for k in range(limits)]
    reached = [[0] * (c + 1) for c in range(limits)]
    accepted = [[0] * (c + 1) for c in range(limits)]
    tokens = rejections = 0
    seq_id = 0
    for limit in range(1, limits + 1):
        for prompt in prompts:
            seq_id += 1
            executor.add(seq_id, prompt)
            start = 0
            while start + limit <= continuation:
                route = Route((0, target), (limit,), target)
                levels = executor.step({seq_id: (route, limit + 1)})[seq_id].feedback.levels
                n, run = levels[0].emitted, levels[-1].accepted
                assert levels[-1].proposed == n
                proposed[limit - 1][n] += 1
                if n:
                    for k in range(min(run + 1, n)):
                        reached[n - 1][k] += 1
                    for k in range(run):
                        accepted[n - 1][k] += 1
                    tokens += run
                    rejections += run < n
                start += run + 1
    return proposed, reached, accepted, tokens, rejections


def test_profiled_proposals_and_acceptance_are_what_real_rounds_give(profiled: Any) -> None:
    ladder, profile = profiled
    assert profile.model_free == (0,) and profile.names == ladder.names_of_members
    assert profile.models[0].params == 0 and profile.models[0].pass_time.tokens == (1,)
    reread = validate_world_profile(json.loads(json.dumps(world_profile_to_dict(profile))), "profile")
    assert dataclasses.replace(reread, meta={}) == dataclasses.replace(profile, meta={})
    target = ladder.target
    for domain in ("copy", "plain", None):
        prompts = PROMPTS[domain] if domain else PROMPTS["copy"] + PROMPTS["plain"]
        proposed, reached, accepted, tokens, rejections = executor_lookup_rounds(
            ladder, prompts, SETTINGS.continuation, SETTINGS.draft_positions
        )
        entry = profile.proposal(0, domain)
        assert entry is not None and entry.domain == domain and entry.mode == "greedy"
        for limit, counts in enumerate(proposed, start=1):
            assert entry.pmf(limit) == pytest.approx([c / sum(counts) for c in counts], abs=1e-12)
        assert entry.rounds == sum(map(sum, proposed))
        pair = next(
            p for p in profile.acceptance
            if (p.lower, p.upper, p.domain, p.mode) == (0, target, domain, "greedy")
        )  # fmt: skip
        assert pair.alpha == pytest.approx(tokens / (tokens + rejections), abs=1e-12)
        for c, (r, a) in enumerate(zip(reached, accepted)):
            expected = [x / y for x, y in zip(a, r) if y]
            assert list(pair.by_lookahead[c]) == pytest.approx(expected[: len(pair.by_lookahead[c])])
            assert len(pair.by_lookahead[c]) == len(expected)
    copy_pmf, plain_pmf = (profile.proposal(0, d).pmf(3) for d in ("copy", "plain"))
    assert copy_pmf[0] < plain_pmf[0]  # repeated spans: the lookup finds a match more often
    # the networks' own pairs moved up by one member, sampling entries for the lookup pairs too
    keys = {(p.lower, p.upper, p.mode) for p in profile.acceptance if p.domain is None}
    assert keys == {(lo, up, m) for lo in range(4) for up in range(lo + 1, 4) for m in ("greedy", "sampling")}


def profile_cluster(profile_path: Path, names: tuple[str, ...], slots: int = 1) -> Any:
    models: list[dict[str, Any]] = [{"name": names[0], "kind": "ngram"}]
    models += [
        {"name": name, "params": 1e4 * 10**k, "layers": 1, "hidden": 8, "heads": 1, "kv_heads": 1, "gpu": "d"}
        for k, name in enumerate(names[1:])
    ]
    raw = {
        "gpus": {"d": "CPU"}, "models": models, "max_batch_size": slots, "max_running_requests": slots,
        "padded_batches": True, "profile": str(profile_path),
    }  # fmt: skip
    return cluster_from_dict(raw, "profiled")


def implied_tokens_per_round(profile: WorldProfile, domain: str, limit: int) -> float:
    """``1 + E[accepted]`` of a ``lookup > target`` round from the profile's pmf and rows."""
    pmf = profile.proposal(0, domain).pmf(limit)  # type: ignore[union-attr]
    pair = profile.pair(0, len(profile.models) - 1, domain)
    assert pair is not None
    expected = 1.0
    for n, p in enumerate(pmf):
        survive = 1.0
        for k in range(n):
            row = pair.by_lookahead[n - 1] if pair.by_lookahead[n - 1] else pair.positions
            survive *= row[min(k, len(row) - 1)]
            expected += p * survive
    return expected


def made_up_profile() -> WorldProfile:
    """A lookup that copies well on ``edit`` and rarely matches on ``chat``."""
    table = PassTimeTable((1, 4), (1, 4), ((1e-3, 2e-3), (2e-3, 4e-3)), 64)
    lookup = PassTimeTable((1, 4), (1,), ((2e-5,), (6e-5,)), 64)
    models = (
        ModelProfile("ngram", 0.0, lookup, "ngram"),
        ModelProfile("small", 1e6, table),
        ModelProfile("big", 1e8, dataclasses.replace(table, seconds=((8e-3, 9e-3), (1e-2, 1.2e-2)))),
    )
    edit_rows = ((0.95,), (0.95, 0.9), (0.95, 0.9, 0.9), (0.9, 0.9, 0.9, 0.9))
    chat_rows = ((0.3,), (0.3, 0.3), (0.3, 0.3, 0.3), (0.3, 0.3, 0.3, 0.3))
    pairs = (
        PairProfile(0, 2, 0.9, "edit", by_lookahead=edit_rows),
        PairProfile(0, 2, 0.3, "chat", by_lookahead=chat_rows),
        PairProfile(0, 1, 0.5),
        PairProfile(1, 2, 0.7),
    )
    edit_pmf = ((0.2, 0.8), (0.2, 0.1, 0.7), (0.2, 0.1, 0.1, 0.6), (0.2, 0.1, 0.1, 0.1, 0.5))
    chat_pmf = ((0.9, 0.1), (0.9, 0.05, 0.05), (0.9, 0.05, 0.0, 0.05), (0.9, 0.0, 0.05, 0.0, 0.05))
    proposals = (ProposalProfile(0, edit_pmf, "edit"), ProposalProfile(0, chat_pmf, "chat"))
    return WorldProfile("test", models, pairs, {}, proposals)


def simulate(
    cluster: Any, policy: str, domain: str, requests: int = 60, seed: int = 3, output: int = 40
) -> Any:
    workload = [Request(i, 0.01 * i, 24, output, domain) for i in range(requests)]
    world = World(cluster, Scenario(seed=seed, acceptance_mode="empirical", correlation=0.0))
    return Simulation(world, make_policy(policy), record_rounds=True).run(workload)


def test_simulated_lookup_commits_what_the_profile_implies_per_domain(tmp_path: Path) -> None:
    profile = made_up_profile()
    path = tmp_path / "profile.json"
    save_world_profile(profile, path)
    cluster = profile_cluster(path, profile.names)
    per_round = {}
    for domain in ("edit", "chat"):
        result = simulate(cluster, "static:0>2:4", domain, requests=60, output=500)
        rounds = [r for r in result.rounds if r.chain_models == (0, 2)]
        per_round[domain] = sum(r.committed for r in rounds) / len(rounds)
        # within sampling noise (~1%); a request's last round, cut short by its budget, costs ~0.5%
        assert per_round[domain] == pytest.approx(implied_tokens_per_round(profile, domain, 4), rel=0.03)
    assert per_round["edit"] > 2.0 * per_round["chat"]
    # a lookup pass costs the profiled lookup table at its rows (one row: 2e-5 s), not a network pass
    # (a request's last round with room for one token looks nothing up: no pass, 0 s)
    rounds = simulate(cluster, "static:0>2:4", "edit", requests=3).rounds
    lookup_seconds = {r.pass_seconds[0] for r in rounds if r.passes[0]}
    assert lookup_seconds and all(seconds == pytest.approx(2e-5) for seconds in lookup_seconds)


def test_a_profiled_tiny_ladder_simulates_what_its_profile_implies(profiled: Any, tmp_path: Path) -> None:
    _, profile = profiled
    greedy = dataclasses.replace(
        profile, acceptance=tuple(p for p in profile.acceptance if p.mode == "greedy")
    )
    path = tmp_path / "tiny.json"
    save_world_profile(greedy, path)
    cluster = profile_cluster(path, profile.names)
    for domain in ("copy", "plain"):
        result = simulate(cluster, "static:0>3:3", domain, requests=60, output=500)
        rounds = [r for r in result.rounds if r.chain_models == (0, 3)]
        measured = sum(r.committed for r in rounds) / len(rounds)
        assert measured == pytest.approx(implied_tokens_per_round(greedy, domain, 3), rel=0.04), domain


def lookup_llama() -> Any:
    raw = copy.deepcopy(PRESETS["llama"])
    lookup = {
        "name": "ngram",
        "kind": "ngram",
        "propose": {"*": 0.2, "edit": 0.9},
        "accept": {"*": 0.4, "edit": 0.9},
    }
    raw["models"] = [lookup] + raw["models"]
    return cluster_from_dict(raw, "llama+ngram")


def parametric_run(cluster: Any, policy: str, domain: str, seed: int = 5) -> Any:
    workload = [Request(i, 0.02 * i, 100, 60, domain if i % 2 else "chat") for i in range(80)]
    world = World(cluster, Scenario(seed=seed, noise_sigma=0.05, correlation=0.5))
    return Simulation(world, make_policy(policy), record_rounds=True).run(workload)


@pytest.mark.parametrize("policy", ["static:0>4:4", "static:0>2>4:4,1", "specrouter"])
def test_seeded_runs_with_the_lookup_repeat_bit_for_bit(policy: str, tmp_path: Path) -> None:
    cluster = lookup_llama()  # pipelined scheduler
    first, second = parametric_run(cluster, policy, "edit"), parametric_run(cluster, policy, "edit")
    assert first.requests == second.requests and first.rounds == second.rounds
    assert parametric_run(cluster, policy, "edit", seed=6).requests != first.requests
    path = tmp_path / "profile.json"
    save_world_profile(made_up_profile(), path)
    lockstep = profile_cluster(path, made_up_profile().names, slots=4)
    chain = policy.replace(">4", ">2").replace("0>2>2", "0>1>2")
    a, b = simulate(lockstep, chain, "edit"), simulate(lockstep, chain, "edit")
    assert a.requests == b.requests and a.rounds == b.rounds


def test_parametric_lookup_pays_on_the_domain_it_matches() -> None:
    cluster = lookup_llama()
    assert cluster.model_free == (0,)
    rounds = parametric_run(cluster, "static:0>4:4", "edit").rounds
    by_domain: dict[bool, list[int]] = {True: [], False: []}
    for record in rounds:
        by_domain[record.request_id % 2 == 1].append(record.committed)
    edit, chat = (float(np.mean(by_domain[k])) for k in (True, False))
    assert edit > 2.5 * chat > 2.0  # matches on edit ~ 0.9, on chat ~ 0.2


# -- config and profile errors ---------------------------------------------------------
def config(models: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    net = {"name": "net", "params": 1e6, "layers": 1, "hidden": 8, "heads": 1, "kv_heads": 1, "gpu": "g"}
    return {"gpus": {"g": "CPU"}, "models": models + [net], **extra}


NGRAM = {"name": "ngram", "kind": "ngram", "propose": {"*": 0.5}, "accept": {"*": 0.5}}


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ([{**NGRAM, "kind": "suffix-tree"}], r"models\[0\]\.kind: unknown model kind 'suffix-tree'"),
        ([{**NGRAM, "layers": 2}], r"models\[0\]\.layers: a model-free member has no shape"),
        ([{**NGRAM, "params": 5}], r"models\[0\]\.params: a model-free member has no weights"),
        ([{**NGRAM, "gpu": "h"}], r"models\[0\]\.gpu: unknown GPU 'h'"),
        ([{k: v for k, v in NGRAM.items() if k != "propose"}], r"models\[0\]\.propose: missing required key"),
        ([{**NGRAM, "propose": {"*": 1.5}}], r"models\[0\]\.propose\.\*: expected a probability in \[0, 1\]"),
        ([{**NGRAM, "accept": {"*": 0}}], r"models\[0\]\.accept\.\*: expected a probability in \(0, 1\]"),
        ([{**NGRAM, "row_s": -1}], r"models\[0\]\.row_s: expected seconds >= 0"),
        (
            [
                {
                    "name": "n2",
                    "params": 1e5,
                    "layers": 1,
                    "hidden": 8,
                    "heads": 1,
                    "kv_heads": 1,
                    "gpu": "g",
                },
                NGRAM,
            ],
            r"models\[1\]\.kind: a model-free member \('ngram'\) can only be the first",
        ),
    ],
)
def test_bad_model_free_configs_name_the_key(models: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cluster_from_dict(config(models), "c")


def test_a_model_free_target_and_lookup_keys_on_a_network_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"models\[0\]\.kind: the target cannot be model-free"):
        cluster_from_dict({"gpus": {"g": "CPU"}, "models": [NGRAM]}, "c")
    net = config([])["models"][0]
    with pytest.raises(ConfigError, match=r"models\[0\]\.propose: only a model-free member"):
        cluster_from_dict(config([{**net, "propose": {"*": 0.3}}]), "c")
    with pytest.raises(
        ConfigError, match=r"models\[0\]\.params: 0 parameters -- a model-free member .* needs"
    ):
        cluster_from_dict(config([{**net, "params": 0.0}]), "c")


def test_profiles_with_a_lookup_are_checked(tmp_path: Path) -> None:
    document = world_profile_to_dict(made_up_profile())
    assert validate_world_profile(document).model_free == (0,)
    bad_pmf = copy.deepcopy(document)
    bad_pmf["proposals"][0]["by_limit"][1] = [0.5, 0.1, 0.1]
    with pytest.raises(WorldProfileError, match=r"proposals\[0\]\.by_limit\[1\]: probabilities sum to"):
        validate_world_profile(bad_pmf, "p.json")
    short = copy.deepcopy(document)
    short["proposals"][0]["by_limit"][0] = [1.0]
    with pytest.raises(WorldProfileError, match=r"by_limit\[0\]: expected 2 probabilities"):
        validate_world_profile(short, "p.json")
    network = copy.deepcopy(document)
    network["proposals"][0]["member"] = 1
    with pytest.raises(
        WorldProfileError, match=r"proposals\[0\]\.member: member 1 \(small\) is not model-free"
    ):
        validate_world_profile(network, "p.json")
    late = copy.deepcopy(document)
    late["models"][1]["kind"] = "ngram"
    with pytest.raises(
        WorldProfileError, match=r"models\[1\]\.kind: a model-free member can only be the first"
    ):
        validate_world_profile(late, "p.json")
    weights = copy.deepcopy(document)
    weights["models"][0]["params"] = 3.0
    with pytest.raises(WorldProfileError, match=r"models\[0\]\.params: value 3.0 out of range"):
        validate_world_profile(weights, "p.json")
    # a version-1 document (no kind, no proposals) still loads
    old = {k: v for k, v in copy.deepcopy(document).items() if k != "proposals"}
    old["version"] = 1
    old["models"] = [{k: v for k, v in m.items() if k != "kind"} for m in old["models"][1:]]
    old["acceptance"] = [
        {**p, "lower": p["lower"] - 1, "upper": p["upper"] - 1} for p in old["acceptance"] if p["lower"]
    ]
    assert validate_world_profile(old, "v1.json").model_free == ()


def test_a_cluster_and_its_profile_must_agree_on_the_lookup(tmp_path: Path) -> None:
    profile = made_up_profile()
    path = tmp_path / "p.json"
    save_world_profile(profile, path)
    networks_only = profile_cluster(path, profile.names)
    raw_models = [
        {"name": n, "params": 1e6 * (k + 1), "layers": 1, "hidden": 8, "heads": 1, "kv_heads": 1, "gpu": "d"}
        for k, n in enumerate(profile.names)
    ]
    mismatched = cluster_from_dict({"gpus": {"d": "CPU"}, "models": raw_models, "profile": str(path)}, "m")
    with pytest.raises(ValueError, match="member 0 \\(ngram\\) is model-free but cluster 'm' member 0"):
        World(mismatched, Scenario())
    no_proposals = dataclasses.replace(profile, proposals=())
    save_world_profile(no_proposals, path)
    with pytest.raises(
        ConfigError, match=r"models\[0\]\.propose: the world profile .* has no proposal statistics"
    ):
        World(networks_only, Scenario())


def test_profile_command_with_the_lookup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from backend.testing import save_tiny_ladder
    from specrouter.cli import main
    from traces.world_profile import load_world_profile

    ladder_dir = save_tiny_ladder(tmp_path / "ladder", levels=2, seed=3)
    out = tmp_path / "profile.json"
    argv = ["profile", "--ladder", str(ladder_dir), "--out", str(out), "--quick", "--prompts", "1"]
    assert main([*argv, "--ngram", "1:3"]) == 0
    profile = load_world_profile(out)
    assert profile.names == ("ngram", "tiny0", "tiny1") and profile.model_free == (0,)
    assert profile.proposal(0) is not None and profile.meta["lookup"]["max_n"] == 3
    assert {(p.lower, p.upper) for p in profile.acceptance} == {(0, 1), (0, 2), (1, 2)}
    assert "lookup proposes" in capsys.readouterr().out
    assert main([*argv, "--ngram", "3:1"]) != 0
    assert "--ngram 3:1: expected MIN:MAX" in capsys.readouterr().err
