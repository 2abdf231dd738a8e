"""Measure a real ladder and write the world profile the simulator replays (docs/design.md §5).

Two measurements, both under ``torch.inference_mode``:

1. **Pass times** ``V_m(n, b, c)`` of every model: the wall time of one forward pass that
   feeds ``n`` new positions to each of ``b`` sequences whose KV caches already hold ``c``
   committed positions, through the executor's own KV state (Hugging Face path, or the lean
   path with ``lean=True``).  For each grid point the cache is prefilled once, the pass is run
   ``warmup`` times unmeasured, then ``repeats`` times measured (each pass starts from the
   same ``c``-position cache, so every repeat sees the same state); the table keeps the
   **median**, which shrugs off the scheduler hiccups of a shared machine (or, with
   ``statistic="min"``, the fastest repeat: contention only ever adds time, so the minimum is
   the isolated cost, and an in-run calibration then adds what runs really pay).

2. **Pair statistics** for every ordered pair ``(lower, upper)`` of ladder indices and
   every prompt domain, in two modes:

   * the target continues each prompt by ``continuation`` tokens (greedy decoding for the
     ``greedy`` mode, temperature-1 sampling for the ``sampling`` mode, seeded), so the
     statistics are taken on the contexts decoding actually visits;
   * every model scores prompt + continuation in one pass; at each continuation position
     ``t`` we take ``p_lower``, ``p_upper`` (softmax of the logits at temperature 1) and record
     ``match_t = [argmax p_lower == argmax p_upper]`` and
     ``TV_t = ½ Σ_v |p_lower(v) − p_upper(v)|``;
   * sampling mode: per-token acceptance ``α = 1 − mean(TV)`` (the probability that the
     lossless rule accepts a token drawn from ``p_lower``) and, per draft position
     ``k = 0 .. K−1`` from every start ``s``, ``P(accept s+k | s..s+k−1 accepted) =
     E[Π_{i≤k} a_{s+i}] / E[Π_{i<k} a_{s+i}]`` with ``a = 1 − TV`` (positions treated as
     conditionally independent given the context);
   * greedy mode (what the backend runs): :func:`visited_acceptance` walks the match series
     the way greedy rounds do -- a round starts right after the previous one's correction,
     not at an arbitrary position, and rejections cluster -- for every lookahead up to
     ``K``; ``α`` is the stop-at-first-rejection MLE ``A / (A + R)`` over those walks and the
     per-position values are the walks' conditional acceptance.  (Averaging over every
     start instead over-predicted the executor's acceptance by ~0.05 on the embedded ladder.)
     Correlation between neighbouring positions shows up as rising conditional acceptance
     -- which i.i.d. ``α`` misses.

   Context: along the target's greedy continuation, which is exactly what an accepted prefix
   is in a greedy round for a pair verified by the target.  For an intermediate verifier
   (``upper`` below the target) the real context beyond the first draft position is the
   upper model's own greedy tokens, so those pairs are an approximation; sampling mode is an
   approximation beyond the first position (the drafter's own samples are not in the context).

The result is written in the versioned world-profile format of :mod:`traces.world_profile`.
That schema holds one pass-time table (batch × tokens) per model at one context length; the
profiler stores the table at the grid's median context there and the full
(context × batch × tokens) grid in ``meta["pass_time_grid"]``.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from backend.hf_compat import KVLayers, forward_with_cache
from backend.kv_state import ScoreRequest
from backend.ladder import Ladder
from backend.lean import kv_state
from backend.ngram import NgramDrafter, point_mass
from traces.world_profile import ModelProfile, PairProfile, PassTimeTable, ProposalProfile, WorldProfile

TV_SAMPLES_KEPT = 2000  # per (pair, domain, mode); enough for the simulator's empirical draws


@dataclass(frozen=True)
class ProfileSettings:
    """What to measure.  ``quick()`` is a seconds-long run for tests and demos."""

    tokens: tuple[int, ...] = (1, 2, 4, 8, 16)
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    contexts: tuple[int, ...] = (64, 256, 512)
    warmup: int = 2
    repeats: int = 7
    prompts_per_domain: int = 8
    continuation: int = 64
    draft_positions: int = 8
    seed: int = 0
    statistic: str = "median"  # of a cell's repeats: "median", or "min" (noise on a shared CPU only adds)

    def __post_init__(self) -> None:
        if self.statistic not in ("median", "min"):
            raise ValueError(f"ProfileSettings.statistic must be 'median' or 'min', got {self.statistic!r}")

    @classmethod
    def quick(cls) -> ProfileSettings:
        return cls(
            tokens=(1, 4),
            batch_sizes=(1, 2),
            contexts=(32,),
            warmup=1,
            repeats=3,
            prompts_per_domain=2,
            continuation=16,
            draft_positions=4,
        )


@dataclass(frozen=True)
class PassTimeGrid:
    """``seconds[i_context][i_batch][i_tokens]``: median pass time of one model."""

    contexts: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    tokens: tuple[int, ...]
    seconds: list[list[list[float]]] = field(default_factory=list)

    def table_at(self, context_index: int) -> PassTimeTable:
        rows = tuple(tuple(row) for row in self.seconds[context_index])
        return PassTimeTable(self.batch_sizes, self.tokens, rows, self.contexts[context_index])


def cached_forward(
    model: torch.nn.Module, input_ids: torch.Tensor, past: KVLayers | None, keep: int
) -> tuple[torch.Tensor, KVLayers]:
    """One forward pass of ``input_ids`` on top of ``past`` (no padding); the last ``keep`` logits and new KV.

    Goes through :func:`backend.hf_compat.forward_with_cache`, the path the executor takes, so the
    measured times include the same cache bookkeeping.  ``past`` itself is left untouched.
    """
    start = past[0][0].shape[2] if past else 0
    fed = input_ids.shape[1]
    positions = torch.arange(start, start + fed, device=input_ids.device).expand(input_ids.shape[0], fed)
    return forward_with_cache(model, input_ids, past, None, positions, keep)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def max_context(model: torch.nn.Module) -> int:
    return int(getattr(model.config, "max_position_embeddings", 2048) or 2048)


def measure_pass_times(
    model: torch.nn.Module,
    settings: ProfileSettings,
    vocab_size: int,
    label: str = "model",
    clock: Callable[[], float] = time.perf_counter,
    lean: bool = False,
) -> PassTimeGrid:
    """Median wall time of one cached pass for every (context, batch, tokens) grid point.

    The pass goes through the executor's own KV state (:class:`backend.kv_state.ModelKV`, or
    :class:`backend.lean.LeanKV` with ``lean``): ``b`` sequences holding ``c`` cached tokens
    each score ``n`` new ones, then are rolled back to ``c`` (outside the timed region).
    Contexts longer than the model's positional range (minus the largest pass) are clipped
    to it, so a small model still gets a table.
    """
    limit = max_context(model) - max(settings.tokens)
    if limit < 1:
        raise ValueError(f"{label}: context window {max_context(model)} is shorter than the largest pass")
    contexts = tuple(sorted({min(c, limit) for c in settings.contexts}))
    device = model_device(model)
    rng = np.random.default_rng(settings.seed)
    grid = PassTimeGrid(contexts, settings.batch_sizes, settings.tokens)
    points = len(contexts) * len(settings.batch_sizes) * len(settings.tokens)
    bar = tqdm(total=points, desc=f"pass times {label}", unit="pt", leave=False)
    state = kv_state(model, vocab_size, lean)
    with torch.inference_mode():
        warm = rng.integers(0, vocab_size, min(contexts)).tolist()
        for _ in range(3):  # first passes of a process pay one-off allocation / dispatch costs
            state.score([ScoreRequest(-1, warm, 1)])
            state.remove(-1)
        for context in contexts:
            plane = []
            for batch in settings.batch_sizes:
                prompts = [rng.integers(0, vocab_size, context).tolist() for _ in range(batch)]
                state.score([ScoreRequest(i, p, 1) for i, p in enumerate(prompts)])
                row = []
                for tokens in settings.tokens:
                    requests = [
                        ScoreRequest(i, p + rng.integers(0, vocab_size, tokens).tolist(), tokens)
                        for i, p in enumerate(prompts)
                    ]
                    timings = []
                    for rep in range(settings.warmup + settings.repeats):
                        start = clock()
                        state.score(requests)
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        elapsed = clock() - start
                        for i in range(batch):
                            state.rollback(i, context)
                        if rep >= settings.warmup:
                            timings.append(elapsed)
                    summary = min(timings) if settings.statistic == "min" else statistics.median(timings)
                    row.append(max(summary, 1e-9))
                    bar.update()
                plane.append(row)
                for i in range(batch):
                    state.remove(i)
            grid.seconds.append(plane)
    bar.close()
    return grid


@dataclass
class PairSeries:
    """Per-position ``match`` and ``TV`` of one pair on one domain, one list per prompt."""

    match: list[np.ndarray] = field(default_factory=list)
    tv: list[np.ndarray] = field(default_factory=list)


def conditional_acceptance(series: Sequence[np.ndarray], positions: int) -> tuple[float, ...]:
    """``P(accept s+k | s..s+k-1 accepted)`` for ``k < positions`` from per-position rates.

    ``series`` holds, per prompt, the per-position acceptance probability (0/1 for greedy,
    ``1 − TV`` for sampling).  Windows never cross prompt boundaries.
    """
    survived = [0.0] * (positions + 1)  # survived[k] = sum over windows of Π_{i<k} a_{s+i}
    for values in series:
        n = len(values)
        if n < positions:
            continue
        running = np.ones(n - positions + 1)
        survived[0] += running.sum()
        for k in range(positions):
            running = running * values[k : n - positions + 1 + k]
            survived[k + 1] += running.sum()
    out = []
    for k in range(positions):
        if survived[k] <= 0:
            break
        out.append(float(min(1.0, max(0.0, survived[k + 1] / survived[k]))))
    return tuple(out)


def _conditional(reached: Sequence[float], accepted: Sequence[float]) -> tuple[float, ...]:
    """Accepted / reached per draft position, up to the first position nothing reached."""
    out = []
    for r, a in zip(reached, accepted):
        if r <= 0:
            break
        out.append(float(min(1.0, max(0.0, a / r))))
    return tuple(out)


class WalkCounts(NamedTuple):
    """One lookahead's greedy walk over the series: per draft position, rounds that reached it
    and rounds that accepted it; accepted tokens and rounds that rejected one, in total."""

    reached: list[int]
    accepted: list[int]
    tokens_accepted: int
    rejections: int

    def conditional(self) -> tuple[float, ...]:
        """``P(accept k | 0..k-1)`` up to the first position no round reached."""
        return _conditional(self.reached, self.accepted)


def walk(series: Sequence[np.ndarray], lookahead: int) -> WalkCounts:
    """Walk each 0/1 match series the way greedy rounds of ``lookahead`` drafts visit it.

    A round drafts ``lookahead`` from start ``s``, accepts the run of matches ``k <= lookahead``
    and commits ``k + 1`` tokens (a correction or the bonus), so the next round starts at
    ``s + k + 1``; a window with no room for ``lookahead`` drafts ends the series.
    """
    counts = WalkCounts([0] * lookahead, [0] * lookahead, 0, 0)
    reached, accepted = counts.reached, counts.accepted
    tokens = rejections = 0
    for values in series:
        matches = np.asarray(values) > 0.5
        start = 0
        while start + lookahead <= len(matches):
            run = 0
            while run < lookahead and matches[start + run]:
                reached[run] += 1
                accepted[run] += 1
                run += 1
            if run < lookahead:
                reached[run] += 1
                rejections += 1
            tokens += run
            start += run + 1
    return counts._replace(tokens_accepted=tokens, rejections=rejections)


def visited_acceptance(series: Sequence[np.ndarray], positions: int) -> tuple[float, tuple[float, ...]]:
    """Greedy acceptance as the executor experiences it: ``(alpha_hat, P(accept k | 0..k-1))``.

    ``series`` holds 0/1 matches per prompt along the target's greedy continuation.  A greedy
    round does not start at an arbitrary position: it starts right after the previous round's
    correction, i.e. where the previous round stopped, and rejections cluster (a hard
    identifier is followed by another).  So walk each series the way rounds do (:func:`walk`)
    for every lookahead ``K = 1 .. positions``.  Pooled over the walks, ``P(accept k | 0..k-1)``
    is accepts at ``k`` / rounds that reached ``k``, and ``alpha_hat = A / (A + R)`` (the
    stop-at-first-rejection MLE: ``A`` accepted tokens, ``R`` rounds that rejected one).
    """
    pooled = WalkCounts([0] * positions, [0] * positions, 0, 0)
    tokens = rejections = 0
    for lookahead in range(1, positions + 1):
        counts = walk(series, lookahead)
        for k in range(lookahead):
            pooled.reached[k] += counts.reached[k]
            pooled.accepted[k] += counts.accepted[k]
        tokens += counts.tokens_accepted
        rejections += counts.rejections
    seen = tokens + rejections
    return (tokens / seen if seen else float("nan")), pooled.conditional()


def lookahead_acceptance(series: Sequence[np.ndarray], positions: int) -> tuple[tuple[float, ...], ...]:
    """Row ``K - 1``: ``P(accept k | 0..k-1)`` when every round drafts ``K`` (``K = 1 .. positions``).

    The walks of :func:`visited_acceptance`, kept apart: rounds of ``K`` start where rounds of
    ``K`` stop, so a long draft meets the text's hard spots at other places than a short one,
    and pooling the walks over-predicts what long drafts accept (on the embedded ladder's
    prose: 3.85 accepted of 8 pooled against 3.06 walked).
    """
    return tuple(walk(series, lookahead).conditional() for lookahead in range(1, positions + 1))


def continue_prompt(
    target: torch.nn.Module, prompt: Sequence[int], tokens: int, sample: bool, generator: torch.Generator
) -> list[int]:
    """Decode ``tokens`` tokens after ``prompt`` with the target (greedy or T=1 sampling)."""
    device = model_device(target)
    logits, past = cached_forward(target, torch.tensor([list(prompt)], device=device), None, 1)
    out: list[int] = []
    for _ in range(tokens):
        if sample:
            probs = torch.softmax(logits[0, -1].float().cpu(), dim=-1)
            token = int(torch.multinomial(probs, 1, generator=generator))
        else:
            token = int(torch.argmax(logits[0, -1]))
        out.append(token)
        logits, past = cached_forward(target, torch.tensor([[token]], device=device), past, 1)
    return out


ScoredContinuation = tuple[str, str, list[int], list[int], list[torch.Tensor]]
"""``(mode, domain, prompt, continuation, probs)``: ``probs[m][t]`` is network ``m``'s distribution
(T = 1) of continuation token ``t`` given the prompt and ``continuation[:t]``."""


def scored_continuations(
    models: Sequence[torch.nn.Module],
    prompts_by_domain: Mapping[str, Sequence[Sequence[int]]],
    settings: ProfileSettings,
) -> Iterator[ScoredContinuation]:
    """Per (mode, domain, prompt): the target's continuation and every model's distributions along it."""
    target = models[-1]
    limit = min(max_context(m) for m in models) - settings.continuation
    generator = torch.Generator().manual_seed(settings.seed)
    jobs = [
        (mode, d, p)
        for mode in ("greedy", "sampling")
        for d in prompts_by_domain
        for p in prompts_by_domain[d]
    ]
    with torch.inference_mode():
        for mode, domain, prompt in tqdm(jobs, desc="pair statistics", unit="prompt", leave=False):
            prompt = list(prompt)[-limit:] if limit > 0 else list(prompt)[-1:]
            continuation = continue_prompt(
                target, prompt, settings.continuation, mode == "sampling", generator
            )
            ids = torch.tensor([prompt + continuation])
            start = len(prompt) - 1  # logits at position i predict token i + 1
            probs = []
            for model in models:
                logits = model(input_ids=ids.to(model_device(model))).logits[
                    0, start : start + len(continuation)
                ]
                probs.append(torch.softmax(logits.float().cpu(), dim=-1))
            yield mode, domain, prompt, continuation, probs


def pair_series(scored: ScoredContinuation, series: dict[tuple[str, str, int, int], PairSeries]) -> None:
    """Add one scored continuation's match / TV series for every ordered pair to ``series``."""
    mode, domain, _, _, probs = scored
    size = len(probs)
    for lower in range(size):
        for upper in range(lower + 1, size):
            p_low, p_up = probs[lower], probs[upper]
            entry = series.setdefault((mode, domain, lower, upper), PairSeries())
            entry.match.append((p_low.argmax(-1) == p_up.argmax(-1)).double().numpy())
            entry.tv.append((0.5 * (p_low - p_up).abs().sum(-1)).double().numpy())


