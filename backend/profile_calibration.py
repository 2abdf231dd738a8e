"""In-run calibration: what passes cost inside the engine, and the engine's time around them.

The profiler times isolated passes (one model, the same batch over and over, hot caches).  In
a real run the engine interleaves every model of a chain, feeds ragged batches (padding) and
spends Python time between passes (routing, forming the pass, sampling and verification,
TV samples, feedback) that no pass timing covers; on small models that is most of the cost.
This module runs a short calibration workload through :class:`backend.engine.Engine` -- the
serving loop the simulator runs too -- with every pass clocked (``PassClock``), and derives:

* per model ``m`` and pass kind (narrow, or wide: more than ``WIDE_FEED`` positions per row,
  i.e. prefills), ``factor_m = median over those passes of (forward seconds / table seconds)``,
  the table read bilinearly in ``(b, n)`` at the pass's rows and padded width on its
  :func:`monotone_envelope` (the median: a drafter pass is a fraction of a millisecond, and a
  few scheduler hiccups must not scale the whole table);
* the **loop overhead** (:class:`LoopOverhead`): for each pass, the wall time since the previous
  pass ended minus its forward time, fitted (non-negative least squares, the slowest tenth of
  passes left out as hiccups) as ``per_pass + per_row * rows + per_round * rounds ending``.

The calibration workload is the profiler's own (its prompts, a fixed output length, routes
cycling over :func:`calibration_routes`), never the run a prediction is compared with; it is
served three times and each number is the median of the three runs.
:func:`apply_calibration` stores ``factor_m * envelope(V_m)`` as the tables and the overhead
under ``meta["loop_overhead"]`` (:func:`sim.latency.loop_overhead` reads it), so the simulator
charges each pass ``factor * V(b, n) + per_pass + per_row * b + per_round * rounds``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from scipy.optimize import nnls

from backend.executor import PassClock
from backend.ladder import Ladder
from policies.contract import RoundFeedback, Route, RouteView
from policies.serving import WIDE_FEED
from traces.request import Request
from traces.world_profile import LOOP_OVERHEAD_KEY, LoopOverhead, WorldProfile


@dataclass(frozen=True)
class InRunCalibration:
    """Per-model pass-time factors and the loop overhead measured in engine runs."""

    factors: tuple[float, ...]  # narrow passes (<= WIDE_FEED positions per row)
    overhead: LoopOverhead
    passes: tuple[float, ...]  # passes per model
    rounds: int
    wide_factors: tuple[float, ...] = ()  # wide passes (prefills); empty: the narrow factors


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
    """Routes the calibration cycles through: the full chain and every drafter straight to the target.

    ``size`` counts ladder members: a model-free lookup drafter (member 0) only ever drafts, so
    it sits first in the full chain and in its own route to the target; its lookup passes get
    their own in-run factor like any member's passes (forward time: the lookup itself).
    """
    target = size - 1
    if size == 1:
        return [Route((0,), (), 0)]
    full = Route(tuple(range(size)), (4,) + (1,) * (size - 2), target)
    pairs = [Route((m, target), (4,), target) for m in range(size - 1)]
    return [full] + [r for r in pairs if r != full]


class CyclingRouter:
    """The calibration's policy: each request cycles over the calibration routes, round by round."""

    name = "calibration"

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = list(routes)
        self.rounds: dict[int, int] = {}

    def route(self, view: RouteView) -> Route:
        done = self.rounds.get(view.request_id, 0)
        self.rounds[view.request_id] = done + 1
        return self.routes[(view.request_id + done) % len(self.routes)]

    def observe(self, feedback: RoundFeedback) -> None:
        pass


