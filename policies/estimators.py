"""Online estimators SpecRouter learns from round feedback (DESIGN.md §1).

* :class:`PassTimeProfile` -- per model, ``V_j(n, b)``: the wall time of a pass feeding
  ``n`` positions per sequence with ``b`` sequences in the batch, as a robust (median)
  table over ``n`` and batch-size octaves.  Unmeasured models get a prior: the largest
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
from collections.abc import Sequence

import numpy as np

BATCH_ROWS = 12  # batch-size octaves: 1, 2-3, 4-7, ..., >= 2048
UNMEASURED_FRACTION = 0.05  # prior pass time of an unmeasured model, as a fraction of the target's


class PassTimeProfile:
    """Per model, a robust online table of pass time by (positions fed, batch-size octave).

    A cell tracks the *median* of its samples with a multiplicative sign step
    ``v <- v (1 + eta sign(t - v))``: in a shared continuous batch a pass that also
    carries another request's prefill takes many times longer than the positions this
    request fed suggest, and those heavy outliers must not drag the estimate (an EMA
    would).  The first samples of a cell take large steps (``eta_c = max(eta, 1/c)``),
    so a cell settles within a few samples and then follows slowdowns at rate ``eta``.
    Passes feeding more than ``max_positions`` (prefill and catch-up) are not routing
    costs and are skipped.

    A prediction ``V_m(n, b)`` reads the row of ``b``'s octave (the nearest measured row
    when it has none), interpolates linearly in ``n`` between measured cells, is flat
    below the first, and extends the last segment's slope (never negative) above the last.
    """

    def __init__(
        self,
        ladder_size: int,
        rate: float = 0.05,
        params: Sequence[float] | None = None,
        max_positions: int = 64,
    ):
        if not 0.0 < rate < 1.0:
            raise ValueError(f"PassTimeProfile rate must be in (0, 1), got {rate}")
        if params is not None and len(params) != ladder_size:
            raise ValueError(f"ladder params has {len(params)} entries for {ladder_size} models")
        self.ladder_size = ladder_size
        self.rate = rate
        self.params = tuple(params) if params is not None else None
        self.max_positions = max_positions
        cells = (max_positions + 1) * BATCH_ROWS
        self._time = [[0.0] * cells for _ in range(ladder_size)]
        self._count = [[0] * cells for _ in range(ladder_size)]
        self._snapshot = [[0.0] * cells for _ in range(ladder_size)]
        self.moved = False  # some cell left its snapshot by more than ``tolerance``
        self.tolerance = 0.2

    def update(self, model: int, tokens: int, batch_size: int, seconds: float) -> None:
        """Fold in one pass; prefill-sized, non-finite or negative samples are ignored."""
        if tokens > self.max_positions or not 0.0 <= seconds < math.inf:
            return
        row = batch_size.bit_length() - 1 if batch_size > 1 else 0
        if row >= BATCH_ROWS:
            row = BATCH_ROWS - 1
        cell = tokens * BATCH_ROWS + row
        counts = self._count[model]
        c = counts[cell] + 1
        counts[cell] = c
        times = self._time[model]
        value = times[cell]
        if c == 1:
            times[cell] = value = seconds
        else:
            step = self.rate if c * self.rate > 1.0 else 1.0 / c
            if seconds > value:
                value *= 1.0 + step
                if value > seconds and c <= 2:
                    value = seconds
            elif seconds < value:
                value *= 1.0 - step
            times[cell] = value
        if not self.moved and c * self.rate > 1.0:  # a settled cell left its snapshot
            reference = self._snapshot[model][cell]
            if abs(value - reference) > self.tolerance * reference:
                self.moved = True

    def snapshot(self) -> None:
        """Remember the current estimates; :attr:`moved` reports departures from them."""
        self._snapshot = [list(row) for row in self._time]
        self.moved = False

    def measured(self, model: int) -> bool:
        return any(self._count[model])

    def curve(self, model: int, batch_size: int, columns: int) -> np.ndarray | None:
        """``V_m(n, b)`` for ``n = 0 .. columns-1`` (``n = 0`` reads as 1); ``None`` if unmeasured."""
        counts, times = self._count[model], self._time[model]
        wanted = batch_size.bit_length() - 1 if batch_size > 1 else 0
        rows = sorted(
            (r for r in range(BATCH_ROWS) if any(counts[n * BATCH_ROWS + r] for n in range(1, columns))),
            key=lambda r: (abs(r - min(wanted, BATCH_ROWS - 1)), r),
        )
        if not rows:
            return None
        row = rows[0]
        ns = [n for n in range(1, self.max_positions + 1) if counts[n * BATCH_ROWS + row]]
        ts = [times[n * BATCH_ROWS + row] for n in ns]
        positions = np.maximum(np.arange(columns, dtype=float), 1.0)
        out = np.interp(positions, ns, ts)
        if len(ns) >= 2:
            slope = max(0.0, (ts[-1] - ts[-2]) / (ns[-1] - ns[-2]))
            above = positions > ns[-1]
            out[above] = ts[-1] + slope * (positions[above] - ns[-1])
        return out

    def table(self, batch_sizes: Sequence[float], columns: int) -> np.ndarray:
        """``(K, columns)`` table of ``V_m(n)`` at the given batch sizes (column = positions)."""
        k = self.ladder_size
        out = np.zeros((k, columns))
        known: list[int] = []
        for model in range(k):
            batch = int(round(batch_sizes[model])) if model < len(batch_sizes) else 1
            curve = self.curve(model, max(batch, 1), columns)
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
        self.last_seen = [-1] * size  # round index of the last update of either statistic
        self.rounds = 0

    def add_tv(self, lower: int, upper: int, values: Sequence[float]) -> float | None:
        """Fold in TV samples of one round; returns the similarity before the update."""
        n = len(values)
        if n == 0:
            return None
        mean_tv = sum(values) / n
        if not 0.0 <= mean_tv <= 1.0:  # NaN or out of range: reject the sample
            return None
        key = lower * self.ladder_size + upper
        weight = self.similarity_weight[key] * self.keep + n
        before = self.similarity[key]
        self.similarity[key] = before + (n / weight) * ((1.0 - mean_tv) - before)
        self.similarity_weight[key] = weight
        self.last_seen[key] = self.rounds
        return before if weight > n else None

    def add_acceptance(self, lower: int, upper: int, proposed: int, accepted: int, emitted: int) -> int:
        """Fold in one level's counts of a round; returns its acceptance trials.

        The trials are exact for a single verify (see :func:`acceptance_trials`); a level
        that verified several times goes to the pooled method-of-moments sums.
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
            estimate = _solve_truncated_geometric(pooled_accepted / verifies, candidates / verifies)
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


