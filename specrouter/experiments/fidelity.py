"""The fidelity table: what the simulator predicted vs what the real backend measured.

Both worlds write the same records (:mod:`traces.records`) for the same workload, policy
and seed, so every row compares like with like:

* latency rows -- ``tpot_mean``, ``tpot_p99``, ``ttft_mean``, ``ttft_p99`` (seconds) and
  ``throughput_tokens_per_s`` from :func:`traces.summary.summarize` of each world;
* acceptance rows -- per ordered pair ``(a, b)`` that verified in either world,
  ``sum accepted / sum proposed`` over the rounds where ``b`` verified ``a``'s tokens.  This
  ratio depends on the lookaheads each world chose (a verify stops at the first rejection, so
  longer drafts lower it), which a routing policy sets differently in the two worlds;
* per-token acceptance rows (``alpha M{a}->M{b}``) -- the same estimator in both worlds, the
  maximum-likelihood ``alpha`` of the stop-at-first-rejection process: a verify of ``m``
  candidates that accepts ``k`` has likelihood ``alpha^k (1 - alpha)^[k < m]``, so
  ``alpha_hat = sum accepted / (sum accepted + #verifies that rejected a candidate)``,
  independent of the lookahead; this compares like with like (and with a profile's alpha);
* ``chain_agreement`` -- rounds are aligned by (request, round number within the request);
  the fraction of aligned rounds in which both worlds chose the same chain.  Rounds only one
  world ran (it needed more rounds for that request) are not aligned and not counted.

The relative error of a row is ``(predicted - measured) / measured``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from traces.records import RequestRecord, RoundRecord
from traces.summary import summarize

LATENCY_ROWS = ("tpot_mean", "tpot_p99", "ttft_mean", "ttft_p99", "throughput_tokens_per_s")


def pair_acceptance(rounds: Sequence[RoundRecord]) -> dict[tuple[int, int], tuple[int, int]]:
    """``(lower, upper) -> (accepted, proposed)`` summed over the rounds."""
    totals: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    for record in rounds:
        models = record.chain_models
        for level in range(1, len(models)):
            if record.proposed[level]:
                cell = totals[(models[level - 1], models[level])]
                cell[0] += record.accepted[level]
                cell[1] += record.proposed[level]
    return {pair: (a, p) for pair, (a, p) in sorted(totals.items())}


def per_token_acceptance(rounds: Sequence[RoundRecord]) -> dict[tuple[int, int], tuple[float, int]]:
    """``(lower, upper) -> (alpha_hat, verifies)``: the MLE of the per-token acceptance.

    Model: each candidate is accepted with probability ``alpha`` independently, and a verify
    of ``m`` candidates stops at the first rejection.  Accepting ``k`` has likelihood
    ``alpha^k (1 - alpha)^[k < m]``; maximising the product over verifies gives
    ``alpha_hat = A / (A + R)`` with ``A = sum accepted`` and ``R`` = the number of verifies that
    rejected a candidate (``k < m``).  ``alpha_hat`` is NaN when no candidate was accepted or
    rejected (nothing was learned).
    """
    totals: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0, 0])
    for record in rounds:
        models = record.chain_models
        for level in range(1, len(models)):
            proposed = record.proposed[level]
            if proposed:
                cell = totals[(models[level - 1], models[level])]
                cell[0] += record.accepted[level]
                cell[1] += record.accepted[level] < proposed
                cell[2] += 1
    return {
        pair: ((accepted / (accepted + rejected) if accepted + rejected else float("nan")), verifies)
        for pair, (accepted, rejected, verifies) in sorted(totals.items())
    }


def chain_agreement(predicted: Sequence[RoundRecord], measured: Sequence[RoundRecord]) -> tuple[float, int]:
    """Fraction of aligned rounds with the same chain, and how many rounds were aligned."""

    def by_request(rounds: Sequence[RoundRecord]) -> dict[int, list[str]]:
        chains: dict[int, list[tuple[float, str]]] = defaultdict(list)
        for record in rounds:
            chains[record.request_id].append((record.time, record.chain))
        return {rid: [c for _, c in sorted(items)] for rid, items in chains.items()}

    sim, real = by_request(predicted), by_request(measured)
    same = aligned = 0
    for rid, sim_chains in sim.items():
        for a, b in zip(sim_chains, real.get(rid, ())):
            aligned += 1
            same += a == b
    return (same / aligned if aligned else float("nan")), aligned


def relative_error(predicted: float, measured: float) -> float:
    if not (math.isfinite(predicted) and math.isfinite(measured)) or measured == 0:
        return float("nan")
    return (predicted - measured) / measured


def fidelity_rows(
    predicted_requests: Sequence[RequestRecord],
    measured_requests: Sequence[RequestRecord],
    predicted_rounds: Sequence[RoundRecord],
    measured_rounds: Sequence[RoundRecord],
) -> list[dict[str, Any]]:
    """Rows ``{metric, predicted, measured, error}`` (see the module doc)."""
    sim, real = summarize(predicted_requests), summarize(measured_requests)
    rows = []
    for key in LATENCY_ROWS:
        rows.append(_row(key, sim[key], real[key]))
    sim_alpha, real_alpha = pair_acceptance(predicted_rounds), pair_acceptance(measured_rounds)
    for pair in sorted(set(sim_alpha) | set(real_alpha)):
        rows.append(
            _row(
                f"acceptance M{pair[0]}->M{pair[1]}",
                _ratio(sim_alpha.get(pair)),
                _ratio(real_alpha.get(pair)),
                samples=(sim_alpha.get(pair, (0, 0))[1], real_alpha.get(pair, (0, 0))[1]),
            )
        )
    sim_mle, real_mle = per_token_acceptance(predicted_rounds), per_token_acceptance(measured_rounds)
    for pair in sorted(set(sim_mle) | set(real_mle)):
        predicted, sim_verifies = sim_mle.get(pair, (float("nan"), 0))
        measured, real_verifies = real_mle.get(pair, (float("nan"), 0))
        rows.append(
            _row(f"alpha M{pair[0]}->M{pair[1]}", predicted, measured, samples=(sim_verifies, real_verifies))
        )
    agreement, aligned = chain_agreement(predicted_rounds, measured_rounds)
    rows.append({"metric": "chain_agreement", "predicted": None, "measured": agreement, "error": None,
                 "samples": [aligned, aligned]})  # fmt: skip
    return rows


def _ratio(cell: tuple[int, int] | None) -> float:
    return cell[0] / cell[1] if cell and cell[1] else float("nan")


def _row(
    metric: str, predicted: float, measured: float, samples: tuple[int, int] | None = None
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "metric": metric,
        "predicted": predicted,
        "measured": measured,
        "error": relative_error(predicted, measured),
    }
    if samples is not None:
        row["samples"] = list(samples)
    return row


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Terminal table; latencies in ms, throughput in tokens/s, acceptance as fractions."""
    lines = [f"{'metric':<26} {'predicted':>11} {'measured':>11} {'error':>8}"]
    for row in rows:
        scale, unit = _scale(row["metric"])
        predicted = "" if row["predicted"] is None else _cell(row["predicted"] * scale)
        measured = _cell(row["measured"] * scale)
        error = "" if row["error"] is None or math.isnan(row["error"]) else f"{row['error']:+.1%}"
        lines.append(f"{row['metric'] + unit:<26} {predicted:>11} {measured:>11} {error:>8}")
    return "\n".join(lines)


def _scale(metric: str) -> tuple[float, str]:
    if metric.startswith(("tpot", "ttft")):
        return 1e3, " (ms)"
    if metric.startswith("throughput"):
        return 1.0, ""
    return 1.0, ""


def _cell(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.4g}"


def write_table(rows: Sequence[dict[str, Any]], out_dir: str | Path) -> tuple[Path, Path]:
    """``fidelity.json`` (rows, NaN as null) and ``fidelity.txt`` (the terminal table)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = [{k: _json_number(v) for k, v in row.items()} for row in rows]
    json_path, text_path = out / "fidelity.json", out / "fidelity.txt"
    json_path.write_text(json.dumps(clean, indent=2) + "\n")
    text_path.write_text(format_table(rows) + "\n")
    return json_path, text_path


def _json_number(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value