def fit_loop_overhead(clocks: Sequence[PassClock]) -> LoopOverhead:
    """``gap = per_pass + per_row * rows + per_round * rounds`` over consecutive clocked passes."""
    features, gaps = [], []
    for before, clock in zip(clocks, clocks[1:]):
        features.append((1.0, float(clock.rows), float(clock.rounds_ending)))
        gaps.append(max(0.0, clock.ended - before.ended - clock.forward_s))
    if len(gaps) < 3:
        return LoopOverhead(0.0, 0.0, 0.0)
    x, y = np.asarray(features), np.asarray(gaps)
    calm = y <= np.quantile(y, 0.9)  # the slowest tenth: scheduler hiccups of a shared machine
    coefficients, _ = nnls(x[calm], y[calm])
    return LoopOverhead(*(float(c) for c in coefficients))


def clock_calibration_workload(
    ladder: Ladder,
    prompts: Sequence[Sequence[int]],
    output_tokens: int = 48,
    slots: int | None = None,
    lean: bool = False,
    seed: int = 0,
) -> list[PassClock]:
    """Serve one request per prompt (all arriving at once, ``output_tokens`` each, ``slots`` at a
    time: default all); every pass clocked.

    Routes cycle over :func:`calibration_routes` so every model runs draft and verify passes of
    several widths, prefill included.
    """
    from backend.engine import Engine, EngineConfig, replay_executor
    from backend.replay import FixedPrompts

    if not prompts:
        raise ValueError("in-run calibration needs at least one prompt")
    executor = replay_executor(ladder, seed=seed, lean=lean)
    executor.record_passes = True
    requests = [Request(i, 0.0, len(prompt), output_tokens, None) for i, prompt in enumerate(prompts)]
    config = EngineConfig(max_batch=slots or len(prompts), progress=False)
    router = CyclingRouter(calibration_routes(ladder.size))  # members: a lookup drafter counts
    with torch.inference_mode():
        Engine(ladder, executor, router, FixedPrompts(prompts), config).run(requests)
    return executor.pass_clocks


def calibration_from_clocks(
    clocks: Sequence[PassClock],
    tables: Sequence[tuple[Sequence[Sequence[float]], Sequence[int], Sequence[int]]],
) -> InRunCalibration:
    """Per-model factors against ``tables[m] = (seconds, batch_sizes, tokens)`` and the loop overhead."""
    envelopes = [(monotone_envelope(seconds), batches, tokens) for seconds, batches, tokens in tables]
    narrow: list[list[float]] = [[] for _ in tables]
    wide: list[list[float]] = [[] for _ in tables]
    for clock in clocks:
        seconds, batches, tokens = envelopes[clock.model]
        expected = table_seconds(seconds, batches, tokens, clock.rows, clock.width)
        if expected > 0:
            kind = wide if clock.width > WIDE_FEED else narrow
            kind[clock.model].append(clock.forward_s / expected)
    # measured apart: a decode pass of a few positions pays the framework's fixed costs the
    # isolated timing amortises (factor 1.3-1.6 on the embedded ladder), a prefill pass does
    # not (0.8-0.96); one factor for both over-predicted every prefill, hence TTFT
    factors = tuple(float(np.median(n or w)) if n or w else 1.0 for n, w in zip(narrow, wide))
    wide_factors = tuple(float(np.median(w)) if w else f for w, f in zip(wide, factors))
    passes = tuple(float(len(n) + len(w)) for n, w in zip(narrow, wide))
    rounds = sum(clock.rounds_ending for clock in clocks)
    return InRunCalibration(factors, fit_loop_overhead(clocks), passes, rounds, wide_factors)


def measure_in_run(
    ladder: Ladder,
    tables: Sequence[tuple[Sequence[Sequence[float]], Sequence[int], Sequence[int]]],
    prompts: Sequence[Sequence[int]],
    output_tokens: int = 48,
    slots: int | None = None,
    lean: bool = False,
    seed: int = 0,
    repeats: int = 3,
) -> InRunCalibration:
    """:func:`clock_calibration_workload` ``repeats`` times, :func:`calibration_from_clocks` against
    ``tables`` for each run, and per factor and overhead coefficient the median over the runs.

    On a shared machine a busy spell covers a whole run of a few seconds (drafter factor 1.5 vs
    2.9 in two profiles minutes apart), which a median within one run cannot see.  The median of
    three runs drops one such run; the fastest run would drop the contention the real runs meet
    too (measured: it under-predicted every cell by 4-26%).
    """
    serve_once = partial(clock_calibration_workload, ladder, prompts, output_tokens, slots, lean, seed)
    runs = [calibration_from_clocks(serve_once(), tables) for _ in range(max(1, repeats))]
    return median_calibration(runs)