def acceptance_trials(proposed: int, accepted: int, emitted: int) -> int:
    """Bernoulli acceptance trials behind ``accepted`` of ``proposed`` candidates.

    Every verify emits its accepted prefix plus one token, so ``emitted - accepted`` is
    the number of verify passes; each stops at its first rejection unless it accepted
    all of its candidates.  The rejections are therefore exactly ``0`` when everything
    was accepted, exactly ``1`` after a single verify, and at most one per verify and
    at most the rejected count otherwise.
    """
    if accepted >= proposed:
        return accepted
    verifies = max(emitted - accepted, 1)
    return accepted + min(verifies, proposed - accepted)


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
        self._sums = [0.0] * 5  # w, w s, w y, w s^2, w s y
        self.intercept, self.slope = 0.0, 1.0

    def add(self, similarity: float, acceptance: float, weight: float) -> None:
        if self.mode == "sampling" or weight <= 0:
            return
        k = self.keep
        s = self._sums
        ws = weight * similarity
        s[0] = s[0] * k + weight
        s[1] = s[1] * k + ws
        s[2] = s[2] * k + weight * acceptance
        s[3] = s[3] * k + ws * similarity
        s[4] = s[4] * k + ws * acceptance

    def refit(self) -> None:
        """Solve the ridge normal equations (done at re-plan time, not per round)."""
        if self.mode == "sampling":
            return
        w, ws, wy, wss, wsy = self._sums
        lam = self.ridge
        matrix = np.array([[w + lam, ws], [ws, wss + lam]])
        rhs = np.array([wy, wsy + lam])
        intercept, slope = np.linalg.solve(matrix, rhs)
        self.intercept, self.slope = float(intercept), float(slope)

    def __call__(self, similarity: float) -> float:
        value = self.intercept + self.slope * similarity
        return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


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

    The planner adds a chain's wait to the latency of every round of it.
    """

    def __init__(self, rate: float = 0.01, prior: float = 5.0, stale_keep: float = 0.995):
        self.keep = 1.0 - rate
        self.prior = prior
        self.stale_keep = stale_keep
        self.sums: dict[tuple[int, ...], list[float]] = {}  # chain -> [excess, rounds, last sample]
        self.pooled = [0.0, 0.0]
        self.samples = 0

    def add(self, chain: tuple[int, ...], latency: float, passes: float) -> None:
        excess = latency - passes
        if not (0.0 <= passes < math.inf and 0.0 <= excess < math.inf):
            return
        self.samples += 1
        sums = self.sums.get(chain)
        if sums is None:
            sums = self.sums[chain] = [0.0, 0.0, 0.0]
        keep = self.keep
        sums[0] = sums[0] * keep + excess
        sums[1] = sums[1] * keep + 1.0
        sums[2] = self.samples
        self.pooled[0] = self.pooled[0] * keep + excess
        self.pooled[1] = self.pooled[1] * keep + 1.0

    def wait(self, chain: tuple[int, ...]) -> float:
        """Expected waiting seconds per round of ``chain``."""
        pooled = self.pooled[0] / self.pooled[1] if self.pooled[1] > 0 else 0.0
        sums = self.sums.get(chain)
        if sums is None or sums[1] <= 0:
            return pooled
        weight = sums[1] * self.stale_keep ** (self.samples - sums[2])
        return (weight * sums[0] / sums[1] + self.prior * pooled) / (weight + self.prior)
