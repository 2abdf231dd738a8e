"""Policies x scenarios: run each, tabulate, plot (the logic of ``specrouter compare``).

Every (scenario, policy) run writes its records to ``OUT/<scenario>/<policy>/`` (the
directory name is the policy name with unsafe characters replaced).  A run whose
``run.json`` says ``complete`` for the same settings is read back instead of rerun, so an
interrupted comparison keeps what it finished.

The table gives, per scenario and policy, mean and p99 TPOT and TTFT (ms), throughput
(tokens/s) and the speed-up in mean TPOT over target-only and over the best static chain
of that scenario (when those policies are part of the comparison).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specrouter import plots
from specrouter.experiments.runs import RunOutput

Runner = Callable[[str, str, Path], RunOutput]  # (scenario, policy, run directory) -> the run


@dataclass
class Comparison:
    """Summaries by (scenario, policy), the runs themselves, and the plot files written."""

    summaries: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    runs: dict[tuple[str, str], RunOutput] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for (scenario, policy), summary in self.summaries.items():
            row: dict[str, Any] = {"scenario": scenario, "policy": policy}
            row.update({k: summary[k] for k in ("tpot_mean", "tpot_p99", "ttft_mean", "ttft_p99")})
            row["throughput_tokens_per_s"] = summary["throughput_tokens_per_s"]
            row["speedup_vs_target_only"] = self._ratio(scenario, summary, lambda p: p == "target-only")
            row["speedup_vs_best_static"] = self._ratio(scenario, summary, lambda p: p.startswith("static:"))
            out.append(row)
        return out

    def _ratio(
        self, scenario: str, summary: dict[str, float], is_reference: Callable[[str], bool]
    ) -> float | None:
        references = [
            s["tpot_mean"] for (sc, p), s in self.summaries.items() if sc == scenario and is_reference(p)
        ]
        return min(references) / summary["tpot_mean"] if references else None


def display_name(spec: str) -> str:
    """A policy spec as tables show it: a warm-start prior by its file name
    (``specrouter:prior=runs/demo/validate/profile.json`` -> ``specrouter:prior=profile.json``)."""
    return re.sub(r"prior=[^,]*?([^/,]+)(?=,|$)", r"prior=\1", spec)


def safe_name(name: str) -> str:
    """A directory name for a policy or scenario (``static:M0[3]>M3`` -> ``static_M0_3__M3``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def compare(
    policies: Sequence[str],
    scenarios: Sequence[str],
    out_dir: str | Path,
    runner: Runner,
    *,
    plot: bool = True,
    show_progress: bool = True,
) -> Comparison:
    """Run every policy on every scenario with ``runner`` (a world: the simulator or the backend)."""
    from tqdm import tqdm

    out = Path(out_dir)
    result = Comparison()
    bar = tqdm(total=len(scenarios) * len(policies), desc="compare", unit="run", disable=not show_progress)
    try:
        for scenario in scenarios:
            for policy in policies:
                bar.set_postfix_str(f"{scenario} / {policy}")
                run = runner(scenario, policy, out / safe_name(scenario) / safe_name(policy))
                result.runs[(scenario, policy)] = run
                result.summaries[(scenario, policy)] = run.summary
                bar.update()
            if plot:
                result.figures.extend(scenario_figures(scenario, policies, result, out / safe_name(scenario)))
    finally:
        bar.close()
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(result.rows(), indent=2) + "\n")
    return result


def scenario_figures(scenario: str, policies: Sequence[str], result: Comparison, out: Path) -> list[Path]:
    """Latency CDFs of every policy; chain usage and pair acceptance of each policy that routes."""
    figures: list[Path] = []
    runs = {p: result.runs[(scenario, p)] for p in policies}
    figures.extend(
        plots.latency_cdfs(
            {p: r.requests for p, r in runs.items()}, out / "tpot_cdf", title=f"{scenario}: TPOT CDF"
        )
    )
    for policy, run in runs.items():
        if not run.rounds or len({r.chain for r in run.rounds}) < 2 and policy != policies[-1]:
            continue  # one chain all along: nothing to see beyond the CDF (the last policy always gets plots)
        base = out / safe_name(policy)
        figures.extend(
            plots.chain_usage(run.rounds, base / "chains", run.markers, title=f"{scenario}: {policy}")
        )
        figures.extend(
            plots.acceptance_over_time(
                run.rounds, base / "acceptance", run.markers, title=f"{scenario}: {policy}"
            )
        )
    return figures


def format_comparison(comparison: Comparison) -> str:
    """The terminal table (ms for latencies)."""
    header = (
        f"{'scenario':<16} {'policy':<30} {'TPOT ms':>8} {'p99':>8} {'TTFT ms':>8} {'p99':>8} "
        f"{'tok/s':>8} {'vs target':>9} {'vs static':>9}"
    )
    lines = [header]
    for row in comparison.rows():

        def ratio(key: str, row: dict[str, Any] = row) -> str:
            return f"{row[key]:.2f}x" if row[key] is not None else "-"

        name = display_name(row["policy"])
        lines.append(
            f"{row['scenario'][:16]:<16} {name[:30]:<30} {row['tpot_mean'] * 1e3:8.2f} "
            f"{row['tpot_p99'] * 1e3:8.2f} {row['ttft_mean'] * 1e3:8.1f} {row['ttft_p99'] * 1e3:8.1f} "
            f"{row['throughput_tokens_per_s']:8.1f} {ratio('speedup_vs_target_only'):>9} "
            f"{ratio('speedup_vs_best_static'):>9}"
        )
    return "\n".join(lines)