def median_calibration(runs: Sequence[InRunCalibration]) -> InRunCalibration:
    """Per field, the median over calibration runs (passes and rounds: the first run's)."""

    def median_of(values: Sequence[tuple[float, ...]]) -> tuple[float, ...]:
        return tuple(float(np.median(column)) for column in zip(*values))

    overhead = LoopOverhead(*median_of([tuple(run.overhead) for run in runs]))
    wide = median_of([run.wide_factors or run.factors for run in runs])
    factors = median_of([run.factors for run in runs])
    return InRunCalibration(factors, overhead, runs[0].passes, runs[0].rounds, wide)


def calibrated_seconds(
    seconds: Sequence[Sequence[Sequence[float]]],
    factor: float,
    tokens: Sequence[int] | None = None,
    wide_factor: float | None = None,
) -> list[list[list[float]]]:
    """``factor · envelope(V)`` for every (batch × tokens) plane of a grid; with the grid's
    ``tokens`` axis, columns wider than ``WIDE_FEED`` take ``wide_factor`` instead."""

    def scale(column: int) -> float:
        if tokens is None or wide_factor is None or tokens[column] <= WIDE_FEED:
            return factor
        return wide_factor

    return [
        [[scale(j) * v for j, v in enumerate(row)] for row in monotone_envelope(plane)] for plane in seconds
    ]


def calibration_meta(calibration: InRunCalibration, names: Sequence[str]) -> Mapping[str, object]:
    """What the profile's ``meta["in_run_calibration"]`` records."""
    return {
        "factors": {name: round(f, 4) for name, f in zip(names, calibration.factors)},
        "wide_factors": {name: round(f, 4) for name, f in zip(names, calibration.wide_factors)},
        "passes": {name: round(p, 2) for name, p in zip(names, calibration.passes)},
        "rounds": calibration.rounds,
        "applied": "pass_time tables and meta.pass_time_grid hold factor * envelope(measured); "
        "meta.pass_time_grid_isolated keeps the isolated-pass measurements; the engine's time "
        "outside passes is meta.loop_overhead",
    }


def apply_calibration(profile: WorldProfile, calibration: InRunCalibration) -> WorldProfile:
    """The profile with every pass-time table (and ``meta.pass_time_grid``) calibrated.

    The isolated measurements stay in ``meta.pass_time_grid_isolated``; the loop overhead goes
    to ``meta["loop_overhead"]``.
    """
    wide_factors = calibration.wide_factors or calibration.factors
    models = []
    for model, factor, wide_factor in zip(profile.models, calibration.factors, wide_factors):
        table = model.pass_time
        seconds = calibrated_seconds([table.seconds], factor, table.tokens, wide_factor)[0]
        models.append(
            dataclasses.replace(
                model, pass_time=dataclasses.replace(table, seconds=tuple(tuple(r) for r in seconds))
            )
        )
    meta = dict(profile.meta)
    grids = meta.get("pass_time_grid", {})
    meta["pass_time_grid_isolated"] = grids
    member = {name: index for index, name in enumerate(profile.names)}
    meta["pass_time_grid"] = {
        name: {
            **grid,
            "seconds": calibrated_seconds(
                grid["seconds"],
                calibration.factors[member[name]],
                grid.get("tokens"),
                wide_factors[member[name]],
            ),
        }
        for name, grid in grids.items()
        if name in member
    }
    meta["in_run_calibration"] = calibration_meta(calibration, profile.names)
    meta[LOOP_OVERHEAD_KEY] = calibration.overhead._asdict()
    return dataclasses.replace(profile, models=tuple(models), meta=meta)
