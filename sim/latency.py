"""Forward-pass latency: roofline or profiled table, with seeded noise and slowdown episodes.

A batched pass of model ``m`` is described by the batch size ``b``, the positions fed in
total ``T = sum_i n_i`` (``n_i`` per sequence: 1 for a decode / draft step, ``k + 1`` to
verify ``k`` candidates, plus catch-up and prefill tokens), the committed context summed over
sequences ``C = sum_i c_i`` and the attention work ``A = sum_i n_i (c_i + n_i)``.

Roofline (per pass)::

    FLOPs = 2 P T + 4 L d A                 (weights, then QK^T and AV over the context)
    bytes = W + kv_per_token * (C + T)      (weights once per pass, each sequence's KV)
    time  = max(FLOPs / (eta_f peak), bytes / (eta_b bandwidth)) + overhead

with ``P`` parameters, ``L`` layers, ``d`` hidden size, ``W`` weight bytes,
``overhead = pass_overhead + L * layer_overhead``.

Table: ``V(b, n)`` from a world profile, bilinear in (batch size, positions per sequence
``n = T / b``), extended linearly beyond the measured grid (a pass never gets cheaper).

A model-free member (an n-gram lookup, ``ModelSpec.model_free``) feeds no positions: a lookup
pass of ``b`` rows costs ``pass_s + row_s * b`` (its config) in the roofline, or its profiled
lookup-pass table read at ``b`` rows (``traces.world_profile``: ``tokens == (1,)`` nominal).

Both are multiplied by seeded mean-one lognormal noise ``exp(sigma Z - sigma^2 / 2)`` and by
the slowdown factor ``k`` of any episode active on the model's GPU at the pass's start.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from sim.config import ClusterConfig
from traces.world_profile import PassTimeTable, WorldProfile, loop_overhead


class Slowdown(NamedTuple):
    """GPU ``gpu`` runs ``factor`` x slower for passes starting in ``[start, end)``."""

    gpu: str
    start: float
    end: float
    factor: float


def random_slowdowns(
    gpus: Sequence[str], horizon: float, rate_per_hour: float, factor: float, duration: float, seed: int
) -> list[Slowdown]:
    """Poisson episodes (``rate_per_hour`` per GPU) of length ``duration`` up to ``horizon``."""
    rng = np.random.default_rng(seed)
    episodes = []
    for gpu in gpus:
        t = 0.0
        while True:
            t += float(rng.exponential(3600.0 / rate_per_hour))
            if t >= horizon:
                break
            episodes.append(Slowdown(gpu, t, t + duration, factor))
    return sorted(episodes, key=lambda e: (e.start, e.gpu))


class Roofline:
    """``max(FLOPs / (eta peak), bytes / (eta bw)) + overhead`` per model (see module doc)."""

    def __init__(self, cluster: ClusterConfig) -> None:
        self.coefficients = []
        for model in cluster.models:
            if model.model_free:  # priced by LatencyModel's lookup wrapper; no shape to read
                self.coefficients.append((0.0, 0.0, 0.0, 0.0, model.pass_s))
                continue
            gpu = cluster.gpus[model.gpu]
            flop_rate = gpu.peak_flops * gpu.count * gpu.flops_efficiency
            byte_rate = gpu.bandwidth * gpu.count * gpu.bandwidth_efficiency
            overhead = gpu.pass_overhead_s + model.layers * gpu.layer_overhead_s
            self.coefficients.append(
                (
                    2.0 * model.params / flop_rate,  # seconds per position (weights)
                    4.0 * model.layers * model.hidden / flop_rate,  # seconds per attention unit
                    model.weight_bytes / byte_rate,  # seconds to stream the weights
                    model.kv_bytes_per_token / byte_rate,  # seconds per cached token read
                    overhead,
                )
            )

    def base(self, model: int, tokens: int, batch: int, context: int, attention: int) -> float:
        per_token, per_attention, weights, per_kv, overhead = self.coefficients[model]
        compute = per_token * tokens + per_attention * attention
        memory = weights + per_kv * (context + tokens)
        return (compute if compute > memory else memory) + overhead


class TableLatency:
    """Interpolated ``V(b, n)`` tables of a world profile (ladder order must match)."""

    def __init__(self, profile: WorldProfile, cluster: ClusterConfig) -> None:
        if len(profile.models) != len(cluster.models):
            raise ValueError(
                f"world profile has {len(profile.models)} models ({', '.join(profile.names)}) but "
                f"cluster {cluster.name!r} has {len(cluster.models)} ({', '.join(cluster.names)})"
            )
        for index, (measured, configured) in enumerate(zip(profile.models, cluster.models)):
            if measured.model_free != configured.model_free:
                what = "model-free" if measured.model_free else "a network"
                raise ValueError(
                    f"world profile member {index} ({measured.name}) is {what} but cluster "
                    f"{cluster.name!r} member {index} ({configured.name}) is not"
                )
        self.tables = [m.pass_time for m in profile.models]

    def base(self, model: int, tokens: int, batch: int, context: int, attention: int) -> float:
        return table_lookup(self.tables[model], batch, tokens / batch)  # a lookup: tokens 0, grid (1,)


def _bracket(grid: Sequence[int], x: float) -> tuple[int, int, float]:
    """Indices ``(i, j)`` and weight ``w`` with ``x ~ (1 - w) grid[i] + w grid[j]`` (linear extension)."""
    if len(grid) == 1:
        return 0, 0, 0.0
    j = min(max(bisect_right(grid, x), 1), len(grid) - 1)
    i = j - 1
    return i, j, (x - grid[i]) / (grid[j] - grid[i])


def table_lookup(table: PassTimeTable, batch: float, tokens: float) -> float:
    """Bilinear interpolation of ``table`` at ``(batch, tokens)``, linear beyond the grid, floored."""
    bi, bj, bw = _bracket(table.batch_sizes, batch)
    ti, tj, tw = _bracket(table.tokens, tokens)
    rows = table.seconds

    def row_value(r: int) -> float:
        return rows[r][ti] * (1.0 - tw) + rows[r][tj] * tw

    value = row_value(bi) * (1.0 - bw) + row_value(bj) * bw
    return max(value, min(min(row) for row in rows))


def _with_lookup_costs(network: Callable[[int, int, int, int, int], float], cluster: ClusterConfig) -> Any:
    """``network`` for networks, ``pass_s + row_s * rows`` for the model-free members (only
    clusters with one get this wrapper: the others' passes pay no extra branch)."""
    costs = [(m.pass_s, m.row_s) if m.model_free else None for m in cluster.models]

    def base(model: int, tokens: int, batch: int, context: int, attention: int) -> float:
        cost = costs[model]
        if cost is None:
            return network(model, tokens, batch, context, attention)
        return cost[0] + cost[1] * batch

    return base


class LatencyModel:
    """Base latency x noise x slowdown; ``expected`` leaves the noise out (the truth's view)."""

    NOISE_CHUNK = 4096

    def __init__(
        self,
        cluster: ClusterConfig,
        profile: WorldProfile | None = None,
        noise_sigma: float = 0.0,
        slowdowns: Sequence[Slowdown] = (),
        seed: int = 0,
    ) -> None:
        self.kind = "table" if profile is not None else "roofline"
        self.base_model: Roofline | TableLatency = (
            TableLatency(profile, cluster) if profile is not None else Roofline(cluster)
        )
        self.base = self.base_model.base
        if cluster.model_free and profile is None:
            self.base = _with_lookup_costs(self.base, cluster)
        gpus = set(cluster.gpus)
        for episode in slowdowns:
            if episode.gpu not in gpus:
                raise ValueError(f"slowdown on unknown GPU {episode.gpu!r} (cluster GPUs: {', '.join(gpus)})")
            if not (episode.end > episode.start and episode.factor > 0):
                raise ValueError(f"slowdown {episode} needs end > start and factor > 0")
        self.episodes_by_model = [
            tuple(e for e in slowdowns if e.gpu == model.gpu) for model in cluster.models
        ]
        self.noise_sigma = noise_sigma
        self.loop_overhead = loop_overhead(profile)
        self._rng = np.random.default_rng(seed)
        self._noise: list[float] = []
        self._noise_at = 0

    def slowdown(self, model: int, now: float) -> float:
        factor = 1.0
        for episode in self.episodes_by_model[model]:
            if episode.start <= now < episode.end:
                factor *= episode.factor
        return factor

    def expected(
        self, model: int, tokens: int, batch: int, context: int, attention: int, now: float
    ) -> float:
        seconds = self.base(model, tokens, batch, context, attention)
        return seconds * self.slowdown(model, now) if self.episodes_by_model[model] else seconds

    def pass_time(
        self, model: int, tokens: int, batch: int, context: int, attention: int, now: float
    ) -> float:
        seconds = self.base(model, tokens, batch, context, attention)
        if self.episodes_by_model[model]:
            seconds *= self.slowdown(model, now)
        if self.noise_sigma:
            if self._noise_at >= len(self._noise):
                sigma = self.noise_sigma
                draws = self._rng.standard_normal(self.NOISE_CHUNK) * sigma - 0.5 * sigma * sigma
                self._noise = np.exp(draws).tolist()
                self._noise_at = 0
            seconds *= self._noise[self._noise_at]
            self._noise_at += 1
        return seconds
