"""Routing quality of every policy on every shipped scenario over several seeds, and SpecRouter's cost.

    python3 bench/policy_quality.py [--quick] [--limit N] [--seeds 0,1,2] [--scenarios a,b]
                                    [--jobs J] [--out results.json]

For each scenario (``specrouter/scenarios/*.json``: the Llama-style 68M/1B/8B/70B preset,
Azure 2023 trace arrivals) and each seed it runs target-only, every static chain with
lookaheads tuned by the truth planner at the scenario's start, the two-level
dynamic-lookahead heuristic, the discounted-UCB chain bandit, SpecRouter, the truth
planner (``oracle``: the system cost model under the world's true acceptance and pass
times) and the **hindsight oracle** (``specrouter.scenarios.hindsight_oracle``: the best
candidate per scenario phase, replayed, among every policy run here -- static and adaptive --
and the found static chains; at least as strong as each of them by construction.  With static
candidates alone, SpecRouter beat it on ``stationary`` by 2.7%, 4x the seed spread, on
2026-12-04: one route per phase is no bound for routing that follows the load within a phase).
The routes SpecRouter and the truth planner took most (whole run and per
phase, on any seed) are then run whole as static chains too, on every seed
(:func:`found_statics`).  **The best static chain in hindsight** (row ``best-static``) is the one
chain, tuned or found, with the lowest mean TPOT over the seeds: a configuration someone could
deploy, judged like every policy by its mean (:func:`best_static_by_mean`).  The best chain *of
each seed* (row ``best-static-per-seed``, the reference of tables before 2026-12-07 night) is a
minimum over several chains' noisy runs, so it sits below every chain's own mean: SpecRouter's
ratio to it is reported too.  Per policy it reports mean TPOT, and the ratios to the hindsight
oracle, to the best static chain, to the best chain of each seed and to the best tuned one of
each seed, as mean +- sample standard deviation over the seeds.  ``load_ramp`` also reports its
saturated phase (requests arriving in the last quarter) against target-only.  Beside the goals'
metric it reports mean end-to-end latency over the best static chain *by that metric* (``e2e /
best static``) and the share of requests finished in their first round (``1-round``): their TPOT
is 0, so mean TPOT favours routes that commit many tokens in a request's first round (see
:func:`first_round_only`).

It then times SpecRouter's ``route()`` + ``observe()`` on a synthetic 5-model ladder
(policies.synthetic), amortised over all rounds including re-plans (see :func:`policy_cost`).

With ``--demo-profile PROFILE`` (a ``specrouter demo`` run's ``validate/profile.json``) it also
judges the demo-world goal: in the world ``specrouter demo`` simulates from that profile (the
embedded ladder, 1,000 conversation requests at load 0.5), SpecRouter cold and warm-started
from the profile against every static chain with drafter lookaheads 1-6 (3-level: 2-4 and 1-2),
per seed (see :func:`demo_quality`).

The last line printed is one JSON object ``{"goals": {NAME: {"value", "target", "met"}},
...}``; ``met`` is null, with a ``reason``, where a goal is not judged by this bench.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policies.baselines import TargetOnly  # noqa: E402
from policies.contract import RoundFeedback, Route, RouteView, WorldTruth  # noqa: E402
from policies.oracle import RouteCensus  # noqa: E402
from policies.registry import make_policy, static_spec  # noqa: E402
from policies.specrouter_policy import SpecRouter  # noqa: E402
from policies.synthetic import SyntheticWorld, linear_pass_time, matrix_alpha  # noqa: E402
from specrouter.scenarios import (  # noqa: E402
    CandidateRun,
    candidate_run,
    hindsight_oracle,
    run_scenario,
    scenario_names,
    scenario_phases,
    tuned_static_specs,
)

SATURATED_POLICIES = ("target-only", "static:0>2>3:4,1", "specrouter", "specrouter:saturation_probe=false")
ORACLE = "hindsight-oracle"
BEST_STATIC = "best-static"  # the static chain (tuned or found) with the best mean over the seeds
BEST_PER_SEED = "best-static-per-seed"  # per seed the best of them: a minimum over noisy runs
PLANNER = "oracle"  # the truth planner's registry name
# Policies whose most-used routes are run as static chains too: the two planners that search
# every chain and lookahead.  (The bandit's arms are fixed routes with intermediates verifying
# once; dynamic-lookahead varies one two-level chain's lookahead: each extra route costs a run.)
FOUND_FROM = ("specrouter", PLANNER)
WINS_OVER_STATIC = ("domain_shift", "slowdown", "load_ramp")


def tpot_of(records: list[Any], since: float = -1.0) -> np.ndarray:
    return np.array(
        [
            (r.finish - r.first_token) / (r.output_tokens - 1)
            for r in records
            if r.output_tokens > 1 and r.arrival >= since
        ]
    )


def first_round_only(records: list[Any]) -> float:
    """Share of the requests (more than one output token) whose first round committed every token.

    Their TPOT is 0: TPOT counts from the first round's end, when all its tokens arrive at
    once.  So mean TPOT rewards routes that commit many tokens in a request's first round
    (its latency goes to TTFT), which the per-token objective of the router does not see;
    end-to-end latency (``e2e_mean_ms``) has no such blind spot."""
    many = [r for r in records if r.output_tokens > 1]
    return sum(r.finish == r.first_token for r in many) / len(many) if many else 0.0


def run_one(task: tuple[str, str, int, int | None]) -> dict[str, Any]:
    """One policy on one scenario and seed (a process-pool task)."""
    scenario, spec, seed, limit = task
    boundaries = scenario_phases(scenario, limit, seed)

    def counted(truth: WorldTruth) -> RouteCensus:
        return RouteCensus(make_policy(spec, world=truth), boundaries)

    result = run_scenario(scenario, counted if spec in FOUND_FROM else spec, limit=limit, seed=seed)
    policy = result.policy_object
    row: dict[str, Any] = {
        "tpot_mean_ms": result.summary["tpot_mean"] * 1e3,
        "tpot_p99_ms": result.summary["tpot_p99"] * 1e3,
        "e2e_mean_ms": result.summary["e2e_mean"] * 1e3,
        "first_round_only": first_round_only(result.requests),
        "rounds": result.rounds,
        "wall_s": round(result.wall_seconds, 2),
        "candidate": candidate_run(result, boundaries),
    }
    if scenario == "load_ramp":
        arrivals = [r.arrival for r in result.requests]
        saturated = tpot_of(result.requests, since=float(np.percentile(arrivals, 75)))
        row["saturated_tpot_mean_ms"] = float(saturated.mean()) * 1e3
    if isinstance(policy, RouteCensus):
        row["modal_statics"] = [
            static_spec(r.chain, r.lookaheads) for r in policy.modal_routes() if len(r.chain) > 1
        ]
        policy = policy.policy
    replans = getattr(policy, "replans", None)
    if replans is not None:
        row["replans"] = replans
    return row


def best_static_by_mean(tpot: dict[str, list[float]]) -> str:
    """The static chain whose mean TPOT over the seeds is lowest (``tpot``: spec -> one value per
    seed, the seeds in the same order for every spec).

    This is the best static chain in hindsight: one configuration, run on every seed and judged
    by its mean like the policies it is compared with.  The per-seed minimum over several chains
    is not one configuration: where chains tie within the seeds' chaos it picks, seed by seed,
    whichever drew the luckier run, and sits below the mean of every one of them."""
    if not tpot:
        raise ValueError("best_static_by_mean needs at least one static chain")
    return min(tpot, key=lambda spec: float(np.mean(tpot[spec])))


def found_statics(rows: list[dict[str, Any]], known: list[str]) -> list[str]:
    """The static chains that the runs ``rows`` of :data:`FOUND_FROM` policies used most (whole
    run and per phase: :meth:`~policies.oracle.RouteCensus.modal_routes`), not among ``known``."""
    found: list[str] = []
    for row in rows:
        for spec in row["modal_statics"]:
            if spec not in known and spec not in found:
                found.append(spec)
    return found


def run_saturated(task: tuple[str, int, int]) -> dict[str, Any]:
    """One policy on the ``bench/sim_speed.py`` workload (Llama preset as shipped: 64 sequences
    per pass, no admission limit; the first ``limit`` requests of the Azure conversation trace,
    prompts unclipped): saturated from about a minute in, the requests in flight grow to ~800."""
    from policies.registry import make_policy
    from sim.engine import Simulation
    from sim.presets import preset
    from sim.scenario import Scenario
    from sim.world import World
    from traces.loaders import load_trace

    spec, seed, limit = task
    trace = ROOT.parent / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"
    requests = list(load_trace(trace, limit=limit))
    world = World(preset("llama"), Scenario(seed=seed, noise_sigma=0.05, correlation=0.5))
    result = Simulation(world, make_policy(spec, world=world.truth), record_rounds=False).run(requests)
    return {"tpot_mean_ms": float(tpot_of(result.requests).mean()) * 1e3, "rounds": result.rounds_total}


def saturated(seeds: list[int], limit: int, jobs: int) -> dict[str, Any]:
    """Mean TPOT of :data:`SATURATED_POLICIES` on the sim_speed workload, per seed and over seeds."""
    tasks = [(spec, seed, limit) for spec in SATURATED_POLICIES for seed in seeds]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        rows = dict(zip(tasks, pool.map(run_saturated, tasks)))
    out: dict[str, Any] = {"limit": limit, "policies": {}}
    for spec in SATURATED_POLICIES:
        values = [rows[(spec, seed, limit)]["tpot_mean_ms"] for seed in seeds]
        out["policies"][spec] = {"seeds": values, "tpot_mean_ms": summary(values)}
        mean, std = np.mean(values), spread(values)
        print(f"saturated (sim_speed workload) {spec:36s} tpot mean {mean:8.1f} +- {std:6.1f} ms")
    return out


def run_oracle(task: tuple[str, int, int | None, dict[str, CandidateRun]]) -> dict[str, Any]:
    scenario, seed, limit, candidates = task
    found = hindsight_oracle(scenario, candidates, limit=limit, seed=seed)
    return {
        "tpot_mean_ms": found.tpot_mean * 1e3,
        "source": found.source,
        "phase_specs": list(found.phase_specs),
        "boundaries_s": [round(b, 1) for b in found.boundaries],
        "phased_tpot_mean_ms": None if found.phased_tpot_mean is None else found.phased_tpot_mean * 1e3,
    }


def spread(values: list[float]) -> float:
    """Sample standard deviation over seeds (0 with one seed)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summary(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": spread(values), "min": min(values), "max": max(values)}


def quality(scenarios: list[str], seeds: list[int], limit: int | None, jobs: int) -> dict[str, Any]:
    specs_of: dict[str, list[str]] = {}
    statics_of: dict[str, list[str]] = {}
    for scenario in scenarios:
        statics = tuned_static_specs(scenario, limit)
        two_level = [s for s in statics if s.count(">") == 1]
        drafter = two_level[0].split(":")[1].split(">")[0] if two_level else "0"
        statics_of[scenario] = statics
        specs_of[scenario] = [
            "target-only",
            *statics,
            f"dynamic-lookahead:{drafter}",
            "bandit",
            "specrouter",
            PLANNER,
        ]
    tasks = [(sc, spec, seed, limit) for sc in scenarios for seed in seeds for spec in specs_of[sc]]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        rows = dict(zip(tasks, pool.map(run_one, tasks)))
        # The routes the adaptive policies settled on, run as static chains: the batch-1 tuning
        # of tuned_static_specs misses the lookaheads that pay under load.  A route found on
        # any seed is run on every seed, so each chain has a mean to be judged by.
        found_of = {
            sc: found_statics(
                [rows[(sc, spec, seed, limit)] for seed in seeds for spec in FOUND_FROM], specs_of[sc]
            )
            for sc in scenarios
        }
        found_tasks = [
            (sc, spec, seed, limit) for sc, found in found_of.items() for spec in found for seed in seeds
        ]
        rows.update(zip(found_tasks, pool.map(run_one, found_tasks)))
        for (scenario, spec, seed, _), row in rows.items():
            print(
                f"{scenario:15s} seed {seed} {spec:28s} tpot mean {row['tpot_mean_ms']:9.2f} ms", flush=True
            )
        oracle_tasks = [
            (
                sc,
                seed,
                limit,
                {  # every policy run, adaptive ones too: the reference is at least as strong as each
                    spec: rows[(sc, spec, seed, limit)]["candidate"]
                    for spec in [*specs_of[sc], *found_of[sc]]
                },
            )
            for sc in scenarios
            for seed in seeds
        ]
        oracles = dict(zip([(t[0], t[1]) for t in oracle_tasks], pool.map(run_oracle, oracle_tasks)))
    out: dict[str, Any] = {}
    for scenario in scenarios:
        per_seed: dict[str, list[dict[str, Any]]] = {
            spec: []
            for spec in [*specs_of[scenario], *found_of[scenario], BEST_STATIC, BEST_PER_SEED, ORACLE]
        }
        statics = [*statics_of[scenario], *found_of[scenario]]
        best_static = best_static_by_mean(
            {
                spec: [rows[(scenario, spec, seed, limit)]["tpot_mean_ms"] for seed in seeds]
                for spec in statics
            }
        )
        best_static_per_seed = []
        for seed in seeds:
            run_rows = {spec: rows[(scenario, spec, seed, limit)] for spec in [*specs_of[scenario], *statics]}
            best_of_seed = min(statics, key=lambda s: run_rows[s]["tpot_mean_ms"])
            best_tuned = min(statics_of[scenario], key=lambda s: run_rows[s]["tpot_mean_ms"])
            best_static_per_seed.append(best_of_seed)
            seed_rows = {spec: dict(run_rows[spec]) for spec in [*specs_of[scenario], *found_of[scenario]]}
            seed_rows[BEST_STATIC] = {
                **run_rows[best_static],
                "spec": best_static,
                "found": found_of[scenario],
            }
            seed_rows[BEST_PER_SEED] = {**run_rows[best_of_seed], "spec": best_of_seed}
            seed_rows[ORACLE] = oracles[(scenario, seed)]
            e2e_static_ms = min(run_rows[s]["e2e_mean_ms"] for s in statics)
            oracle_ms = seed_rows[ORACLE]["tpot_mean_ms"]
            static_ms = run_rows[best_static]["tpot_mean_ms"]
            seed_best_ms = run_rows[best_of_seed]["tpot_mean_ms"]
            tuned_ms = run_rows[best_tuned]["tpot_mean_ms"]
            plain_ms = seed_rows["target-only"]["tpot_mean_ms"]
            for spec, row in seed_rows.items():
                row.pop("candidate", None)
                row["seed"] = seed
                row["ratio_to_oracle"] = row["tpot_mean_ms"] / oracle_ms
                row["ratio_to_best_static"] = row["tpot_mean_ms"] / static_ms
                row["ratio_to_best_static_per_seed"] = row["tpot_mean_ms"] / seed_best_ms
                row["ratio_to_best_tuned_static"] = row["tpot_mean_ms"] / tuned_ms
                row["ratio_to_target_only"] = row["tpot_mean_ms"] / plain_ms
                if spec != ORACLE:  # the hindsight oracle is chosen by TPOT and reports only that
                    row["e2e_ratio_to_best_static"] = row["e2e_mean_ms"] / e2e_static_ms
                per_seed[spec].append(row)
        policies = {}
        for spec, seed_rows_list in per_seed.items():
            entry: dict[str, Any] = {"seeds": seed_rows_list}
            for key in (
                "tpot_mean_ms",
                "ratio_to_oracle",
                "ratio_to_best_static",
                "ratio_to_best_static_per_seed",
                "ratio_to_best_tuned_static",
                "ratio_to_target_only",
            ):
                entry[key] = summary([r[key] for r in seed_rows_list])
            if spec != ORACLE:
                for key in ("e2e_mean_ms", "e2e_ratio_to_best_static", "first_round_only"):
                    entry[key] = summary([r[key] for r in seed_rows_list])
            if scenario == "load_ramp" and spec != ORACLE:
                entry["saturated_tpot_mean_ms"] = summary(
                    [r["saturated_tpot_mean_ms"] for r in seed_rows_list]
                )
            policies[spec] = entry
        out[scenario] = {
            "best_static": best_static,
            "best_static_per_seed": best_static_per_seed,
            "found": found_of[scenario],
            "policies": policies,
        }
    return out


def print_tables(results: dict[str, Any], seeds: list[int]) -> None:
    print(f"\nmean TPOT over seeds {seeds} (mean +- sample std); ratios per seed, then averaged")
    for scenario, block in results.items():
        print(
            f"\n== {scenario} (best static: {block['best_static']}; "
            f"best per seed: {', '.join(block['best_static_per_seed'])})"
        )
        print(
            f"{'policy':30s} {'TPOT ms':>18s} {'/ oracle':>16s} {'/ best static':>16s} {'/ seed best':>16s}"
            f" {'/ tuned static':>16s} {'/ target-only':>16s} {'e2e / best static':>18s} {'1-round':>8s}"
        )
        for spec, entry in block["policies"].items():
            cells = [
                f"{entry[k]['mean']:8.3f} +- {entry[k]['std']:5.3f}"
                for k in (
                    "ratio_to_oracle",
                    "ratio_to_best_static",
                    "ratio_to_best_static_per_seed",
                    "ratio_to_best_tuned_static",
                    "ratio_to_target_only",
                )
            ]
            if "e2e_ratio_to_best_static" in entry:
                e2e, first = entry["e2e_ratio_to_best_static"], entry["first_round_only"]
                cells.append(f"{e2e['mean']:10.3f} +- {e2e['std']:5.3f} {first['mean']:8.3f}")
            tpot = entry["tpot_mean_ms"]
            print(f"{spec:30s} {tpot['mean']:9.2f} +- {tpot['std']:6.2f} " + " ".join(cells))


def demo_run(args: tuple[str, str, int, int, str]) -> float:
    """Mean TPOT (s) of one policy in the demo's world of ``profile`` for ``seed``."""
    sim_profile, ladder, window, seed, spec = args
    from specrouter.experiments.demo import DemoConfig, demo_world
    from specrouter.experiments.runs import run_simulated

    world = demo_world(Path(sim_profile), DemoConfig(ladder, out="", seed=seed), window)
    return float(run_simulated(world.world, spec, world.requests).summary["tpot_mean"])


def demo_statics(size: int) -> list[str]:
    from policies.cost_model import enumerate_chains
    from policies.registry import static_spec

    specs = []
    for chain in enumerate_chains(size):
        if len(chain) == 2:
            specs += [static_spec(chain, (g,)) for g in range(1, 7)]
        elif len(chain) == 3:
            specs += [static_spec(chain, (g0, g1)) for g0 in (2, 3, 4) for g1 in (1, 2)]
    return specs


def demo_quality(profile: Path, seeds: list[int], jobs: int) -> dict[str, Any]:
    """SpecRouter (cold and warm-started) against the best static chain in the demo's world: the
    chain with the best mean over the seeds (:func:`best_static_by_mean`), and the best of each seed."""
    import tempfile

    from backend.ladder import load_ladder
    from backend.replay import context_window
    from backend.zoo import default_ladder_dir
    from specrouter.experiments.demo import warm_specrouter
    from specrouter.experiments.validate import mode_profile

    ladder = str(default_ladder_dir())
    loaded = load_ladder(ladder)
    window = context_window(loaded.models)
    sim_profile = mode_profile(profile, "greedy", Path(tempfile.mkdtemp()) / "sim_profile.json")
    names = ("specrouter", warm_specrouter(profile))
    statics = demo_statics(len(loaded.names))
    jobs_list = [
        (str(sim_profile), ladder, window, seed, spec) for seed in seeds for spec in (*names, *statics)
    ]
    with ProcessPoolExecutor(jobs) as pool:
        tpot = dict(zip(jobs_list, pool.map(demo_run, jobs_list)))

    def of(seed: int, spec: str) -> float:
        return tpot[(str(sim_profile), ladder, window, seed, spec)]

    best = best_static_by_mean({spec: [of(seed, spec) for seed in seeds] for spec in statics})
    out: dict[str, Any] = {"profile": str(profile), "seeds": seeds, "best_static": best, "per_seed": []}
    for seed in seeds:
        seed_best = min(statics, key=lambda spec: of(seed, spec))
        cold, warm = of(seed, names[0]), of(seed, names[1])
        out["per_seed"].append(
            {
                "seed": seed,
                "best_static_tpot_ms": round(of(seed, best) * 1e3, 3),
                "best_of_seed": seed_best,
                "best_of_seed_tpot_ms": round(of(seed, seed_best) * 1e3, 3),
                "cold_tpot_ms": round(cold * 1e3, 3),
                "warm_tpot_ms": round(warm * 1e3, 3),
                "cold_vs_best_static": cold / of(seed, best),
                "warm_vs_best_static": warm / of(seed, best),
                "cold_vs_best_of_seed": cold / of(seed, seed_best),
                "warm_vs_best_of_seed": warm / of(seed, seed_best),
            }
        )
    for key in ("cold_vs_best_static", "warm_vs_best_static", "cold_vs_best_of_seed", "warm_vs_best_of_seed"):
        values = [r[key] for r in out["per_seed"]]
        out[key] = {
            "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        }
    return out


def goal(value: float | None, target: str, met: bool | None, **extra: Any) -> dict[str, Any]:
    return {"value": value, "target": target, "met": met, **extra}


def goals(
    results: dict[str, Any], cost: dict[str, Any], demo: dict[str, Any] | None = None
) -> dict[str, Any]:
    checks: dict[str, Any] = {}

    def entry(scenario: str, spec: str) -> dict[str, Any]:
        return results[scenario]["policies"][spec]

    for scenario in results:
        ratio = entry(scenario, "specrouter")["ratio_to_best_static"]
        # the stricter references, reported beside the goal's value
        context = {
            "std": ratio["std"],
            "best_static": results[scenario]["best_static"],
            "vs_best_per_seed": entry(scenario, "specrouter")["ratio_to_best_static_per_seed"]["mean"],
            "vs_tuned_only": entry(scenario, "specrouter")["ratio_to_best_tuned_static"]["mean"],
        }
        checks[f"{scenario}_specrouter_vs_best_static"] = goal(
            ratio["mean"], "<= 1.0", ratio["mean"] <= 1.0, **context
        )
        if scenario in WINS_OVER_STATIC:
            checks[f"{scenario}_specrouter_15pct_better_than_best_static"] = goal(
                ratio["mean"], "<= 0.85", ratio["mean"] <= 0.85, **context
            )
        # No policy beats the hindsight oracle by more than its seed spread.
        margins = {
            spec: e["ratio_to_oracle"]["mean"] + e["ratio_to_oracle"]["std"]
            for spec, e in results[scenario]["policies"].items()
            if spec != ORACLE
        }
        worst = min(margins, key=lambda s: margins[s])
        checks[f"{scenario}_no_policy_beats_oracle_beyond_spread"] = goal(
            margins[worst], ">= 1.0", margins[worst] >= 1.0, policy=worst
        )
    if "stationary" in results:
        ratio = entry("stationary", "specrouter")["ratio_to_oracle"]
        checks["stationary_specrouter_within_5pct_of_oracle"] = goal(
            ratio["mean"], "<= 1.05", ratio["mean"] <= 1.05, std=ratio["std"]
        )
    if "high_rate" in results:
        ratio = entry("high_rate", "specrouter")["ratio_to_target_only"]
        checks["high_rate_specrouter_vs_target_only"] = goal(
            ratio["mean"], "<= 1.0", ratio["mean"] <= 1.0, std=ratio["std"]
        )
        found = results["high_rate"]["found"]
        statics = [s for s in results["high_rate"]["policies"] if s.startswith("static:") and s not in found]
        fixed = min(entry("high_rate", s)["ratio_to_target_only"]["mean"] for s in statics)
        checks["high_rate_every_tuned_static_slower_than_target_only"] = goal(fixed, "> 1.0", fixed > 1.0)
    if "load_ramp" in results:
        ours = entry("load_ramp", "specrouter")["saturated_tpot_mean_ms"]["mean"]
        plain = entry("load_ramp", "target-only")["saturated_tpot_mean_ms"]["mean"]
        checks["load_ramp_saturated_specrouter_vs_target_only"] = goal(ours / plain, "<= 1.0", ours <= plain)
    checks["route_observe_us_per_round"] = goal(
        cost["us_per_round"], "<= 5.0", cost["us_per_round"] <= 5.0, ladder_models=cost["ladder_models"]
    )
    if demo is not None:
        for key, name in (
            ("cold_vs_best_static", "demo_world_specrouter_vs_best_static"),
            ("warm_vs_best_static", "demo_world_specrouter_warm_vs_best_static"),
        ):
            ratio = demo[key]
            per_seed = demo[key.replace("best_static", "best_of_seed")]["mean"]
            checks[name] = goal(
                ratio["mean"],
                "<= 1.0",
                ratio["mean"] <= 1.0,
                std=ratio["std"],
                best_static=demo["best_static"],
                vs_best_per_seed=per_seed,
            )
    else:
        checks["demo_world_specrouter_vs_best_static"] = goal(
            None,
            "<= 1.0",
            None,
            reason="needs --demo-profile (a specrouter demo run's validate/profile.json)",
        )
    for name, reason in (
        ("real_models_specrouter_vs_best_static_b1", "bench/backend_speed.py on real models; not run here"),
        ("real_models_specrouter_vs_best_static_b4", "bench/backend_speed.py on real models; not run here"),
    ):
        checks[name] = goal(None, ">= 0.95", None, reason=reason)
    return checks


class Recorder:
    """Wraps a policy, timing its route() and observe() calls and recording the stream."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.name = policy.name
        self.seconds = 0.0
        self.rounds = 0
        self.stream: list[tuple[bool, Any]] = []

    def route(self, view: RouteView) -> Route:
        started = time.process_time()
        route = self.policy.route(view)
        self.seconds += time.process_time() - started
        self.stream.append((True, view))
        return route

    def observe(self, feedback: RoundFeedback) -> None:
        started = time.process_time()
        self.policy.observe(feedback)
        self.seconds += time.process_time() - started
        self.rounds += 1
        self.stream.append((False, feedback))


def replay_seconds(policy: Any, stream: list[tuple[bool, Any]]) -> float:
    route, observe = policy.route, policy.observe
    started = time.process_time()
    for is_view, item in stream:
        if is_view:
            route(item)
        else:
            observe(item)
    return time.process_time() - started


def policy_cost(requests: int, repeats: int = 5) -> dict[str, Any]:
    """µs per round of route()+observe() on a 5-model ladder, and ms per full re-plan.

    ``us_per_round`` replays the recorded stream of views and feedback of a synthetic
    world through fresh policies ``repeats`` times and keeps the fastest (the minimum is
    robust to other load on a shared machine); ``target_only_us_per_round`` replays it
    through the trivial policy: the floor of the measurement.  ``replan_ms`` is the
    fastest of ``10 * repeats`` full re-plans of a trained policy.  Process CPU time.
    """
    alpha = [
        [1, 0.8, 0.72, 0.66, 0.6],
        [1, 1, 0.8, 0.74, 0.68],
        [1, 1, 1, 0.82, 0.75],
        [1, 1, 1, 1, 0.86],
        [1, 1, 1, 1, 1],
    ]
    timing = linear_pass_time((0.0002, 0.0006, 0.0012, 0.005, 0.02), (2e-6, 5e-6, 1e-5, 5e-5, 2e-4))
    world = SyntheticWorld(5, matrix_alpha(alpha), timing, seed=0)
    recorder = Recorder(SpecRouter())
    world.run(recorder, requests)  # type: ignore[arg-type]
    rounds = recorder.rounds
    replays = [replay_seconds(SpecRouter(), recorder.stream) for _ in range(repeats)]
    floor = min(replay_seconds(TargetOnly(), recorder.stream) for _ in range(repeats))
    trained = recorder.policy
    state = next(iter(trained._domains.values()))
    replans = []
    for _ in range(10 * repeats):
        started = time.process_time()
        trained._replan(state)
        replans.append(time.process_time() - started)
    return {
        "ladder_models": 5,
        "rounds": rounds,
        "us_per_round": min(replays) / rounds * 1e6,
        "us_per_round_median_replay": float(np.median(replays)) / rounds * 1e6,
        "live_us_per_round": recorder.seconds / rounds * 1e6,
        "target_only_us_per_round": floor / rounds * 1e6,
        "replans_in_stream": recorder.policy.replans - 10 * repeats,
        "replan_ms": min(replans) * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="first 800 requests of each trace per scenario")
    parser.add_argument("--limit", type=int, default=None, help="first N requests (default: the whole trace)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated scenario seeds (default 0,1,2)")
    parser.add_argument("--scenarios", default=",".join(scenario_names()), help="comma-separated names")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument(
        "--saturated",
        type=int,
        default=0,
        metavar="N",
        help="also run the bench/sim_speed.py workload (first N conversation requests, e.g. 2000)",
    )
    parser.add_argument(
        "--demo-profile",
        type=Path,
        default=None,
        metavar="PROFILE",
        help="also judge the demo-world goal in the world simulated from this profile "
        "(runs/demo/validate/profile.json)",
    )
    args = parser.parse_args()
    if args.demo_profile is not None and not args.demo_profile.is_file():
        parser.error(f"--demo-profile {args.demo_profile}: no such file")
    limit = args.limit if args.limit is not None else (800 if args.quick else None)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    started = time.perf_counter()
    results = quality([s for s in args.scenarios.split(",") if s], seeds, limit, max(args.jobs, 1))
    print_tables(results, seeds)
    sat = saturated(seeds, args.saturated, max(args.jobs, 1)) if args.saturated else None
    demo = demo_quality(args.demo_profile, seeds, max(args.jobs, 1)) if args.demo_profile else None
    if demo is not None:
        for row in demo["per_seed"]:
            print(
                f"demo world seed {row['seed']}: best static {demo['best_static']} "
                f"{row['best_static_tpot_ms']} ms (best of the seed {row['best_of_seed']} "
                f"{row['best_of_seed_tpot_ms']}), "
                f"specrouter {row['cold_tpot_ms']} (cold), {row['warm_tpot_ms']} (warm)",
                file=sys.stderr,
            )
    cost = policy_cost(150 if args.quick else 1000)
    report = {
        "goals": goals(results, cost, demo),
        "bench": "policy_quality",
        "limit": limit,
        "seeds": seeds,
        "results": results,
        "policy_cost": cost,
        "saturated": sat,
        "demo_world": demo,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
