"""Descriptive statistics of a workload: counts, rate, length percentiles, histograms.

Used by ``specrouter trace stats``.  Requests are consumed once; only the two length columns
and the arrival times are kept (as compact arrays, 20 bytes per request).
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from traces.request import Request

PERCENTILES: tuple[int, ...] = (50, 90, 99)


@dataclass
class TraceStats:
    """Summary of a workload; ``rate = (count - 1) / duration`` (arrivals per second between
    the first and last arrival), ``duration = last arrival - first arrival``."""

    count: int
    first_arrival: float
    last_arrival: float
    prompt: np.ndarray
    output: np.ndarray
    arrivals: np.ndarray
    domains: Counter[str] = field(default_factory=Counter)

    @property
    def duration(self) -> float:
        return self.last_arrival - self.first_arrival

    @property
    def rate(self) -> float:
        return (self.count - 1) / self.duration if self.duration > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests": self.count,
            "duration_s": self.duration,
            "rate_per_s": self.rate,
            "domains": dict(self.domains),
        }
        for name, values in (("prompt", self.prompt), ("output", self.output)):
            out[f"{name}_mean"] = float(values.mean())
            out[f"{name}_max"] = int(values.max())
            for q in PERCENTILES:
                out[f"{name}_p{q}"] = float(np.percentile(values, q))
        return out


def compute_stats(requests: Iterable[Request]) -> TraceStats:
    prompt, output, arrivals = array("q"), array("q"), array("d")
    domains: Counter[str] = Counter()
    for request in requests:
        prompt.append(request.prompt_tokens)
        output.append(request.output_tokens)
        arrivals.append(request.arrival)
        if request.domain is not None:
            domains[request.domain] += 1
    if not arrivals:
        raise ValueError("no requests to describe")
    return TraceStats(
        len(arrivals),
        arrivals[0],
        arrivals[-1],
        np.frombuffer(prompt, dtype=np.int64),
        np.frombuffer(output, dtype=np.int64),
        np.frombuffer(arrivals, dtype=np.float64),
        domains,
    )


def ascii_histogram(values: np.ndarray, title: str, width: int = 40) -> str:
    """Counts in power-of-two bins ``[2^k, 2^(k+1))`` (lengths are heavy-tailed), as bars of ``#``."""
    values = np.asarray(values)
    positive = values[values > 0]
    lines = [f"{title} (tokens, log2 bins)"]
    zeros = int((values <= 0).sum())
    rows: list[tuple[str, int]] = [("0", zeros)] if zeros else []
    if positive.size:
        exponents = np.floor(np.log2(positive)).astype(np.int64)
        counts = np.bincount(exponents - exponents.min())
        for offset, count in enumerate(counts):
            k = int(exponents.min()) + offset
            label = "1" if k == 0 else f"{2**k}-{2 ** (k + 1) - 1}"
            rows.append((label, int(count)))
    peak = max(count for _, count in rows)
    for label, count in rows:
        bar = "#" * (math.ceil(width * count / peak) if count else 0)
        lines.append(f"{label:>13} {count:>9} {bar}")
    return "\n".join(lines)


def format_stats(stats: TraceStats, histogram: bool = True) -> str:
    d = stats.as_dict()
    lines = [
        f"requests   {stats.count}",
        f"duration   {stats.duration:.2f} s",
        f"rate       {stats.rate:.3f} req/s",
        f"{'length':<8} {'mean':>10} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}",
    ]
    for name in ("prompt", "output"):
        cells = [f"{d[f'{name}_p{q}']:8.0f}" for q in PERCENTILES]
        lines.append(f"{name:<8} {d[f'{name}_mean']:10.1f} {' '.join(cells)} {d[f'{name}_max']:8d}")
    if stats.domains:
        mix = ", ".join(f"{name} {count / stats.count:.1%}" for name, count in stats.domains.most_common())
        lines.append(f"domains    {mix}")
    if histogram:
        lines += ["", ascii_histogram(stats.prompt, "prompt"), "", ascii_histogram(stats.output, "output")]
    return "\n".join(lines)


def plot_stats(stats: TraceStats, path: str, title: str = "") -> None:
    """Three panels: requests per second over time, prompt and output length histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    span = max(stats.duration, 1e-9)
    bins = max(1, min(200, int(span)))
    axes[0].hist(stats.arrivals, bins=bins, weights=np.full(stats.count, bins / span))
    axes[0].set(xlabel="arrival (s)", ylabel="requests / s", title="arrival rate")
    for axis, name, values in ((axes[1], "prompt", stats.prompt), (axes[2], "output", stats.output)):
        edges = np.logspace(0, np.log10(max(2, int(values.max()) + 1)), 50)
        axis.hist(np.maximum(values, 1), bins=edges)
        axis.set(xscale="log", xlabel=f"{name} tokens", ylabel="requests", title=f"{name} length")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
