"""Online estimators SpecRouter learns from round feedback (docs/design.md §1).

* :class:`PassTimeProfile` -- per model, ``V_j(n, b)``: the wall time of a pass feeding
  ``n`` positions per sequence with ``b`` sequences in the batch, as a robust (median)
  curve over the positions the whole batch feeds, ``n b``.  Unmeasured models get a prior: the largest
  measured model's curve scaled by the parameter ratio when the ladder gives parameters,
  a fixed fraction otherwise.
* :class:`PairStats` -- per ordered pair ``(lower, upper)``: an EMA of the similarity
  ``1 - TV`` from TV samples and discounted counts of accepted tokens and acceptance
  *trials* (``accepted`` plus the rejections: accepted prefixes are censored geometric
  draws, whose maximum-likelihood acceptance is ``sum accepted / sum trials``); levels
  that verified several times in a round are estimated by the method of moments.
* :class:`AcceptanceMap` -- the map ``f`` from similarity to acceptance: the identity
  (exact for lossless sampling, ``E[accept] = 1 - TV``) or a line ``a + b s`` fitted online
  by weighted least squares with a ridge pull towards the identity (greedy decoding).
"""

from __future__ import annotations

import math
from bisect import insort
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

from policies.contract import RoundFeedback, RouteView
from policies.cost_model import SystemLoad
from policies.planner import WIDTH_GRID, WIDTH_STEPS_PER_OCTAVE, WidthSpread


class LevelFeedbackLike(Protocol):
    """The counts of :class:`policies.contract.LevelFeedback` that acceptance needs."""

    @property
    def proposed(self) -> int: ...

    @property
    def accepted(self) -> int: ...

    @property
    def emitted(self) -> int: ...


EXACT_TOTALS = 64  # passes feeding up to this many positions in all get a cell each
TOTAL_STEPS_PER_OCTAVE = 8  # above that, cells 2^(1/8) apart (9%; each cell tracks its own mean)
TOTAL_CELLS = EXACT_TOTALS + 12 * TOTAL_STEPS_PER_OCTAVE  # up to 64 * 2^12 = 262,144 positions
FRESH_SAMPLES = 4  # a cell with this many samples is known: a part of the curve the plan did not see
PRIOR_UNTIL_KNOWN = 3  # a model's prior curve (seed) is dropped once this many of its cells are known
UNMEASURED_FRACTION = 0.05  # prior pass time of an unmeasured model, as a fraction of the target's
COST_RATE_SHARE = 0.25  # the cost cells' median step, as a share of the curve's (width_cost)
WIDTH_BINS = 64  # width bins of the per-sequence cost's cells (width_bin; key = cell * WIDTH_BINS + bin)
COST_REFIT = 64  # passes of a model between two fits of its per-sequence cost (width_cost)
SHIFT_FOLLOWED = 0.1  # a model's cells moved by more than this (median) since the last snapshot: a shift


def read_curve(totals: np.ndarray, times: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Pass time at ``wanted`` total positions from measured points (see PassTimeProfile)."""
    out = np.interp(wanted, totals, times)
    if len(totals) >= 2:
        above = wanted > totals[-1]
        if above.any():
            rise = max(0.0, (times[-1] - times[-2]) / (totals[-1] - totals[-2]))
            slope = min(rise, times[-1] / totals[-1])  # time per position never grows with batching
            out[above] = times[-1] + slope * (wanted[above] - totals[-1])
        below = wanted < totals[0]
        if below.any():
            slope = max(0.0, (times[1] - times[0]) / (totals[1] - totals[0]))
            extended = times[0] - slope * (totals[0] - wanted[below])
            out[below] = np.clip(extended, times[0] * wanted[below] / totals[0], times[0])
    return out


def median_step(value: float, sample: float, step: float, clip: bool) -> float:
    """One step of the multiplicative sign rule ``v <- v (1 + step sign(t - v))`` that tracks a
    median; with ``clip`` a step never passes the sample.  A cell's first steps are ``1/c`` (it
    settles within a few samples) and are clipped: unclipped, a second pass 8% faster than the
    first halved a cell of the target (21.2 -> 10.6 ms, truth 19.5; ``useless_middle`` seed 1),
    and the planner priced short verifies at 60% of their cost for 770 rounds.  Settled steps
    (``rate``) are not clipped: clipping them too measured no better (docs/policies.md)."""
    if sample > value:
        moved = value * (1.0 + step)
        return sample if clip and moved > sample else moved
    if sample < value:
        moved = value * (1.0 - step)
        return sample if clip and moved < sample else moved
    return value


def young_line(totals: np.ndarray, times: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A young curve (fewer than ``PRIOR_UNTIL_KNOWN`` known cells) as one straight line: the
    least-squares line through its cells, each weighted by its samples, its slope within
    ``[0, V/N]`` at their weighted mean (so it never reads negative), given as the two points
    at the ends of the measured range (:func:`read_curve` extends them).

    Piece by piece, a few cells of one or two samples each make segments that are mostly noise:
    on the real models at batch 4 (a 26-round job) the target's cells at 20 and 28 positions read
    14.9 and 14.2 ms where the passes take 11.0 and 12.5, so longer verifies looked free and the
    router settled on lookahead 5-7 where 3-4 is best.  The line pools them (docs/policies.md).
    """
    mean_total = float(np.average(totals, weights=samples))
    mean_time = float(np.average(times, weights=samples))
    spread = float(np.average((totals - mean_total) ** 2, weights=samples))
    if spread <= 0.0:
        return totals, times
    slope = float(np.average((totals - mean_total) * (times - mean_time), weights=samples)) / spread
    slope = min(max(slope, 0.0), mean_time / mean_total)
    ends = np.array([totals[0], totals[-1]])
    return ends, mean_time + slope * (ends - mean_total)


def width_bin(width: float) -> int:
    """Bin of a batch width for the per-sequence cost: exact up to 8, then 4 per octave."""
    if width <= 8.0:
        return int(width + 0.5)
    return min(8 + int(4.0 * math.log2(width / 8.0) + 0.5), WIDTH_BINS - 1)


def total_cell(total: int) -> int:
    """Cell of a pass feeding ``total`` positions over the whole batch."""
    if total <= EXACT_TOTALS:
        return total
    cell = EXACT_TOTALS + int(TOTAL_STEPS_PER_OCTAVE * math.log2(total / EXACT_TOTALS))
    return cell if cell < TOTAL_CELLS else TOTAL_CELLS - 1


