"""Summary statistics of a run's per-request records.

Per request ``r`` with arrival ``a``, first token ``f``, finish ``e`` and ``n`` output tokens:

* ``TTFT = f - a`` (time to first token),
* ``TPOT = (e - f) / (n - 1)`` (mean time per output token after the first; undefined for
  ``n <= 1``: such requests are left out of the TPOT statistics and meet any TPOT bound),
* ``E2E = e - a`` (end-to-end latency).

Over a run of ``R`` requests spanning ``D = max(e) - min(a)`` seconds:
throughput ``= sum(n) / D`` tokens/s and ``R / D`` requests/s; *goodput* (DistServe's
definition) ``= |{r : r meets every SLO bound}| / D`` requests/s, with the matching
token rate and the attained fraction.  Percentiles use linear interpolation (numpy's
default) so they are comparable with other tools.

This module takes plain tuples in :class:`traces.records.RequestRecord` field order, so
it needs no import of the record types and columnar callers can pass raw rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

PERCENTILES: tuple[int, ...] = (50, 90, 99)


class SLO(NamedTuple):
    """Latency bounds in seconds; ``None`` means no bound on that metric."""

    ttft: float | None = None
    tpot: float | None = None
    e2e: float | None = None


def request_columns(records: Iterable[Sequence[Any]]) -> dict[str, np.ndarray]:
    """Transpose request rows ``(id, arrival, first_token, finish, prompt, output, ...)``."""
    rows = list(records)
    if not rows:
        raise ValueError("summarize: no request records (an empty run has no statistics)")
    arrival = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
    first = np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows))
    finish = np.fromiter((r[3] for r in rows), dtype=np.float64, count=len(rows))
    prompt = np.fromiter((r[4] for r in rows), dtype=np.int64, count=len(rows))
    output = np.fromiter((r[5] for r in rows), dtype=np.int64, count=len(rows))
    return {"arrival": arrival, "first_token": first, "finish": finish, "prompt": prompt, "output": output}


def latency_metrics(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """TTFT, TPOT (NaN where ``n <= 1``) and E2E for every request."""
    ttft = columns["first_token"] - columns["arrival"]
    e2e = columns["finish"] - columns["arrival"]
    decode_steps = columns["output"] - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(decode_steps > 0, (columns["finish"] - columns["first_token"]) / decode_steps, np.nan)
    return {"ttft": ttft, "tpot": tpot, "e2e": e2e}


def summarize(records: Iterable[Sequence[Any]], slo: SLO | None = None) -> dict[str, float]:
    """Means, p50/p90/p99 of TTFT, TPOT and E2E, throughput and goodput (see module doc).

    Keys: ``requests``, ``duration_s``, ``output_tokens``, ``throughput_tokens_per_s``,
    ``throughput_requests_per_s``, ``{ttft,tpot,e2e}_{mean,p50,p90,p99}`` (seconds) and,
    when ``slo`` is given, ``slo_attainment`` (fraction), ``goodput_requests_per_s`` and
    ``goodput_tokens_per_s``.
    """
    columns = request_columns(records)
    metrics = latency_metrics(columns)
    if np.any(metrics["ttft"] < 0) or np.any(columns["finish"] < columns["first_token"]):
        raise ValueError("summarize: a record has first_token < arrival or finish < first_token")
    duration = float(columns["finish"].max() - columns["arrival"].min())
    rate = 1.0 / duration if duration > 0 else float("nan")
    out: dict[str, float] = {
        "requests": float(len(columns["arrival"])),
        "duration_s": duration,
        "output_tokens": float(columns["output"].sum()),
        "throughput_tokens_per_s": float(columns["output"].sum()) * rate,
        "throughput_requests_per_s": len(columns["arrival"]) * rate,
    }
    for name, values in metrics.items():
        defined = values[~np.isnan(values)]
        out[f"{name}_mean"] = float(defined.mean()) if defined.size else float("nan")
        for q in PERCENTILES:
            out[f"{name}_p{q}"] = float(np.percentile(defined, q)) if defined.size else float("nan")
    if slo is not None:
        good = np.ones(len(columns["arrival"]), dtype=bool)
        for name, bound in zip(SLO._fields, slo):
            if bound is not None:
                values = metrics[name]
                good &= np.isnan(values) | (values <= bound)
        out["slo_attainment"] = float(good.mean())
        out["goodput_requests_per_s"] = float(good.sum()) * rate
        out["goodput_tokens_per_s"] = float(columns["output"][good].sum()) * rate
    return out


def format_summary(summary: dict[str, float]) -> str:
    """A small fixed-width table of a :func:`summarize` result (milliseconds for latencies)."""
    lines = [
        f"requests {int(summary['requests'])}  duration {summary['duration_s']:.2f}s  "
        f"throughput {summary['throughput_tokens_per_s']:.1f} tok/s "
        f"{summary['throughput_requests_per_s']:.3f} req/s"
    ]
    lines.append(f"{'metric':<6} {'mean':>10} {'p50':>10} {'p90':>10} {'p99':>10}  (ms)")
    for name in ("ttft", "tpot", "e2e"):
        cells = [summary[f"{name}_{k}"] * 1e3 for k in ("mean", "p50", "p90", "p99")]
        lines.append(f"{name:<6} " + " ".join(f"{c:10.2f}" for c in cells))
    if "slo_attainment" in summary:
        lines.append(
            f"SLO attained by {summary['slo_attainment']:.1%}: goodput "
            f"{summary['goodput_requests_per_s']:.3f} req/s {summary['goodput_tokens_per_s']:.1f} tok/s"
        )
    return "\n".join(lines)
