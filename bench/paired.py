"""Paired policy comparison: variants against a baseline, scenario by scenario, seed by seed.

    python3 bench/paired.py --variant specrouter:chain_waits=pooled            # 6 scenarios x seeds 0-7
    python3 bench/paired.py --variant A --variant B --baseline specrouter --seeds 0-3 --scenarios high_rate

Every (scenario, policy, seed) is one whole-trace simulated run (seeded, so bit-for-bit
repeatable); each run's mean TPOT is appended to ``--out`` (JSON lines) as it finishes and
a rerun skips the runs already there for the same code (commit and uncommitted changes), so an
interrupted comparison resumes and a changed default is never compared with stale rows.  Per scenario it
prints the baseline's mean TPOT and, per variant, the mean over seeds of the paired ratio
``variant / baseline - 1`` with its standard error: the seed-to-seed spread of the worlds
cancels in the pairing, so a change of a few percent shows where unpaired means would hide it.
The last line is one JSON object with the ``goals`` map: per variant, its worst scenario's
paired change is at most one standard error above zero ("no worse anywhere").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from specrouter.scenarios.runner import run_scenario, scenario_names


def code_state() -> str:
    """The commit and a hash of the uncommitted changes: cached runs are reused only for the same code."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    diff = git("diff", "HEAD", "--", "policies", "sim", "traces", "specrouter", "backend")
    return f"{commit}+{hashlib.sha1(diff.encode()).hexdigest()[:8]}" if diff else commit


def run_one(task: tuple[str, str, int]) -> dict[str, Any]:
    scenario, spec, seed = task
    result = run_scenario(scenario, spec, seed=seed)
    return {
        "scenario": scenario,
        "policy": spec,
        "seed": seed,
        "tpot_mean_ms": result.summary["tpot_mean"] * 1e3,
    }


def seeds_of(text: str) -> list[int]:
    if "-" in text:
        first, last = text.split("-", 1)
        return list(range(int(first), int(last) + 1))
    return [int(s) for s in text.split(",") if s]


def paired_change(variant: list[float], baseline: list[float]) -> tuple[float, float]:
    """Mean and standard error over seeds of ``variant / baseline - 1``."""
    ratios = [v / b - 1.0 for v, b in zip(variant, baseline)]
    mean = sum(ratios) / len(ratios)
    if len(ratios) < 2:
        return mean, math.nan
    var = sum((r - mean) ** 2 for r in ratios) / (len(ratios) - 1)
    return mean, math.sqrt(var / len(ratios))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", action="append", required=True, help="policy spec (repeatable)")
    parser.add_argument("--baseline", default="specrouter", help="policy spec (default specrouter)")
    parser.add_argument("--scenarios", default=",".join(scenario_names()), help="comma-separated")
    parser.add_argument("--seeds", default="0-7", help="'0-7' or '0,3,5' (default 0-7)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--out", type=Path, default=Path("runs/paired/runs.jsonl"))
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = sorted(set(scenarios) - set(scenario_names()))
    if unknown:
        print(f"paired: --scenarios: unknown {', '.join(unknown)} (known: {', '.join(scenario_names())})")
        return 2
    seeds = seeds_of(args.seeds)
    specs = [args.baseline, *args.variant]
    code = code_state()
    done: dict[tuple[str, str, int], float] = {}
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            row = json.loads(line)
            if row.get("code") == code:  # runs of other code are kept in the file, not reused
                done[(row["scenario"], row["policy"], row["seed"])] = row["tpot_mean_ms"]
    tasks = [(sc, sp, s) for sc in scenarios for sp in specs for s in seeds if (sc, sp, s) not in done]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"paired: {len(tasks)} runs to do, {len(done)} of code {code} kept from {args.out}", file=sys.stderr
    )
    # one fresh process per run: a policy's module-level caches never leak between runs
    with ProcessPoolExecutor(args.jobs, max_tasks_per_child=1) as pool, args.out.open("a") as sink:
        futures = [pool.submit(run_one, task) for task in tasks]
        for count, future in enumerate(as_completed(futures), 1):
            row = future.result()
            done[(row["scenario"], row["policy"], row["seed"])] = row["tpot_mean_ms"]
            sink.write(json.dumps({**row, "code": code}) + "\n")
            sink.flush()
            print(f"  [{count}/{len(tasks)}] {row['scenario']} seed {row['seed']} {row['policy']}: "
                  f"{row['tpot_mean_ms']:.2f} ms", file=sys.stderr)  # fmt: skip
    table: dict[str, Any] = {}
    print(f"{'scenario':<16}{'baseline ms':>12}" + "".join(f"{v[-34:]:>36}" for v in args.variant))
    for scenario in scenarios:
        base = [done[(scenario, args.baseline, s)] for s in seeds]
        entry: dict[str, Any] = {"baseline_ms": sum(base) / len(base)}
        cells = []
        for variant in args.variant:
            change, error = paired_change([done[(scenario, variant, s)] for s in seeds], base)
            entry[variant] = {"change": round(change, 4), "stderr": round(error, 4)}
            cells.append(f"{100 * change:+.1f}% ± {100 * error:.1f}")
        table[scenario] = entry
        print(f"{scenario:<16}{entry['baseline_ms']:>12.2f}" + "".join(f"{c:>36}" for c in cells))
    goals = {}
    for variant in args.variant:
        worst = max(scenarios, key=lambda sc: table[sc][variant]["change"] - table[sc][variant]["stderr"])
        cell = table[worst][variant]
        goals[f"{variant}: no scenario worse than baseline beyond one standard error"] = {
            "value": cell["change"], "scenario": worst, "stderr": cell["stderr"],
            "target": "<= stderr", "met": cell["change"] <= cell["stderr"],
        }  # fmt: skip
    machine = {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()}
    machine["code"] = code
    print(
        json.dumps(
            {"goals": goals, "baseline": args.baseline, "seeds": seeds, "table": table, "machine": machine}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
