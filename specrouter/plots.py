"""Figures from result records (:mod:`traces.records`), each written as PNG and SVG.

Every function takes records already read back (:func:`traces.records.read_records`) or
in memory, writes ``<path>.png`` and ``<path>.svg`` and returns the two paths.  Figures are
titled, their axes carry units, and events of the scenario (a domain shift, a slowdown
episode) are drawn as labelled vertical lines / shaded spans, so a figure reads without
the code.

* :func:`latency_cdfs` -- empirical CDF of per-request TPOT (or TTFT, E2E), one line per policy,
  each policy in its own colour (:func:`policy_colours`: the same in every figure of a run);
* :func:`chain_usage` -- share of rounds per chain in time bins (stacked bars);
* :func:`acceptance_over_time` -- per (lower, upper) pair, ``sum accepted / sum proposed``
  per time bin, over the rounds in which the pair verified;
* :func:`predicted_vs_measured` -- a validate run's fidelity table as paired bars.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from traces.records import RequestRecord, RoundRecord  # noqa: E402
from traces.summary import latency_metrics, request_columns  # noqa: E402

METRIC_LABELS = {
    "tpot": "time per output token (ms)",
    "ttft": "time to first token (ms)",
    "e2e": "end-to-end latency (ms)",
}


# The named policies keep these colours in every figure; other labels (static chains, variants
# with options) take the next free colour of OTHER_COLOURS in sorted order, so a run's figures
# agree with each other however their runs are ordered.
NAMED_COLOURS = {
    "target-only": "#000000",
    "dynamic-lookahead": "#ff7f0e",
    "bandit": "#2ca02c",
    "bandit-ucb1": "#bcbd22",
    "specrouter": "#d62728",
    "oracle": "#9467bd",
}
OTHER_COLOURS = (
    "#1f77b4", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#aec7e8", "#98df8a", "#ff9896",
    "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5", "#393b79", "#637939", "#8c6d31",
)  # fmt: skip
LINE_STYLES = ("-", "--", ":", "-.")


def policy_colours(labels: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``label -> (colour, line style)``, distinct for every label (styles change once colours run out)."""
    styles: dict[str, tuple[str, str]] = {}
    taken: set[str] = set()
    for label in sorted(set(labels)):
        colour = NAMED_COLOURS.get(label)
        if colour is not None:
            styles[label] = (colour, "-")
            taken.add(label)
    others = [label for label in sorted(set(labels)) if label not in taken]
    for index, label in enumerate(others):
        cycle, slot = divmod(index, len(OTHER_COLOURS))
        styles[label] = (OTHER_COLOURS[slot], LINE_STYLES[cycle % len(LINE_STYLES)])
    return styles


class Marker(NamedTuple):
    """A scenario event: a line at ``start`` or, with ``end``, a shaded span; times in seconds."""

    start: float
    label: str
    end: float | None = None


def _save(fig: Any, path: str | Path) -> tuple[Path, Path]:
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    png, svg = base.with_suffix(".png"), base.with_suffix(".svg")
    fig.savefig(png, dpi=120, bbox_inches="tight")
    fig.savefig(svg, bbox_inches="tight")
    plt.close(fig)
    return png, svg


def _draw_markers(ax: Any, markers: Sequence[Marker]) -> None:
    for marker in markers:
        if marker.end is None:
            ax.axvline(marker.start, color="black", linestyle="--", linewidth=1)
        else:
            ax.axvspan(marker.start, marker.end, color="grey", alpha=0.2)
        ax.annotate(
            marker.label,
            xy=(marker.start, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize=8,
        )


def latency_cdfs(
    runs: Mapping[str, Sequence[RequestRecord]], path: str | Path, metric: str = "tpot", title: str = ""
) -> tuple[Path, Path]:
    """One empirical CDF per run (``label -> request records``) of ``metric`` in ms."""
    if metric not in METRIC_LABELS:
        raise ValueError(f"unknown metric {metric!r}: choose one of {', '.join(METRIC_LABELS)}")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = policy_colours(list(runs))
    for label, requests in runs.items():
        values = latency_metrics(request_columns(requests))[metric]
        values = np.sort(values[~np.isnan(values)]) * 1e3
        if values.size == 0:
            continue
        colour, style = styles[label]
        fractions = np.arange(1, values.size + 1) / values.size
        ax.step(values, fractions, where="post", label=label, color=colour, linestyle=style)
    ax.set_xlabel(METRIC_LABELS[metric])
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or f"{METRIC_LABELS[metric].split(' (')[0]}: CDF per policy")
    return _save(fig, path)


def _time_bins(times: np.ndarray, bins: int) -> np.ndarray:
    low, high = float(times.min()), float(times.max())
    return np.linspace(low, high if high > low else low + 1.0, bins + 1)