class PassTimeProfile:
    """Per model, a robust online curve of pass time against the positions the batch feeds.

    A pass's time is governed by the positions the *whole batch* feeds, ``N = n b``
    (``n`` per sequence, ``b`` sequences): flat while streaming the weights dominates
    (memory-bound), then growing ~linearly in ``N`` (compute-bound).  So a pass is filed
    under ``N`` -- the positions the whole pass computed, as its world reports them
    (``PassTiming.positions``: padding included where the world pads) -- and one curve serves
    every (n, b) with the same product: verifying 5
    positions at batch 50 predicts plain decoding at batch 250, the comparison that
    decides whether speculation still pays under load.

    A cell tracks the *median* of its samples with a multiplicative sign step
    ``v <- v (1 + eta sign(t - v))``: in a shared continuous batch a pass that also
    carries another request's prefill takes many times longer than the positions this
    request fed suggest, and those heavy outliers must not drag the estimate (an EMA
    would).  The first samples of a cell take large steps (``eta_c = max(eta, 1/c)``),
    so a cell settles within a few samples and then follows slowdowns at rate ``eta``.
    Each cell also keeps the mean ``N`` of its samples, where the curve passes.  Passes
    in which the request fed more than ``max_positions`` (prefill and catch-up) are not
    routing costs and are skipped.

    A prediction ``V_m(n, b)`` interpolates linearly in ``N = n b`` between measured
    cells.  Above the last it extends the last segment's slope, clipped to
    ``[0, V/N]`` (time per position never grows with batching); below the first it
    extends the first segment's slope, clipped to ``[V N/N_0, V]`` (a pass never gets
    slower with fewer positions, nor cheaper per position); one measured cell reads flat.

    **Width as its own axis** (``width_cost=True``): on a CPU a pass costs the width more than
    the positions (attention and cache work per sequence: the demo's target, ``b = 4, n = 1``
    8.89 ms against ``b = 1, n = 4`` 6.93), and on a GPU each sequence's KV reads add to the
    weights' stream, so a cell of the ``N`` curve mixes passes whose cost differs with their
    width.  With the option the profile reads

        ``V_m(n, b) = f_m(N) + c_m (b - 1)``,  ``N = n b``,

    ``c_m >= 0`` one per-sequence cost per model and ``f_m`` the width-one curve: each cell's
    time less ``c_m (w - 1)``, ``w`` the mean width of the passes it filed (kept per cell like
    its mean ``N``), made non-decreasing in ``N``.  A pass is filed at its cell's mean width,
    ``t - c_m (b - w)``, so a change of ``c_m`` re-reads every cell at once.  ``c_m`` is fitted
    (:meth:`fit_sequence_cost`, every ``COST_REFIT`` passes of the model, when read) from cells
    of its own: one median per (positions the batch decodes, width bin), filed without the
    prefill term and with a quarter of the curve's step (``c_m`` is a difference of cells);
    within each positions cell that holds two or more known widths, the least-squares slope of
    time on width, pooled over the cells.  One number per model pools every cell where widths
    meet, so it is identified where a free factor per width was not (docs/policies.md); where
    widths never meet (a drafter feeding one position: ``N`` is the width) it stays 0 and the
    reading is the pooled curve's, as it is wherever ``c_m = 0``.
    """

    def __init__(
        self,
        ladder_size: int,
        rate: float = 0.05,
        params: Sequence[float] | None = None,
        max_positions: int = 64,
        width_cost: bool = False,
        follow_shifts: bool = False,
    ):
        if not 0.0 < rate < 1.0:
            raise ValueError(f"PassTimeProfile rate must be in (0, 1), got {rate}")
        if params is not None and len(params) != ladder_size:
            raise ValueError(f"ladder params has {len(params)} entries for {ladder_size} models")
        self.ladder_size = ladder_size
        self.rate = rate
        self.params = tuple(params) if params is not None else None
        self.max_positions = max_positions
        self._time = [[0.0] * TOTAL_CELLS for _ in range(ladder_size)]
        self._total = [[0.0] * TOTAL_CELLS for _ in range(ladder_size)]  # mean N of the cell's samples
        self._count = [[0] * TOTAL_CELLS for _ in range(ladder_size)]
        self._known = [0] * ladder_size  # cells with FRESH_SAMPLES or more (counts only grow)
        self._cells: list[list[int]] = [[] for _ in range(ladder_size)]  # measured cells, in order
        # Cells left behind follow the shift of the cells passes moved to (snapshot).
        self.follow_shifts = follow_shifts
        self.width_cost = width_cost
        self._width = [[1.0] * TOTAL_CELLS for _ in range(ladder_size)]  # mean width of the cell's samples
        # the per-sequence cost's cells (_learn_cost): positions cell * WIDTH_BINS + width bin ->
        # [median time, samples, mean N, mean width]; refitted every COST_REFIT passes
        self._cost_cells: list[dict[int, list[float]]] = [{} for _ in range(ladder_size)]
        self._cost_updates = [0] * ladder_size
        self.sequence_cost = [0.0] * ladder_size  # c_m, seconds per sequence in the batch
        self._prior_width: list[np.ndarray | None] = [None] * ladder_size
        self._snapshot = [[0.0] * TOTAL_CELLS for _ in range(ladder_size)]
        self._snapshot_count = [[0] * TOTAL_CELLS for _ in range(ladder_size)]
        self._prior: list[tuple[np.ndarray, np.ndarray] | None] = [None] * ladder_size  # seed()
        self.moved = False  # some settled cell left its snapshot by more than ``tolerance``
        self.fresh = False  # some cell became known (FRESH_SAMPLES) since the last snapshot
        self.tolerance = 0.2

    def update(
        self,
        model: int,
        tokens: int,
        batch_size: int,
        seconds: float,
        positions: int = 0,
        prefill_rate: float = 0.0,
    ) -> None:
        """Fold in one pass; prefill-sized, non-finite or negative samples are ignored.

        The pass is filed under ``N = positions`` (``PassTiming.positions``: what the whole pass
        computed, padding included where the world pads), or ``tokens * batch_size`` where the
        world does not say (0).  A ragged batch makes the difference: 3-level chains hand the
        target variable counts and a change of route mixes lookaheads for a round, and in a
        padded batch a row feeding 3 positions beside one feeding 7 costs 7.  (Before the worlds
        reported it, the total was guessed from an EMA of the model's feeds, which lagged every
        change of route.)  ``prefill_rate`` (prompt positions
        arriving per second) adds ``prefill_rate * seconds``: written when prompts rode in the
        decode passes.  The serving loop no longer mixes them (``policies.serving.same_kind``),
        but filing without the term measured worse (docs/policies.md, 2026-12-07: slowdown
        +4.2% +- 1.5, high_rate +2.7% +- 1.7 on 8 seeds): it files the passes of a busy period
        further up the curve, which prices the load the prefill passes put on the device.
        """
        if tokens > self.max_positions or not 0.0 <= seconds < math.inf:
            return
        total = positions if positions > 0 else tokens * max(batch_size, 1)
        if self.width_cost:
            self._learn_cost(model, total, batch_size if batch_size > 1 else 1, seconds)
        if prefill_rate > 0.0:
            total += int(prefill_rate * seconds + 0.5)
        cell = total if total <= EXACT_TOTALS else total_cell(total)
        counts = self._count[model]
        c = counts[cell] + 1
        counts[cell] = c
        times = self._time[model]
        value = times[cell]
        if self.width_cost:  # filed at the cell's mean width
            widths = self._width[model]
            spread = max(batch_size, 1) - widths[cell]
            if c == 1:
                widths[cell] += spread
            else:
                widths[cell] += spread * (self.rate if c * self.rate > 1.0 else 1.0 / c)
                seconds = max(seconds - self.sequence_cost[model] * spread, 0.0)
        if c == 1:
            times[cell] = value = seconds
            self._total[model][cell] = float(total)
            insort(self._cells[model], cell)
        else:
            step = self.rate if c * self.rate > 1.0 else 1.0 / c
            value = median_step(value, seconds, step, c * self.rate <= 1.0)
            times[cell] = value
            if cell > EXACT_TOTALS:
                totals = self._total[model]
                totals[cell] += (total - totals[cell]) * step
            if c == FRESH_SAMPLES:
                self.fresh = True
                self._known[model] += 1
        if not self.moved and c * self.rate > 1.0:  # a settled cell left its snapshot
            reference = self._snapshot[model][cell]
            if abs(value - reference) > self.tolerance * reference:
                self.moved = True

    def _learn_cost(self, model: int, total: int, width: int, seconds: float) -> None:
        """File one pass in the per-sequence cost's own cells: one per (positions the batch
        decodes, width), without the prefill term of :meth:`update` (it grows with the
        pass's time and so with its width); each a median like the curve's cells."""
        cell = total if total <= EXACT_TOTALS else total_cell(total)
        key = cell * WIDTH_BINS + (width if width <= 8 else width_bin(width))
        cells = self._cost_cells[model]
        entry = cells.get(key)
        if entry is None:
            cells[key] = [seconds, 1.0, float(total), float(width)]
            return
        count = entry[1] + 1.0
        entry[1] = count
        rate = COST_RATE_SHARE * self.rate  # c is a difference of cells: steadier medians
        step = rate if count * rate > 1.0 else 1.0 / count
        entry[0] = median_step(entry[0], seconds, step, count * rate <= 1.0)
        entry[2] += (total - entry[2]) * step
        entry[3] += (width - entry[3]) * step
        self._cost_updates[model] += 1

    def fit_sequence_cost(self, model: int) -> float:
        """``c_m`` from the cost cells: the least-squares slope of time on width within each
        positions cell that holds two or more known widths, pooled over the cells (each width
        cell weighs its samples, at most 64; above the exact cells the times are first moved
        to the cell's mean ``N`` along the curve's local slope), at least 0 and at most the
        cheapest known pass time per sequence.  Kept (and returned) unchanged where no
        positions cell holds two widths."""
        self._cost_updates[model] = 0
        by_cell: dict[int, list[list[float]]] = {}
        for key, entry in self._cost_cells[model].items():
            if entry[1] >= FRESH_SAMPLES:
                by_cell.setdefault(key // WIDTH_BINS, []).append(entry)
        moment = spread = 0.0
        curve: tuple[np.ndarray, np.ndarray] | None = None
        for cell, entries in by_cell.items():
            if len(entries) < 2:
                continue
            data = np.array(entries)
            weight = np.minimum(data[:, 1], 64.0)
            times, totals, widths = data[:, 0], data[:, 2], data[:, 3]
            if cell > EXACT_TOTALS:
                if curve is None:
                    curve = self._raw_points(model)
                if curve is not None and len(curve[0]) >= 2:
                    mean_total = float(np.average(totals, weights=weight))
                    around = np.array([mean_total / 1.05, mean_total * 1.05])
                    rise = read_curve(curve[0], curve[1], around)
                    slope = max(0.0, float(rise[1] - rise[0]) / float(around[1] - around[0]))
                    times = times - slope * (totals - mean_total)
            mean_width = float(np.average(widths, weights=weight))
            mean_time = float(np.average(times, weights=weight))
            moment += float(np.sum(weight * (widths - mean_width) * (times - mean_time)))
            spread += float(np.sum(weight * (widths - mean_width) ** 2))
        if spread > 0.0:
            cheapest = min(entry[0] / entry[3] for entries in by_cell.values() for entry in entries)
            self.sequence_cost[model] = min(max(moment / spread, 0.0), cheapest)
        return self.sequence_cost[model]

    def _raw_points(self, model: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The measured cells alone (no prior, no move to width one), ``V`` made non-decreasing;
        ``None`` below two cells."""
        cells, totals, times = self._measured(model)
        if len(cells) < 2:
            return None
        return totals, np.maximum.accumulate(times)

    def _measured(self, model: int) -> tuple[list[int], np.ndarray, np.ndarray]:
        """The model's measured cells in order of ``N`` (cells are ranges of ``N``), their mean
        ``N`` and their median times."""
        cells = self._cells[model]
        cell_totals, cell_times = self._total[model], self._time[model]
        return cells, np.array([cell_totals[c] for c in cells]), np.array([cell_times[c] for c in cells])

    def seed(
        self, model: int, points: Sequence[tuple[float, float]], widths: Sequence[float] | None = None
    ) -> None:
        """A prior curve for ``model``: ``(N, seconds)`` points from a profile (a warm start).

        The prior fills the cells real passes have not reached, *scaled* by the median ratio
        of the model's measured cells to the prior read at their ``N``: a profile taken
        outside the serving loop misses the loop's own costs, and unscaled prior cells would
        make every configuration not yet run look cheaper than the ones that were.  Once
        ``PRIOR_UNTIL_KNOWN`` of the model's cells are known (``FRESH_SAMPLES`` passes each) the
        prior is dropped: the loop's costs are not a uniform factor (0.7-1.3x the profile across
        ``N`` in the demo's world), and kept prior cells steered a long run onto routes its own
        measurements did not support (demo world, 3 seeds: TPOT 7.46 ms kept, 7.28 dropped).
        """
        mean_widths = [1.0] * len(points) if widths is None else list(widths)
        if len(mean_widths) != len(points):
            raise ValueError(f"seed: {len(mean_widths)} widths for {len(points)} points")
        kept = sorted((t, v, w) for (t, v), w in zip(points, mean_widths) if t >= 1.0 and 0.0 < v < math.inf)
        if kept:
            totals = np.array([t for t, _, _ in kept])
            times = np.array([v for _, v, _ in kept])
            # with the width axis the times are made non-decreasing at width one (points)
            self._prior[model] = (totals, times if self.width_cost else np.maximum.accumulate(times))
            self._prior_width[model] = np.array([max(w, 1.0) for _, _, w in kept])

    def snapshot(self) -> None:
        """Remember the current estimates; :attr:`moved` reports departures from them.  With
        ``follow_shifts``, first carry the cells no pass reached since the last snapshot along
        with the shift of those that were (:meth:`follow_shift`)."""
        if self.follow_shifts:
            for model in range(self.ladder_size):
                self.follow_shift(model)
        self._snapshot = [list(row) for row in self._time]
        self._snapshot_count = [list(row) for row in self._count]
        self.moved = False
        self.fresh = False

    def follow_shift(self, model: int) -> float:
        """Scale the model's cells that no pass was filed in since the last snapshot by the median
        ratio, now to then, of its settled cells that passes were filed in; returns that ratio
        (1.0 when it is within ``SHIFT_FOLLOWED`` of 1, and nothing is scaled).

        A device that slows down slows every pass, but a cell only moves when a pass is filed in
        it, and with the prefill term (``prefill_rate * seconds``) slower passes are filed further
        up the curve: under ``slowdown``'s 4x episode the target's passes leave the cells near
        ``N = 30`` for those near 200, and the cells left behind read 23 ms where every pass takes
        ~80 (seed 0, t = 2,861 s), so a short verify looks 2-3x cheaper than a long one and the
        planner shortens speculation when it should deepen.  The cells that were reached say how
        far the device moved; the others are moved as far."""
        counts, times = self._count[model], self._time[model]
        before, seen = self._snapshot[model], self._snapshot_count[model]
        ratios = [
            times[c] / before[c]
            for c in range(TOTAL_CELLS)
            if counts[c] > seen[c] and seen[c] * self.rate > 1.0 and before[c] > 0.0
        ]
        if not ratios:
            return 1.0
        shift = float(np.median(ratios))
        if abs(shift - 1.0) <= SHIFT_FOLLOWED:
            return 1.0
        for c in range(TOTAL_CELLS):
            if counts[c] and counts[c] == seen[c]:
                times[c] *= shift
        return shift

    def known_span(self, model: int) -> tuple[float, float] | None:
        """The range of ``N`` where the model's curve interpolates -- from its smallest to its
        largest measured cell (everywhere while a prior is kept) -- rather than extrapolates;
        ``None`` if nothing was measured (its reads are scaled from another model's)."""
        if self._prior[model] is not None:
            return 0.0, math.inf
        cells = self._cells[model]
        if not cells:
            return None
        totals = self._total[model]
        return totals[cells[0]], totals[cells[-1]]

    def measured(self, model: int) -> bool:
        return any(self._count[model]) or self._prior[model] is not None

    def points(self, model: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Measured ``(N, V)`` of a model (and the scaled prior where nothing was measured:
        :meth:`seed`), sorted by ``N``, ``V`` made non-decreasing (with ``width_cost`` the
        width-one curve ``f_m``); ``None`` if none."""
        cells, totals, times = self._measured(model)
        prior = self._prior[model]
        if not cells and prior is None:
            return None
        width_cost = self.width_cost
        if width_cost and self._cost_updates[model] >= COST_REFIT:
            self.fit_sequence_cost(model)
        widths = np.array([self._width[model][c] for c in cells]) if width_cost else None
        counts = self._count[model]
        young = self._known[model] < PRIOR_UNTIL_KNOWN  # a prior kept, or a line
        if prior is not None and young:
            prior_totals, prior_times = prior
            scale = float(np.median(times / read_curve(prior_totals, prior_times, totals))) if cells else 1.0
            measured_cells = set(cells)
            fill = [total_cell(int(t + 0.5)) not in measured_cells for t in prior_totals]
            totals = np.concatenate([totals, prior_totals[fill]])
            times = np.concatenate([times, scale * prior_times[fill]])
            if widths is not None:
                prior_widths = self._prior_width[model]
                fill_widths = prior_widths[fill] if prior_widths is not None else np.ones(int(sum(fill)))
                widths = np.concatenate([widths, fill_widths])
            order = np.argsort(totals, kind="stable")
            totals, times = totals[order], times[order]
            widths = widths[order] if widths is not None else None
        if widths is not None:  # the width-one curve f_m: every cell moved to width one
            times = np.maximum(times - self.sequence_cost[model] * (widths - 1.0), 0.0)
        times = np.maximum.accumulate(times)  # never cheaper with more positions
        if prior is None and young and len(cells) >= 2:
            return young_line(totals, times, np.array([counts[c] for c in cells], dtype=float))
        return totals, times

    def _read(
        self,
        model: int,
        points: tuple[np.ndarray, np.ndarray],
        wanted: np.ndarray,
        width: np.ndarray,
    ) -> np.ndarray:
        """``V`` at ``wanted`` total positions in batches of ``width`` (broadcast): the curve,
        plus (``width_cost``) the per-sequence cost of the sequences beyond the first."""
        seconds = read_curve(points[0], points[1], wanted)
        if self.width_cost:
            seconds = seconds + self.sequence_cost[model] * (width - 1.0)
        return seconds

    def curve(self, model: int, batch_size: float, columns: int) -> np.ndarray | None:
        """``V_m(n, b)`` for ``n = 0 .. columns-1`` (``n = 0`` reads as 1); ``None`` if unmeasured."""
        points = self.points(model)
        if points is None:
            return None
        width = max(batch_size, 1.0)
        wanted = np.maximum(np.arange(columns, dtype=float), 1.0) * width
        return self._read(model, points, wanted, np.full(columns, width))

    def cube(self, widths: np.ndarray, columns: int, prefill_rate: float = 0.0) -> np.ndarray:
        """``(K, len(widths), columns)`` pass times at every width and positions per sequence
        (the planner's ``PassCube``); unmeasured models scaled from the largest measured.

        With a ``prefill_rate`` a pass also carries the prompts that arrived while the last
        one ran: ``V = curve(w n + rate V)``, solved by a few fixed-point steps (the map is
        a contraction while prefill takes less than the whole device).
        """
        k = self.ladder_size
        positions = np.maximum(np.arange(columns, dtype=float), 1.0)
        wanted = widths[:, None] * positions[None, :]
        out = np.zeros((k, len(widths), columns))
        known: list[int] = []
        width = np.broadcast_to(widths[:, None], wanted.shape)
        for model in range(k):
            points = self.points(model)
            if points is not None:
                seconds = self._read(model, points, wanted, width)
                for _ in range(3 if prefill_rate > 0.0 else 0):
                    seconds = self._read(model, points, wanted + prefill_rate * seconds, width)
                out[model] = seconds
                known.append(model)
        if len(known) < k:
            reference = out[known[-1]] if known else np.ones((len(widths), columns))
            ref_model = known[-1] if known else k - 1
            for model in range(k):
                if model not in known:
                    out[model] = reference * self._prior_ratio(model, ref_model)
        return out

    def table(self, batch_sizes: Sequence[float], columns: int) -> np.ndarray:
        """``(K, columns)`` table of ``V_m(n)`` at the given batch sizes (column = positions)."""
        k = self.ladder_size
        out = np.zeros((k, columns))
        known: list[int] = []
        for model in range(k):
            batch = float(batch_sizes[model]) if model < len(batch_sizes) else 1.0
            curve = self.curve(model, batch, columns)
            if curve is not None:
                out[model] = curve
                known.append(model)
        if len(known) < k:
            reference = out[known[-1]] if known else np.ones(columns)
            ref_model = known[-1] if known else k - 1
            for model in range(k):
                if model not in known:
                    out[model] = reference * self._prior_ratio(model, ref_model)
        return out

    def _prior_ratio(self, model: int, reference: int) -> float:
        if self.params is not None and self.params[reference] > 0:
            return max(self.params[model] / self.params[reference], 1e-3)
        return UNMEASURED_FRACTION if model < reference else 1.0 / UNMEASURED_FRACTION


class PairStats:
    """Similarity and acceptance statistics of every ordered pair of one ladder (one domain).

    ``rate`` is the forgetting per observed round: discounted counts reach a steady
    effective size of about ``1 / rate`` rounds' worth of samples.
    """

    def __init__(self, ladder_size: int, rate: float = 0.02):
        if not 0.0 < rate < 1.0:
            raise ValueError(f"PairStats rate must be in (0, 1), got {rate}")
        size = ladder_size * ladder_size
        self.ladder_size = ladder_size
        self.rate = rate
        self.keep = 1.0 - rate
        self.similarity = [0.0] * size  # EMA of 1 - TV
        self.similarity_weight = [0.0] * size  # discounted TV sample count
        self.accepted = [0.0] * size  # discounted accepted tokens (single-verify levels)
        self.trials = [0.0] * size  # discounted acceptance trials (single-verify levels)
        # Levels that verified several times in a round: accepted, verifies, candidates.
        self.pooled = [[0.0, 0.0, 0.0] for _ in range(size)]
        # the last moments solved per pair and their solution (acceptance(): a re-plan asks
        # every pair, and a pair the route does not verify asks the same again)
        self._solved: list[tuple[tuple[float, float], float] | None] = [None] * size
        self.last_seen = [-1] * size  # round index of the last update of either statistic
        self.rounds = 0

    def add_tvs(self, tvs: Iterable[tuple[int, int, Sequence[float]]]) -> None:
        """Fold in one round's TV samples, ``(lower, upper, values)`` per pair: the pair's
        similarity is the count-weighted EMA of ``1 - mean TV``; an empty, NaN or out-of-range
        sample is rejected.  (Every learned round folds them: folding 1 in 4 with 4x the weight
        measured worse, docs/policies.md.)"""
        size = self.ladder_size
        keep = self.keep
        similarity = self.similarity
        weights = self.similarity_weight
        seen = self.last_seen
        rounds = self.rounds
        for lower, upper, values in tvs:
            n = len(values)
            if n == 0:
                continue
            mean_tv = sum(values) / n
            if not 0.0 <= mean_tv <= 1.0:
                continue
            key = lower * size + upper
            weight = weights[key] * keep + n
            before = similarity[key]
            similarity[key] = before + (n / weight) * ((1.0 - mean_tv) - before)
            weights[key] = weight
            seen[key] = rounds

    def seed_acceptance(self, lower: int, upper: int, alpha: float, trials: float) -> None:
        """Start the pair at a prior acceptance worth ``trials`` trials (a warm start from a
        profile); it ages like an observation made now."""
        key = lower * self.ladder_size + upper
        self.accepted[key] = min(max(alpha, 0.0), 1.0) * trials
        self.trials[key] = trials
        self.last_seen[key] = self.rounds

    def add_acceptance(self, lower: int, upper: int, proposed: int, accepted: int, emitted: int) -> int:
        """Fold in one level's counts of a round; returns its acceptance trials.

        Every verify emits its accepted prefix plus one token, so ``emitted - accepted`` is
        the number of verifies, each stopping at its first rejection unless it accepted all
        of its candidates: the trials are exact (``accepted`` plus one rejection unless all
        were accepted) for a single verify; a level that verified several times goes to the
        pooled method-of-moments sums.
        """
        key = lower * self.ladder_size + upper
        keep = self.keep
        verifies = emitted - accepted
        self.last_seen[key] = self.rounds
        if verifies <= 1 or accepted >= proposed:
            trials = accepted + (accepted < proposed)
            self.accepted[key] = self.accepted[key] * keep + accepted
            self.trials[key] = self.trials[key] * keep + trials
            return trials
        pooled = self.pooled[key]
        pooled[0] = pooled[0] * keep + accepted
        pooled[1] = pooled[1] * keep + verifies
        pooled[2] = pooled[2] * keep + proposed
        return accepted + min(verifies, proposed - accepted)

    def acceptance(self, lower: int, upper: int) -> tuple[float, float]:
        """Observed acceptance of the pair and its weight in trials (``(0, 0)`` if none).

        Single-verify levels give the censored-geometric MLE ``accepted / trials``.
        Levels that verified ``v`` times in a round only tell the total accepted; with
        ``n`` candidates per verify the mean accepted per verify is
        ``m(a) = a (1 - a^n) / (1 - a)``, increasing in ``a``, solved by bisection (method of
        moments, weight ``accepted + verifies``).
        """
        key = lower * self.ladder_size + upper
        trials = self.trials[key]
        total = self.accepted[key]
        weight = trials
        pooled_accepted, verifies, candidates = self.pooled[key]
        if verifies > 0:
            moments = (pooled_accepted / verifies, candidates / verifies)
            solved = self._solved[key]
            if solved is None or solved[0] != moments:  # the pairs a route skips keep their sums
                solved = self._solved[key] = (moments, _solve_truncated_geometric(*moments))
            estimate = solved[1]
            pooled_weight = pooled_accepted + verifies
            total += estimate * pooled_weight
            weight += pooled_weight
        return (total / weight, weight) if weight > 0 else (0.0, 0.0)

    def staleness(self, lower: int, upper: int) -> int:
        """Rounds since the pair was last observed (``rounds + 1`` if never)."""
        seen = self.last_seen[lower * self.ladder_size + upper]
        return self.rounds - seen if seen >= 0 else self.rounds + 1


def _solve_truncated_geometric(mean_accepted: float, candidates: float) -> float:
    """``a`` with ``a (1 - a^n) / (1 - a) = mean_accepted`` (clipped to ``[0, 1]``)."""
    if candidates <= 0 or mean_accepted <= 0:
        return 0.0
    if mean_accepted >= candidates:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(24):  # 2^-24: far below the estimate's own noise
        mid = 0.5 * (low + high)
        value = mid * (1.0 - mid**candidates) / (1.0 - mid)
        if value < mean_accepted:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def round_acceptance(level: LevelFeedbackLike, trials: int) -> float:
    """One round's acceptance estimate of a level, for fitting ``f``.

    A single verify gives the exact ``accepted / trials``.  A level that verified ``v``
    times only bounds its trials from above (``accepted / trials`` reads too low), so it
    is solved by the method of moments of :meth:`PairStats.acceptance` on this round.
    """
    verifies = level.emitted - level.accepted
    if verifies <= 1 or level.accepted >= level.proposed:
        return level.accepted / trials
    return _solve_truncated_geometric(level.accepted / verifies, level.proposed / verifies)


class _FitSums:
    """Discounted sums of the fitted map's weighted least squares (weight ``w``, similarity
    ``s``, acceptance ``y``)."""

    __slots__ = ("w", "ws", "wy", "wss", "wsy")

    def __init__(self) -> None:
        self.w = 0.0  # sum w
        self.ws = 0.0  # sum w s
        self.wy = 0.0  # sum w y
        self.wss = 0.0  # sum w s^2
        self.wsy = 0.0  # sum w s y


class AcceptanceMap:
    """``f``: similarity -> acceptance.  ``mode`` is ``"sampling"`` (identity) or ``"fitted"``.

    The fitted map minimises ``sum_i w_i (y_i - a - b s_i)^2 + ridge ((a)^2 + (b - 1)^2)``
    over discounted samples (similarity ``s_i``, observed acceptance ``y_i``, weight =
    acceptance trials); with little or one-pair data it stays close to the identity.
    """

    def __init__(self, mode: str = "fitted", ridge: float = 20.0, rate: float = 0.002):
        if mode not in ("sampling", "fitted"):
            raise ValueError(f"AcceptanceMap mode must be 'sampling' or 'fitted', got {mode!r}")
        self.mode = mode
        self.ridge = ridge
        self.keep = 1.0 - rate
        self._sums = _FitSums()
        self.intercept, self.slope = 0.0, 1.0

    def add(self, similarity: float, acceptance: float, weight: float) -> None:
        if self.mode == "sampling" or weight <= 0:
            return
        k = self.keep
        s = self._sums
        ws = weight * similarity
        s.w = s.w * k + weight
        s.ws = s.ws * k + ws
        s.wy = s.wy * k + weight * acceptance
        s.wss = s.wss * k + ws * similarity
        s.wsy = s.wsy * k + ws * acceptance

    def refit(self) -> None:
        """Solve the ridge normal equations (done at re-plan time, not per round)."""
        if self.mode == "sampling":
            return
        sums = self._sums
        w, ws, wy, wss, wsy = sums.w, sums.ws, sums.wy, sums.wss, sums.wsy
        lam = self.ridge
        matrix = np.array([[w + lam, ws], [ws, wss + lam]])
        rhs = np.array([wy, wsy + lam])
        intercept, slope = np.linalg.solve(matrix, rhs)
        self.intercept, self.slope = float(intercept), float(slope)

    def __call__(self, similarity: float) -> float:
        value = self.intercept + self.slope * similarity
        return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


HIDDEN_MEAN_RATE = 0.05  # ChainOverhead.hidden_share: the horizon of the means it regresses about


class ChainOverhead:
    """Per chain, the wall time a round spends waiting beyond its passes.

    Between its passes a request waits: in queues, for batch formation, for a GPU that
    another model of the chain shares.  Waits happen per visit to a server -- per round,
    not per token -- so a round that commits more tokens amortises them, which is why
    speculation pays more, not less, when queues are long.  Each chain keeps discounted
    sums of the excess ``e = latency - pass seconds`` and of its sampled rounds ``n``; its
    wait per round shrinks ``E/n`` towards the pooled wait of all chains (current
    conditions) with ``prior`` rounds of weight, and the chain's own weight decays by
    ``stale_keep`` per sample since it was last used -- waits measured under a past
    overload must not haunt a chain forever::

        w = n * stale_keep^staleness,   wait = (w E/n + prior pooled) / (w + prior)

    **Drafting hidden in the wait** (:meth:`hidden_share`): a request that drafts longer reaches
    the target later, and a busy target's next pass starts when it starts, so it waits less.
    The share is read from the rounds: minus the slope of a round's excess on its drafting
    seconds, each taken against its short-horizon mean (rate ``HIDDEN_MEAN_RATE``), so that a
    load swing, which moves both, counts little.  It is an attenuated estimate, not a
    measurement: the means follow a swing with a lag, and on a test world with a slow swing and
    a true share of 1 it reads ~0.5; in the simulator it reads near 1 during prefill bursts (the
    wait many times the target pass) and near 0 in calm periods, which is when drafting does and
    does not hide (docs/policies.md, "Drafting hidden in the wait at the target").

    The planner adds a chain's wait to the latency of every round of it.  ``per_chain=False``
    gives every chain the pooled wait: the target's queue, most of a round's wait, is common to
    every chain, and a chain's own wait is confounded by *when* it ran (learned in a past
    overload, it keeps a chain out long after the queue cleared).
    """

    def __init__(
        self, rate: float = 0.01, prior: float = 5.0, stale_keep: float = 0.995, per_chain: bool = True
    ):
        self.keep = 1.0 - rate
        self.prior = prior
        self.stale_keep = stale_keep
        self.per_chain = per_chain
        self.sums: dict[tuple[int, ...], list[float]] = {}  # chain -> [excess, rounds, last sample]
        self.pooled = [0.0, 0.0]
        self.target_seconds = 0.0  # discounted like pooled[1]: the rounds' target pass seconds
        self.draft_seconds = 0.0  # likewise: the rounds' other passes (drafting)
        self.samples = 0
        # hidden_share's regression: short-horizon means, discounted co-moments about them
        self._draft_mean = self._excess_mean = 0.0
        self._draft_excess = self._draft_square = 0.0

    def add(self, chain: tuple[int, ...], latency: float, passes: float, target: float = 0.0) -> None:
        """One round: its wall time, the seconds of all its passes and of its target passes."""
        excess = latency - passes
        if not (0.0 <= passes < math.inf and 0.0 <= excess < math.inf):
            return
        keep = self.keep
        self.target_seconds = self.target_seconds * keep + target
        drafting = passes - target
        self.draft_seconds = self.draft_seconds * keep + drafting
        if not self.samples:
            self._draft_mean, self._excess_mean = drafting, excess
        off_draft, off_excess = drafting - self._draft_mean, excess - self._excess_mean
        self._draft_excess = self._draft_excess * keep + off_draft * off_excess
        self._draft_square = self._draft_square * keep + off_draft * off_draft
        self._draft_mean += HIDDEN_MEAN_RATE * off_draft
        self._excess_mean += HIDDEN_MEAN_RATE * off_excess
        self.samples += 1
        sums = self.sums.get(chain)
        if sums is None:
            sums = self.sums[chain] = [0.0, 0.0, 0.0]
        sums[0] = sums[0] * keep + excess
        sums[1] = sums[1] * keep + 1.0
        sums[2] = self.samples
        self.pooled[0] = self.pooled[0] * keep + excess
        self.pooled[1] = self.pooled[1] * keep + 1.0

    def target_factor(self) -> float:
        """Pooled seconds of waiting per second of target pass (``chain_waits="target"``)."""
        return self.pooled[0] / self.target_seconds if self.target_seconds > 0 else 0.0

    def draft_factor(self) -> float:
        """Pooled seconds of drafting per second of target pass (``d`` of ``planner.TargetWait``)."""
        return self.draft_seconds / self.target_seconds if self.target_seconds > 0 else 0.0

    def hidden_share(self) -> float:
        """The share of a round's drafting that hides in its wait (``h`` of
        ``planner.TargetWait``): minus the slope of the excess on the drafting seconds about
        their short-horizon means, in ``[0, 1]`` (class docstring)."""
        if self._draft_square <= 0.0:
            return 0.0
        return min(max(-self._draft_excess / self._draft_square, 0.0), 1.0)

    def wait(self, chain: tuple[int, ...]) -> float:
        """Expected waiting seconds per round of ``chain``."""
        pooled = self.pooled[0] / self.pooled[1] if self.pooled[1] > 0 else 0.0
        sums = self.sums.get(chain) if self.per_chain else None
        if sums is None or sums[1] <= 0:
            return pooled
        weight = sums[1] * self.stale_keep ** (self.samples - sums[2])
        return (weight * sums[0] / sums[1] + self.prior * pooled) / (weight + self.prior)


class QueueReach:
    """How soon the target takes a round's verify, by the target's queue when the round starts.

    Per bucket of the calls pending on the target at routing (0, 1, 2-3, 4-7, 8+), a ring of
    the last ``size`` rounds' ``rho = (D + W) / P_T``: the seconds from the round's start until
    its target pass began (its drafting ``D`` plus its wait ``W``) per second of its target
    pass.  A row drafting ``P_D`` with target pass ``P_T`` then waits ``max(0, rho P_T - P_D)``
    (``planner.TargetWait.reach``): drafting hides in a busy target's queue.
    """

    BUCKETS = 5

    def __init__(self, size: int = 32):
        self.size = size
        self.rings: list[list[float]] = [[] for _ in range(self.BUCKETS)]
        self.next = [0] * self.BUCKETS

    @staticmethod
    def bucket(queue: int) -> int:
        """Calls queued at the target -> bucket: 0, 1, 2-3, 4-7, 8+ -> 0 .. 4."""
        return min(queue.bit_length(), QueueReach.BUCKETS - 1)

    def add(self, bucket: int, drafting: float, wait: float, target: float) -> None:
        """One round's seconds of passes below the target, of waiting, and of target passes (a
        round without a target pass or with a negative time is no measurement)."""
        if not (target > 0.0 and drafting >= 0.0 and wait >= 0.0):
            return
        rho = (drafting + wait) / target
        ring = self.rings[bucket]
        if len(ring) < self.size:
            ring.append(rho)
        else:
            ring[self.next[bucket]] = rho
            self.next[bucket] = (self.next[bucket] + 1) % self.size

    def samples(self, bucket: int, least: int = 8) -> np.ndarray | None:
        """The bucket's ``rho`` samples, or ``None`` while it holds fewer than ``least``."""
        ring = self.rings[bucket]
        return np.array(ring) if len(ring) >= least else None


WIDTH_BIN = [0] + [
    min(int(WIDTH_STEPS_PER_OCTAVE * math.log2(b) + 0.5), len(WIDTH_GRID) - 1) for b in range(1, 1025)
]  # batch width -> its WIDTH_GRID bin
WIDTH_SHARE_FLOOR = 0.01  # bins with fewer of a model's passes are left out of its spread


class LoadTracker:
    """What the system objective needs to know about the load, from views and feedback.

    * ``R``, requests in flight: those that finished a round and are not done (exact in
      both worlds; summing the views' per-model batch sizes would count a lock-step
      batch once per model), as an EMA; requests silent for many rounds are dropped.
    * ``Lambda``, committed tokens per second over all requests, and the prompt
      positions arriving per second (prefills), as discounted ratios of sums.
    * per model the width of its passes (EMA of what was experienced, from
      ``PassTiming.batch_size`` or the views; its first passes averaged, so a batch wide from
      the start reads wide at once) and the widest seen (its cap, as far as seen),
      and how the widths spread around their mean (:meth:`width_spread`: counts per width bin,
      halved every 4,096 rounds).
    """

    def __init__(self, ladder_size: int, rate: float = 0.05, count_widths: bool = False):
        self.rate = rate
        self.count_widths = count_widths  # keep the width histogram of width_spread()
        self.widths = [1.0] * ladder_size
        self._passes_seen = [0] * ladder_size
        self.widest = [1] * ladder_size
        self._width_counts = [[0.0] * len(WIDTH_GRID) for _ in range(ladder_size)]
        self._width_sums = [[0.0] * len(WIDTH_GRID) for _ in range(ladder_size)]
        self.in_flight = 1.0
        self._in_flight_looks = 0  # as the widths: steps 1/n at first
        self.most_in_flight = 1
        self.waiting = 0  # requests waiting for admission when the latest one was admitted
        self.live: dict[int, int] = {}  # request -> round count at its last finished round
        self.rounds = 0
        self._committed = 0
        self.committed_total = 0
        self._prompts = 0
        self._budgets = 0
        self._clock = 0.0
        self._token_sum = 0.0  # discounted committed tokens,
        self._second_sum = 0.0  # seconds,
        self._prompt_sum = 0.0  # prompt positions
        self._budget_sum = 0.0  # and output budgets (max_new_tokens) of the admitted requests
        self._work_left: int | None = None  # RouteView.work_left at the latest admission that knew it
        self._work_mark = 0  # committed_total then

    def see_view(self, view: RouteView) -> None:
        """A round starts: a new request's prompt will be prefilled, with ``view.waiting``
        requests still waiting for a slot (the admission queue when it was admitted), and
        ``view.work_left`` tokens still to generate if the workload's input is closed."""
        if not view.generated_tokens:
            self._prompts += view.prompt_tokens
            self._budgets += view.max_new_tokens
            self.waiting = view.waiting
            if view.work_left is not None:
                self._work_left, self._work_mark = view.work_left, self.committed_total

    @property
    def work_left(self) -> float:
        """Tokens the workload still asks for (``inf`` while its input is open): the latest
        ``RouteView.work_left`` seen, less what was committed since."""
        if self._work_left is None:
            return math.inf
        return max(self._work_left - (self.committed_total - self._work_mark), 0)

    def see_pass(self, model: int, batch_size: int) -> None:
        # the first passes take steps 1/n (the mean so far), then the EMA's rate: a width that
        # started at 1 would take ~1/rate passes to reach a batch that was wide from the start
        seen = self._passes_seen[model] = self._passes_seen[model] + 1
        self.widths[model] += (self.rate if seen * self.rate > 1.0 else 1.0 / seen) * (
            batch_size - self.widths[model]
        )
        if batch_size > self.widest[model]:
            self.widest[model] = batch_size
        if not self.count_widths:
            return
        cell = WIDTH_BIN[batch_size if batch_size < 1024 else 1024]
        self._width_counts[model][cell] += 1.0
        self._width_sums[model][cell] += batch_size

    def width_spread(self) -> WidthSpread | None:
        """Per model the passes' widths relative to their mean, by bin (``None`` while every
        model's passes all fall in one bin -- then the mean width is the width -- or when the
        tracker does not ``count_widths``)."""
        rows = []
        for counts, sums in zip(self._width_counts, self._width_sums):
            total = sum(counts)
            kept = [c for c in range(len(counts)) if total and counts[c] >= WIDTH_SHARE_FLOOR * total]
            rows.append((kept, counts, sums))
        widest = max(len(kept) for kept, _, _ in rows)
        if widest <= 1:
            return None
        factors = np.ones((len(rows), widest))
        weights = np.zeros((len(rows), widest))
        weights[:, 0] = 1.0  # a model with no passes reads at the width asked for
        for m, (kept, counts, sums) in enumerate(rows):
            if not kept:
                continue
            share = np.array([counts[c] for c in kept])
            width = np.array([sums[c] / counts[c] for c in kept])
            share /= share.sum()
            weights[m, :] = 0.0
            weights[m, : len(kept)] = share
            factors[m, : len(kept)] = width / float(share @ width)
        return WidthSpread(factors, weights)

    def see_round(self, feedback: RoundFeedback) -> None:
        """A round finished: requests in flight, committed tokens, every 8th round the rates."""
        rounds = self.rounds = self.rounds + 1
        if feedback.request_done:
            self.live.pop(feedback.request_id, None)
        else:
            self.live[feedback.request_id] = rounds
        emitted = feedback.levels[-1].emitted
        self._committed += emitted
        self.committed_total += emitted
        if rounds & 7:
            return
        if not rounds & 4095:  # a live request finishes a round about once per R rounds
            if self.count_widths:
                for counts, sums in zip(self._width_counts, self._width_sums):
                    counts[:] = [c * 0.5 for c in counts]
                    sums[:] = [t * 0.5 for t in sums]
            horizon = max(4096, 8 * len(self.live))
            self.live = {rid: seen for rid, seen in self.live.items() if rounds - seen <= horizon}
        live = len(self.live)
        looks = self._in_flight_looks = self._in_flight_looks + 1
        self.in_flight += (self.rate if looks * self.rate > 1.0 else 1.0 / looks) * (live - self.in_flight)
        self.most_in_flight = max(self.most_in_flight, live)
        elapsed = feedback.finished - self._clock
        if elapsed > 0:
            keep = 1.0 - self.rate
            self._token_sum = keep * self._token_sum + self._committed
            self._second_sum = keep * self._second_sum + elapsed
            self._prompt_sum = keep * self._prompt_sum + self._prompts
            self._budget_sum = keep * self._budget_sum + self._budgets
            self._committed = self._prompts = self._budgets = 0
            self._clock = feedback.finished

    @property
    def token_rate(self) -> float:
        return self._token_sum / self._second_sum if self._second_sum > 0 else 0.0

    @property
    def prefill_rate(self) -> float:
        return self._prompt_sum / self._second_sum if self._second_sum > 0 else 0.0

    @property
    def offered_rate(self) -> float:
        """Output tokens per second the admitted requests ask for (their ``max_new_tokens``):
        the demand, which leads the committed rate while arrivals ramp up."""
        return self._budget_sum / self._second_sum if self._second_sum > 0 else 0.0

    @property
    def demand_lead(self) -> float:
        """``g``: the offered over the committed token rate (1 until something is committed)."""
        token_rate = self.token_rate
        return self.offered_rate / token_rate if token_rate > 0 else 1.0

    def system_load(
        self, iterations: int, devices: tuple[int, ...] | None = None, offered: bool = False
    ) -> SystemLoad:
        """The :class:`SystemLoad` the planner prices routes in (widths from the experienced
        ones, at least the target's: a model a chain starts using joins batches as wide), on
        the ladder's ``devices`` (``LadderInfo.devices``)."""
        floor = self.widths[-1]
        widths = tuple(max(b, floor, 1.0) for b in self.widths)
        caps = (float(max(self.widest)),) * len(self.widest)  # the servers share one batch limit
        # A batch wider than our requests in flight carries someone else's sequences.
        foreign = max(0.0, max(self.widths) - self.in_flight)
        in_flight = self.in_flight + foreign
        token_rate = self.token_rate
        most = max(float(self.most_in_flight), in_flight)
        lead = self.demand_lead
        if offered and lead > 1.0:
            # Arrivals outgrow what is committed: by Little's law the requests in flight grow
            # with the demand, and a route is priced in the load it is heading for.
            token_rate = self.offered_rate
            most = max(most, in_flight * lead)
        return SystemLoad(
            widths,
            in_flight,
            devices=devices,
            caps=caps,
            iterations=iterations,
            token_rate=token_rate,
            max_in_flight=most,
            min_in_flight=max(foreign, 1.0),
        )