def measure_pairs(
    models: Sequence[torch.nn.Module],
    prompts_by_domain: Mapping[str, Sequence[Sequence[int]]],
    settings: ProfileSettings,
) -> dict[tuple[str, str, int, int], PairSeries]:
    """Per (mode, domain, lower, upper): per-position match / TV series on target continuations."""
    series: dict[tuple[str, str, int, int], PairSeries] = {}
    for scored in scored_continuations(models, prompts_by_domain, settings):
        pair_series(scored, series)
    return series


# -- the model-free lookup drafter ------------------------------------------------------------
@dataclass
class LookupWalk:
    """What walking lookup rounds over continuations measured, for one (mode, domain, upper).

    ``proposed[K - 1][n]``: lookups allowed ``K`` tokens that proposed ``n``.  By the number of
    candidates ``c`` a lookup proposed (what the verifying level sees): ``reached[c - 1][k]`` and
    ``accepted[c - 1][k]`` (greedy: counts of rounds that reached / accepted candidate ``k``;
    sampling: the expected counts, sums of survival products of ``a = p_upper(x)``).  Alpha's
    pieces: greedy ``tokens`` accepted and ``rejections`` (``A / (A + R)``), sampling ``tokens``
    = sum of ``a`` over ``positions`` proposed (mean ``p_upper(proposal)``); ``tv`` per proposed
    position: ``TV(onehot(x), p_upper) = 1 - p_upper(x)``.
    """

    limits: int
    proposed: list[list[int]] = field(default_factory=list)
    reached: list[list[float]] = field(default_factory=list)
    accepted: list[list[float]] = field(default_factory=list)
    tokens: float = 0.0
    rejections: int = 0
    positions: int = 0
    tv: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.proposed:
            self.proposed = [[0] * (k + 2) for k in range(self.limits)]
            self.reached = [[0.0] * (c + 1) for c in range(self.limits)]
            self.accepted = [[0.0] * (c + 1) for c in range(self.limits)]

    def add(self, other: LookupWalk) -> None:
        for counts, more in zip(self.proposed, other.proposed):
            for i, value in enumerate(more):
                counts[i] += value
        for sums, extra in zip(self.reached + self.accepted, other.reached + other.accepted):
            for i, amount in enumerate(extra):
                sums[i] += amount
        self.tokens += other.tokens
        self.rejections += other.rejections
        self.positions += other.positions
        self.tv.extend(other.tv)

    def pmfs(self) -> tuple[tuple[float, ...], ...]:
        """Row ``K - 1``: the pmf of the number proposed (a limit never walked: nothing proposed)."""
        rows = []
        for counts in self.proposed:
            total = sum(counts)
            rows.append(tuple(c / total for c in counts) if total else (1.0,) + (0.0,) * (len(counts) - 1))
        return tuple(rows)

    def by_candidates(self) -> tuple[tuple[float, ...], ...]:
        """Row ``c - 1``: ``P(accept k | 0..k-1)`` when ``c`` candidates are verified (empty: never)."""
        return tuple(_conditional(r, a) for r, a in zip(self.reached, self.accepted))

    def pooled(self) -> tuple[float, ...]:
        reached = [sum(row[k] for row in self.reached if k < len(row)) for k in range(self.limits)]
        accepted = [sum(row[k] for row in self.accepted if k < len(row)) for k in range(self.limits)]
        return _conditional(reached, accepted)

    def alpha(self, mode: str) -> float:
        if mode == "greedy":
            seen = self.tokens + self.rejections
            return self.tokens / seen if seen else 0.0
        return self.tokens / self.positions if self.positions else 0.0