def chain_usage(
    rounds: Sequence[RoundRecord],
    path: str | Path,
    markers: Sequence[Marker] = (),
    bins: int = 40,
    title: str = "",
    top: int = 6,
) -> tuple[Path, Path]:
    """Share of rounds using each chain per time bin; the ``top`` most used chains, rest as "other"."""
    if not rounds:
        raise ValueError("chain_usage: no round records (was the run recorded with rounds?)")
    times = np.fromiter((r.time for r in rounds), dtype=np.float64, count=len(rounds))
    chains = [r.chain for r in rounds]
    names, counts = np.unique(chains, return_counts=True)
    kept = [str(n) for n in names[np.argsort(-counts, kind="stable")][:top]]
    labels = kept + (["other"] if len(names) > top else [])
    index = {name: i for i, name in enumerate(kept)}
    codes = np.fromiter((index.get(c, len(kept)) for c in chains), dtype=np.int64, count=len(chains))
    edges = _time_bins(times, bins)
    which = np.clip(np.searchsorted(edges, times, side="right") - 1, 0, bins - 1)
    share = np.zeros((len(labels), bins))
    np.add.at(share, (codes, which), 1.0)
    totals = share.sum(axis=0)
    share = np.divide(share, totals, out=np.zeros_like(share), where=totals > 0)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    bottom = np.zeros(bins)
    for label, row in zip(labels, share):  # stacked bars: a bin without rounds stays empty
        ax.bar(centres, row, width=width, bottom=bottom, label=f"chain {label}", alpha=0.85, linewidth=0)
        bottom += row
    _draw_markers(ax, markers)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("share of rounds")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title or "chain usage over time (ladder indices, target last)")
    return _save(fig, path)


def pair_acceptance_series(rounds: Sequence[RoundRecord], bins: int) -> dict[tuple[int, int], np.ndarray]:
    """``(lower, upper) -> acceptance per time bin`` (NaN where the pair did not verify)."""
    if not rounds:
        return {}
    times = np.fromiter((r.time for r in rounds), dtype=np.float64, count=len(rounds))
    edges = _time_bins(times, bins)
    which = np.clip(np.searchsorted(edges, times, side="right") - 1, 0, bins - 1)
    sums: dict[tuple[int, int], np.ndarray] = {}
    for record, slot in zip(rounds, which):
        models = record.chain_models
        for level in range(1, len(models)):
            if record.proposed[level] == 0:
                continue
            totals = sums.setdefault((models[level - 1], models[level]), np.zeros((2, bins)))
            totals[0, slot] += record.accepted[level]
            totals[1, slot] += record.proposed[level]
    return {
        pair: np.divide(t[0], t[1], out=np.full(bins, np.nan), where=t[1] > 0)
        for pair, t in sorted(sums.items())
    }


def acceptance_over_time(
    rounds: Sequence[RoundRecord],
    path: str | Path,
    markers: Sequence[Marker] = (),
    bins: int = 40,
    title: str = "",
) -> tuple[Path, Path]:
    """Observed acceptance of each (lower, upper) pair per time bin."""
    if not rounds:
        raise ValueError("acceptance_over_time: no round records (was the run recorded with rounds?)")
    series = pair_acceptance_series(rounds, bins)
    times = np.fromiter((r.time for r in rounds), dtype=np.float64, count=len(rounds))
    edges = _time_bins(times, bins)
    centres = (edges[:-1] + edges[1:]) / 2
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for (lower, upper), values in series.items():
        ax.plot(centres, values, marker=".", label=f"M{lower} -> M{upper}")
    _draw_markers(ax, markers)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("accepted / proposed")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title or "acceptance per model pair over time")
    return _save(fig, path)


def predicted_vs_measured(
    rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = ""
) -> tuple[Path, Path]:
    """Paired bars per metric, each normalised to the measured value (measured = 1).

    ``rows`` are fidelity-table rows with ``metric``, ``predicted`` and ``measured``; the
    relative error is printed above each pair.
    """
    usable = [r for r in rows if _positive(r.get("measured")) and _positive(r.get("predicted"))]
    if not usable:
        raise ValueError("predicted_vs_measured: no row has positive predicted and measured values")
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(usable) + 2), 4.2))
    x = np.arange(len(usable))
    ratio = np.array([r["predicted"] / r["measured"] for r in usable])
    ax.bar(x - 0.2, np.ones(len(usable)), width=0.4, label="measured (real backend)")
    ax.bar(x + 0.2, ratio, width=0.4, label="predicted (simulator)")
    for i, value in enumerate(ratio):
        ax.annotate(f"{value - 1:+.1%}", (x[i] + 0.2, value), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [str(r["metric"]) for r in usable], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("value / measured value")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or "simulator prediction vs real backend (1.0 = exact)")
    return _save(fig, path)


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and np.isfinite(value) and value > 0
