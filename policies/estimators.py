"""Online estimators SpecRouter learns from round feedback (DESIGN.md §1).

* :class:`PassTimeProfile` -- per model, ``V_j(n, b)``: the wall time of a pass feeding
  ``n`` positions per sequence with ``b`` sequences in the batch.  The feature is the
  batch's position count ``x = n * b`` (what a roofline charges for); observations are
  binned on a log2 grid of ``x`` and each bin keeps an EMA of ``x`` and of the time.  A
  prediction interpolates linearly between bin centroids, is flat below the lowest one
  (the memory-bound floor) and extends the last segment's slope above the highest one
  (the compute-bound line).  Unmeasured models get a prior: the target's profile scaled by
  the parameter ratio when the ladder gives parameters, a fixed fraction otherwise.
* :class:`PairStats` -- per ordered pair ``(lower, upper)``: an EMA of the similarity
  ``1 - TV`` from TV samples and discounted counts of accepted tokens and acceptance
  *trials* (``accepted`` plus the rejections: accepted prefixes are censored geometric
  draws, whose maximum-likelihood acceptance is ``sum accepted / sum trials``).
* :class:`AcceptanceMap` -- the map ``f`` from similarity to acceptance: the identity
  (exact for lossless sampling, ``E[accept] = 1 - TV``) or a line ``a + b s`` fitted online
  by weighted least squares with a ridge pull towards the identity (greedy decoding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

TIME_BINS = 24  # x = positions in the batch, bins [2^k, 2^{k+1}) up to 2^24
UNMEASURED_FRACTION = 0.05  # prior pass time of an unmeasured model, as a fraction of the target's


class PassTimeProfile:
    """Per-model online estimate of pass time against positions in the batch."""

    def __init__(self, ladder_size: int, rate: float = 0.05, params: Sequence[float] | None = None):
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"PassTimeProfile rate must be in (0, 1], got {rate}")
        if params is not None and len(params) != ladder_size:
            raise ValueError(f"ladder params has {len(params)} entries for {ladder_size} models")
        self.ladder_size = ladder_size
        self.rate = rate
        self.params = tuple(params) if params is not None else None
        self._time = [[0.0] * TIME_BINS for _ in range(ladder_size)]
        self._x = [[0.0] * TIME_BINS for _ in range(ladder_size)]
        self._count = [[0] * TIME_BINS for _ in range(ladder_size)]
        self._warm = min(int(1.0 / rate), 1 << 30)

    def update(self, model: int, tokens: int, batch_size: int, seconds: float) -> None:
        """Fold in one pass; non-finite or negative times are ignored."""
        if not 0.0 <= seconds < math.inf:
            return
        x = max(tokens, 1) * max(batch_size, 1)
        k = x.bit_length() - 1
        if k >= TIME_BINS:
            k = TIME_BINS - 1
        counts = self._count[model]
        c = counts[k] + 1
        counts[k] = c
        r = 1.0 / c if c < self._warm else self.rate
        row = self._time[model]
        row[k] += r * (seconds - row[k])
        xs = self._x[model]
        xs[k] += r * (x - xs[k])

    def measured(self, model: int) -> bool:
        return any(self._count[model])

    def _knots(self, model: int) -> tuple[list[float], list[float]]:
        counts, xs, ts = self._count[model], self._x[model], self._time[model]
        keep = [k for k in range(TIME_BINS) if counts[k]]
        return [xs[k] for k in keep], [ts[k] for k in keep]

    def curve(self, model: int, positions: np.ndarray) -> np.ndarray | None:
        """Predicted time at batch position counts ``positions``; ``None`` if never measured."""
        xs, ts = self._knots(model)
        if not xs:
            return None
        out = np.interp(positions, xs, ts)
        if len(xs) >= 2 and xs[-1] > xs[-2]:
            slope = max(0.0, (ts[-1] - ts[-2]) / (xs[-1] - xs[-2]))
            above = positions > xs[-1]
            out[above] = ts[-1] + slope * (positions[above] - xs[-1])
        return out

    def table(self, batch_sizes: Sequence[int], columns: int) -> np.ndarray:
        """``(K, columns)`` table of ``V_m(n)`` at the given batch sizes (column = positions)."""
        k = self.ladder_size
        n = np.arange(columns, dtype=float)
        n[0] = 1.0
        out = np.zeros((k, columns))
        known: list[int] = []
        for model in range(k):
            batch = max(int(batch_sizes[model]) if model < len(batch_sizes) else 1, 1)
            curve = self.curve(model, n * batch)
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
        self.accepted = [0.0] * size  # discounted accepted tokens
        self.trials = [0.0] * size  # discounted acceptance trials
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

    def add_acceptance(self, lower: int, upper: int, accepted: int, trials: int) -> None:
        key = lower * self.ladder_size + upper
        keep = self.keep
        self.accepted[key] = self.accepted[key] * keep + accepted
        self.trials[key] = self.trials[key] * keep + trials
        self.last_seen[key] = self.rounds

    def staleness(self, lower: int, upper: int) -> int:
        """Rounds since the pair was last observed (``rounds + 1`` if never)."""
        seen = self.last_seen[lower * self.ladder_size + upper]
        return self.rounds - seen if seen >= 0 else self.rounds + 1


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