def walk_lookup(
    lookup: NgramDrafter,
    prompt: Sequence[int],
    continuation: Sequence[int],
    upper_probs: torch.Tensor,
    mode: str,
    limits: int,
    exact: bool,
) -> LookupWalk:
    """Walk ``lookup > upper`` rounds along one continuation for every limit ``K = 1 .. limits``.

    A round starting at ``s`` proposes ``x = propose(prompt + continuation[:s], K)`` (``n`` tokens,
    ``s + K`` within the continuation).  Greedy: candidate ``k`` is accepted while ``x_k`` is the
    upper's greedy token at ``s + k`` -- ``continuation[s + k]`` for the target (``exact``), the
    argmax of ``upper_probs`` along the target's continuation for an intermediate upper (the
    approximation the model pairs make); the next round starts at ``s + accepted + 1``.
    Sampling (point-mass ``q``: ``x_k`` is accepted with probability ``a_k = p_upper(x_k)``):
    ``a_k`` is read at ``s + k`` along the sampled continuation (exact for ``k = 0``; beyond, the
    context holds the sampled tokens, not ``x``); the counts are expected ones (survival
    products), and rounds advance as if the sampled continuation were committed: past the
    prefix of ``x`` equal to it, plus one.
    """
    counts = LookupWalk(limits)
    length = len(continuation)
    greedy = mode == "greedy"
    argmax = continuation if exact and greedy else upper_probs.argmax(-1).tolist()
    context = list(prompt)
    for limit in range(1, limits + 1):
        start = 0
        while start + limit <= length:
            proposal = lookup.propose(context + list(continuation[:start]), limit)
            n = len(proposal)
            counts.proposed[limit - 1][n] += 1
            same = 0
            while same < n and proposal[same] == continuation[start + same]:
                same += 1
            if n:
                reached, accepted = counts.reached[n - 1], counts.accepted[n - 1]
                a = [float(upper_probs[start + k, token]) for k, token in enumerate(proposal)]
                counts.positions += n
                counts.tv.extend(1.0 - v for v in a)
                if greedy:
                    run = 0
                    while run < n and proposal[run] == argmax[start + run]:
                        run += 1
                    for k in range(min(run + 1, n)):
                        reached[k] += 1
                    for k in range(run):
                        accepted[k] += 1
                    counts.tokens += run
                    counts.rejections += run < n
                    same = run
                else:
                    survive = 1.0
                    for k in range(n):
                        reached[k] += survive
                        survive *= a[k]
                        accepted[k] += survive
                    counts.tokens += sum(a)
            start += same + 1
    return counts


