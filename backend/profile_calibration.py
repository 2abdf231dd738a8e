"""In-run calibration of profiled pass times: what passes cost inside the executor's rounds.

The profiler times isolated passes (one model, the same batch over and over, hot caches).  In
a real run the executor interleaves every model of a chain, feeds ragged batches (padding),
and spends Python time between passes (the round generator, verification, TV samples) that
no pass timing covers.  On small models this is most of the cost.  This module runs a few
real rounds through :class:`backend.executor.MultiLevelExecutor` -- the engine's code path --
and derives, per model ``m``:

* ``factor_m = median over the passes m ran of (measured seconds / table-predicted seconds)``
  (the median: a drafter pass is a fraction of a millisecond, and a few scheduler hiccups
  in the calibration must not scale the whole table; with a ratio of sums they did, 2–4x),
  the table prediction at each pass's (batch size ``b``, positions fed ``n``) being
  bilinear in ``(b, n)`` (as the simulator reads it) on the table's :func:`monotone_envelope`.
  A batched pass appears once in each of its ``b`` sequences' feedback (same model, seconds
  and batch size): it counts once, at its widest feed ``n`` (the backend pads ragged rows to
  it, and the simulator's ``padded_batches`` charges the same);
* ``overhead_s`` (one number for the ladder): the round wall time the passes do not explain,
  ``(Σ step wall − Σ pass seconds) / #passes``, charged to every pass.

:func:`calibrated_seconds` turns a pass-time grid into
``factor_m · envelope(V_m)(b, n) + overhead_s``, which is what the simulator must charge per
pass to reproduce the executor's round times.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from backend.executor import MultiLevelExecutor
from backend.ladder import Ladder
from policies.contract import Route
from traces.world_profile import WorldProfile


@dataclass(frozen=True)
class InRunCalibration:
    """Per-model pass-time factors and the per-pass overhead measured in executor rounds."""

    factors: tuple[float, ...]
    overhead_s: float
    passes: tuple[float, ...]  # distinct passes per model (each batched pass counts once)
    steps: int


def monotone_envelope(seconds: Sequence[Sequence[float]]) -> list[list[float]]:
    """``V'(b, n) = min over b' >= b, n' >= n of V(b', n')`` for a (batch × tokens) table.

    A pass never gets cheaper with more sequences or more positions, so a cell above a cell
    that dominates it was inflated by a scheduler hiccup during its few repeats (seen on a
    shared 2-core machine: 568 ms at one cell, 11 ms at its neighbours).  The envelope keeps
    every consistent cell and lowers the inflated ones to their cheapest dominating cell.
    """
    rows = [list(map(float, row)) for row in seconds]
    for i in range(len(rows) - 1, -1, -1):
        for j in range(len(rows[i]) - 1, -1, -1):
            if j + 1 < len(rows[i]):
                rows[i][j] = min(rows[i][j], rows[i][j + 1])
            if i + 1 < len(rows):
                rows[i][j] = min(rows[i][j], rows[i + 1][j])
    return rows


def table_seconds(
    seconds: Sequence[Sequence[float]], batch_sizes: Sequence[int], tokens: Sequence[int], b: float, n: float
) -> float:
    """Bilinear ``V(b, n)`` from a (batch × tokens) table, linear beyond the grid, never below 0."""

    def along(axis: Sequence[int], x: float) -> tuple[int, int, float]:
        if len(axis) == 1:
            return 0, 0, 0.0
        i = int(np.clip(np.searchsorted(axis, x) - 1, 0, len(axis) - 2))
        return i, i + 1, (x - axis[i]) / (axis[i + 1] - axis[i])

    i0, i1, wb = along(batch_sizes, b)
    j0, j1, wn = along(tokens, n)

    def row(i: int) -> float:
        return seconds[i][j0] + wn * (seconds[i][j1] - seconds[i][j0])

    return max(0.0, row(i0) + wb * (row(i1) - row(i0)))


def calibration_routes(size: int) -> list[Route]:
    """Routes the calibration cycles through: the full chain and every drafter straight to the target."""
    target = size - 1
    if size == 1:
        return [Route((0,), (), 0)]
    full = Route(tuple(range(size)), (4,) + (1,) * (size - 2), target)
    pairs = [Route((m, target), (4,), target) for m in range(size - 1)]
    return [full] + [r for r in pairs if r != full]


def measure_in_run(
    ladder: Ladder,
    tables: Sequence[tuple[Sequence[Sequence[float]], Sequence[int], Sequence[int]]],
    prompts: Sequence[Sequence[int]],
    steps: int = 16,
    lean: bool = False,
    seed: int = 0,
) -> InRunCalibration:
    """Run ``steps`` executor steps on ``prompts`` (one batch) and compare pass times with ``tables``.

    ``tables[m]`` is model ``m``'s ``(seconds, batch_sizes, tokens)`` table.  Routes cycle over
    :func:`calibration_routes` so every model runs draft and verify passes of several widths.
    """
    if not prompts:
        raise ValueError("in-run calibration needs at least one prompt")
    size = len(ladder.models)
    executor = MultiLevelExecutor(ladder, seed=seed, lean=lean)
    for seq_id, prompt in enumerate(prompts):
        executor.add(seq_id, prompt)
    ratios: list[list[float]] = [[] for _ in range(size)]
    passes = [0.0] * size
    wall = in_passes = total_passes = 0.0
    routes = itertools.cycle(calibration_routes(size))
    envelopes = [(monotone_envelope(seconds), batches, tokens) for seconds, batches, tokens in tables]
    with torch.inference_mode():
        for _ in range(steps):
            route = next(routes)
            began = time.perf_counter()
            outcomes = executor.step({seq_id: (route, 8) for seq_id in range(len(prompts))})
            wall += time.perf_counter() - began
            # one batched pass appears in each member's feedback with the same (model, seconds, batch)
            widest: dict[tuple[int, float, int], int] = {}
            for outcome in outcomes.values():
                for level in outcome.feedback.levels:
                    for timing in level.passes:
                        key = (timing.model, timing.seconds, timing.batch_size)
                        widest[key] = max(widest.get(key, 0), timing.tokens)
            for (model, pass_seconds, batch), width in widest.items():
                seconds, batches, tokens = envelopes[model]
                expected = table_seconds(seconds, batches, tokens, batch, width)
                if expected > 0:
                    ratios[model].append(pass_seconds / expected)
                passes[model] += 1
                in_passes += pass_seconds
                total_passes += 1
    factors = tuple(float(np.median(r)) if r else 1.0 for r in ratios)
    overhead = max(0.0, wall - in_passes) / total_passes if total_passes else 0.0
    return InRunCalibration(factors, overhead, tuple(passes), steps)


def calibrated_seconds(
    seconds: Sequence[Sequence[Sequence[float]]], factor: float, overhead_s: float
) -> list[list[list[float]]]:
    """``factor · envelope(V) + overhead_s`` for every (batch × tokens) plane of a grid."""
    return [[[factor * v + overhead_s for v in row] for row in monotone_envelope(plane)] for plane in seconds]


def calibration_meta(calibration: InRunCalibration, names: Sequence[str]) -> Mapping[str, object]:
    """What the profile's ``meta["in_run_calibration"]`` records."""
    return {
        "factors": {name: round(f, 4) for name, f in zip(names, calibration.factors)},
        "overhead_s": calibration.overhead_s,
        "passes": {name: round(p, 2) for name, p in zip(names, calibration.passes)},
        "steps": calibration.steps,
        "applied": "pass_time tables and meta.pass_time_grid hold factor * measured + overhead_s; "
        "meta.pass_time_grid_isolated keeps the isolated-pass measurements",
    }


def apply_calibration(profile: WorldProfile, calibration: InRunCalibration) -> WorldProfile:
    """The profile with every pass-time table (and ``meta.pass_time_grid``) calibrated.

    The isolated measurements stay in ``meta.pass_time_grid_isolated``.
    """
    models = []
    for model, factor in zip(profile.models, calibration.factors):
        table = model.pass_time
        seconds = calibrated_seconds([table.seconds], factor, calibration.overhead_s)[0]
        models.append(
            dataclasses.replace(
                model, pass_time=dataclasses.replace(table, seconds=tuple(tuple(r) for r in seconds))
            )
        )
    meta = dict(profile.meta)
    grids = meta.get("pass_time_grid", {})
    meta["pass_time_grid_isolated"] = grids
    meta["pass_time_grid"] = {
        name: {**grid, "seconds": calibrated_seconds(grid["seconds"], factor, calibration.overhead_s)}
        for (name, grid), factor in zip(grids.items(), calibration.factors)
    }
    meta["in_run_calibration"] = calibration_meta(calibration, profile.names)
    return dataclasses.replace(profile, models=tuple(models), meta=meta)