def lookup_walks(
    lookup: NgramDrafter,
    scored: ScoredContinuation,
    limits: int,
    walks: dict[tuple[str, str, int], LookupWalk],
) -> None:
    """Add one scored continuation's lookup walks against every network (``upper`` = network index)."""
    mode, domain, prompt, continuation, probs = scored
    for upper, upper_probs in enumerate(probs):
        walk_here = walk_lookup(
            lookup, prompt, continuation, upper_probs, mode, limits, exact=upper == len(probs) - 1
        )
        walks.setdefault((mode, domain, upper), LookupWalk(limits)).add(walk_here)


def lookup_profiles(
    walks: Mapping[tuple[str, str, int], LookupWalk], target: int, limits: int, seed: int
) -> tuple[list[PairProfile], list[ProposalProfile]]:
    """Per (mode, domain and all domains): ``(lookup, upper)`` pairs (upper = network + 1, the lookup
    is member 0) and the lookup's proposal pmfs, from the walks verified by the target."""
    grouped: dict[tuple[str, str | None, int], LookupWalk] = {}
    for (mode, domain, upper), counts in sorted(walks.items()):
        for key in ((mode, domain, upper), (mode, None, upper)):
            grouped.setdefault(key, LookupWalk(limits)).add(counts)
    rng = np.random.default_rng(seed)
    pairs, proposals = [], []
    for (mode, tag, upper), counts in sorted(
        grouped.items(), key=lambda kv: (kv[0][2], str(kv[0][1]), kv[0][0])
    ):
        tv = np.asarray(counts.tv)
        kept = tv if len(tv) <= TV_SAMPLES_KEPT else rng.choice(tv, TV_SAMPLES_KEPT, replace=False)
        pairs.append(
            PairProfile(
                lower=0,
                upper=upper + 1,
                alpha=min(1.0, max(0.0, counts.alpha(mode))),
                domain=tag,
                mode=mode,
                positions=counts.pooled(),
                tv=tuple(round(float(min(1.0, max(0.0, v))), 5) for v in kept),
                samples=counts.positions,
                by_lookahead=counts.by_candidates(),
            )
        )
        if upper == target:
            rounds = sum(sum(row) for row in counts.proposed)
            proposals.append(ProposalProfile(0, counts.pmfs(), tag, mode, rounds))
    order = {"greedy": 0, "sampling": 1}
    proposals.sort(key=lambda p: (order[p.mode], str(p.domain)))
    return pairs, proposals


def measure_lookup_passes(
    lookup: NgramDrafter,
    contexts: Sequence[Sequence[int]],
    settings: ProfileSettings,
    vocab_size: int,
    clock: Callable[[], float] = time.perf_counter,
    device: torch.device | str = "cpu",
) -> PassTimeTable:
    """Seconds of one lookup pass by rows: per row ``propose(context, draft_positions)`` and the
    point-mass ``q`` of every proposed token (what the executor's lookup pass does), on real
    contexts (prompt + half its target continuation), rows cycling over them; ``warmup`` passes
    unmeasured, then the median (or min) of ``repeats``."""
    if not contexts:
        raise ValueError("timing the lookup needs at least one context")
    limit = settings.draft_positions
    seconds = []
    for batch in settings.batch_sizes:
        rows = [contexts[i % len(contexts)] for i in range(batch)]
        timings = []
        for rep in range(settings.warmup + settings.repeats):
            start = clock()
            for row in rows:
                for token in lookup.propose(row, limit):
                    point_mass(token, vocab_size, device)
            elapsed = clock() - start
            if rep >= settings.warmup:
                timings.append(elapsed)
        summary = min(timings) if settings.statistic == "min" else statistics.median(timings)
        seconds.append((max(summary, 1e-9),))
    context = int(round(statistics.mean(len(c) for c in contexts)))
    return PassTimeTable(settings.batch_sizes, (1,), tuple(seconds), context)


def pair_profiles(
    series: Mapping[tuple[str, str, int, int], PairSeries], settings: ProfileSettings
) -> list[PairProfile]:
    """Summarise the series per (pair, domain, mode), plus an all-domains (``None``) entry."""
    grouped: dict[tuple[str, str | None, int, int], PairSeries] = {}
    for (mode, tag, lower, upper), entry in sorted(series.items()):
        for key in ((mode, tag, lower, upper), (mode, None, lower, upper)):
            target = grouped.setdefault(key, PairSeries())
            target.match.extend(entry.match)
            target.tv.extend(entry.tv)
    rng = np.random.default_rng(settings.seed)
    out = []
    for (mode, domain, lower, upper), entry in sorted(
        grouped.items(), key=lambda kv: (kv[0][2], kv[0][3], str(kv[0][1]), kv[0][0])
    ):
        match = np.concatenate(entry.match)
        tv = np.concatenate(entry.tv)
        by_lookahead: tuple[tuple[float, ...], ...] = ()
        if mode == "greedy":
            alpha, positions = visited_acceptance(entry.match, settings.draft_positions)
            alpha = float(match.mean()) if alpha != alpha else alpha  # NaN: series shorter than one round
            by_lookahead = lookahead_acceptance(entry.match, settings.draft_positions)
        else:
            alpha = float(1.0 - tv.mean())
            positions = conditional_acceptance([1.0 - t for t in entry.tv], settings.draft_positions)
        kept = tv if len(tv) <= TV_SAMPLES_KEPT else rng.choice(tv, TV_SAMPLES_KEPT, replace=False)
        out.append(
            PairProfile(
                lower=lower,
                upper=upper,
                alpha=min(1.0, max(0.0, alpha)),
                domain=domain,
                mode=mode,
                positions=positions,
                tv=tuple(round(float(min(1.0, max(0.0, v))), 5) for v in kept),
                samples=int(len(tv)),
                by_lookahead=by_lookahead,
            )
        )
    return out


def machine_description() -> dict[str, Any]:
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def profile_models(
    names: Sequence[str],
    models: Sequence[torch.nn.Module],
    prompts_by_domain: Mapping[str, Sequence[Sequence[int]]],
    settings: ProfileSettings,
    vocab_size: int,
    extra_meta: Mapping[str, Any] | None = None,
    lean: bool = False,
    lookup: NgramDrafter | None = None,
) -> WorldProfile:
    """Measure ``models`` (cheapest first, target last) and build the world profile.

    ``lean`` times passes on the lean forward path (:mod:`backend.lean`), the one an executor
    built with ``lean=True`` runs; the profile's ``meta.forward_path`` says which.  ``lookup``
    adds the model-free drafter as member 0 (the networks move up by one): its lookup-pass
    table (:func:`measure_lookup_passes`), its ``(lookup, upper)`` pairs and proposal pmfs from
    walks on the same continuations (:func:`walk_lookup`).
    """
    if len(names) != len(models) or not models:
        raise ValueError(f"profile needs one name per model, got {len(names)} names for {len(models)} models")
    started = time.perf_counter()
    grids = [measure_pass_times(m, settings, vocab_size, name, lean=lean) for name, m in zip(names, models)]
    series: dict[tuple[str, str, int, int], PairSeries] = {}
    walks: dict[tuple[str, str, int], LookupWalk] = {}
    contexts: list[list[int]] = []
    if len(models) > 1 or lookup is not None:
        for scored in scored_continuations(models, prompts_by_domain, settings):
            pair_series(scored, series)
            if lookup is not None:
                lookup_walks(lookup, scored, settings.draft_positions, walks)
                mode, _, prompt, continuation, _ = scored
                if mode == "greedy":
                    contexts.append(prompt + continuation[: len(continuation) // 2])
    pairs = pair_profiles(series, settings) if series else []
    proposals: list[ProposalProfile] = []
    if lookup is not None:
        pairs = [dataclasses.replace(p, lower=p.lower + 1, upper=p.upper + 1) for p in pairs]
        lookup_pairs, proposals = lookup_profiles(
            walks, len(models) - 1, settings.draft_positions, settings.seed
        )
        pairs = lookup_pairs + pairs
    machine = machine_description()
    device = model_device(models[-1])
    where = (
        f"{device.type}: {machine['cpu']} ({machine['cpu_count']} cores, {machine['torch_threads']} threads)"
    )
    profiles = []
    grid_meta: dict[str, Any] = {}
    if lookup is not None:
        table = measure_lookup_passes(lookup, contexts, settings, vocab_size, device=device)
        profiles.append(ModelProfile(lookup.name, 0.0, table, kind="ngram"))
        grid_meta[lookup.name] = {
            "contexts": [table.context],
            "batch_sizes": list(table.batch_sizes),
            "tokens": list(table.tokens),
            "seconds": [[list(row) for row in table.seconds]],
        }
    for name, model, grid in zip(names, models, grids):
        params = float(sum(p.numel() for p in model.parameters()))
        profiles.append(ModelProfile(name, params, grid.table_at(len(grid.contexts) // 2)))
    grid_meta.update(
        {
            name: {
                "contexts": list(g.contexts),
                "batch_sizes": list(g.batch_sizes),
                "tokens": list(g.tokens),
                "seconds": g.seconds,
            }
            for name, g in zip(names, grids)
        }
    )
    meta: dict[str, Any] = {
        "machine": machine,
        "settings": asdict(settings),
        "dtype": str(next(models[-1].parameters()).dtype),
        "forward_path": "lean" if lean else "huggingface",
        "prompts": {domain: len(p) for domain, p in prompts_by_domain.items()},
        "pass_time_grid": grid_meta,
        "acceptance_context": "target continuations (greedy for greedy mode, T=1 samples for sampling mode); "
        "greedy: rounds walked as the executor runs them (exact for pairs verified by the target); "
        "sampling and intermediate verifiers: positions beyond the first are an approximation",
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    if lookup is not None:
        meta["lookup"] = {
            "name": lookup.name,
            "min_n": lookup.min_n,
            "max_n": lookup.max_n,
            "walk": "lookup > upper greedy rounds along the target's continuation (exact for upper = target; "
            "intermediate uppers: their argmax along it); sampling: p_upper(proposal) along the sampled "
            "continuation, expected counts; the pmf of tokens proposed from the walks verified by the target",
        }
    meta.update(extra_meta or {})
    return WorldProfile(where, tuple(profiles), tuple(pairs), meta, tuple(proposals))


def profile_ladder(
    ladder: Ladder,
    prompts_by_domain: Mapping[str, Sequence[Sequence[int]]],
    settings: ProfileSettings,
    extra_meta: Mapping[str, Any] | None = None,
    lean: bool = False,
    calibrate_in_run: bool = False,
) -> WorldProfile:
    """:func:`profile_models` on a loaded :class:`backend.ladder.Ladder`.

    ``calibrate_in_run`` then serves a short calibration workload through the engine
    (:mod:`backend.profile_calibration`) and stores ``factor_m · V_m`` as the pass-time tables
    and the engine's time outside passes as ``meta["loop_overhead"]``, so the simulator charges
    what passes cost inside the engine's loop rather than in isolation.
    """
    profile = profile_models(
        ladder.names,
        ladder.models,
        prompts_by_domain,
        settings,
        ladder.vocab_size,
        extra_meta,
        lean,
        ladder.lookup,
    )
    if not calibrate_in_run:
        return profile
    from backend.profile_calibration import apply_calibration, measure_in_run

    batch = max(settings.batch_sizes)
    # twice as many requests as slots (admission and ragged batches happen), domains interleaved
    by_domain = [prompts_by_domain[domain] for domain in sorted(prompts_by_domain)]
    mixed = [list(p) for group in itertools.zip_longest(*by_domain) for p in group if p is not None]
    tables = [(m.pass_time.seconds, m.pass_time.batch_sizes, m.pass_time.tokens) for m in profile.models]
    requests = mixed[: 2 * batch]
    calibration = measure_in_run(ladder, tables, requests, slots=batch, lean=lean, seed=settings.seed)
    return apply_calibration(profile, calibration)
