"""Acceptance: one token-level latent model that every level of a chain reads.

**The model.**  Every position ``i`` of a round's output stream gets one latent difficulty
``Z_i ~ N(0, 1)``, drawn once and shared by every model that scores that position.  When
model ``b`` verifies a candidate at position ``i`` emitted by model ``a`` it draws fresh
noise ``E ~ N(0, 1)`` and accepts iff::

    sqrt(rho) Z_i + sqrt(1 - rho) E  <  Phi^{-1}(alpha_ab(domain, t))

so the *marginal* probability that ``b`` accepts a token of ``a`` is exactly
``alpha_ab`` -- the per-pair acceptance the cost model and the policies speak of -- and
``rho`` (``correlation``) sets how much the levels agree about which positions are hard.
With ``rho = 0`` every verdict is an independent ``Bernoulli(alpha)`` (the i.i.d. world of
:mod:`policies.cost_model`); with ``rho > 0`` a token the middle model accepted sits at an
easier-than-average position, so the target accepts it more often than ``alpha`` and the
middle model's correction token (at a position the middle found hard) less often: the
target's view of what passed the middle follows from the same draw, never from
independent coin flips per level.

**Where alpha_ab comes from.**  ``alpha[(a, b)]`` in the config, else a ladder default
``0.95 - 0.035 log2(params_b / params_a)`` (68M -> 70B ~ 0.60, 8B -> 70B ~ 0.84).  Then, in
logit space, the request's domain shift (``domains``: e.g. code +0.5), a seeded sinusoidal
drift ``amplitude * sin(2 pi t / period + phase_ab)``, and finally any active override
(``overrides``: a pair / domain / time window pinned to a value, e.g. a useless middle
model).

**TV samples.**  With lossless sampling ``alpha = 1 - E[TV]``; each scored position yields a
sample ``TV = min(1, (1 - alpha) X)``, ``X ~ Exp(1)`` (mean ``1 - alpha`` up to the clip).

**Empirical mode.**  With a world profile, the threshold for the ``k``-th candidate of a
verify pass of ``K`` candidates is ``Phi^{-1}(by_lookahead[K-1][k])`` (the profiled
P(accept k | 0..k-1 accepted) in rounds that draft ``K``; longer drafts than profiled use the
longest row, and its last value repeats), or ``Phi^{-1}(positions[k])`` (pooled over
lookaheads) for a profile without per-lookahead rows.  TV samples are replayed from the
profile's samples.

**Model-free members** (an n-gram prompt lookup, :class:`LookupSpec`).  A lookup call allowed
``K`` tokens proposes ``n = 0 .. K`` of them: :meth:`AcceptanceModel.propose` draws ``n``
(seeded, one exponential of the :class:`RandomPool` per lookup row, so runs repeat bit for bit)
from the profiled pmf of the request's domain (``WorldProfile.proposal``), else from the
config's per-domain match probability (a match proposes all ``K``).  Its ``n`` candidates are
then verified like any others; the acceptance of its tokens by ``upper`` is the config's
per-domain ``accept`` (then domain shift, drift and overrides as above), or the profile's
``(lookup, upper)`` pair, whose per-lookahead rows are keyed by the number of candidates
verified (= proposed), the row :meth:`AcceptanceModel.verify` reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy.special import ndtri

from sim.config import ANY_DOMAIN
from traces.world_profile import PairProfile, ProposalProfile, WorldProfile


class AlphaOverride(NamedTuple):
    """Pin ``alpha(lower, upper)`` for ``domain`` (None = all) during ``[start, end)``."""

    lower: int
    upper: int
    alpha: float
    domain: str | None = None
    start: float = 0.0
    end: float = math.inf


class LookupSpec(NamedTuple):
    """A model-free member's proposals and the acceptance of its tokens.

    ``propose[domain]``: P(the lookup finds a match; it then proposes the whole limit),
    ``accept[domain]``: the acceptance of its tokens by any upper member (``"*"``: domains not
    named).  ``profile``: measured proposals (preferred) and ``(lookup, upper)`` pairs, used
    where the maps are empty.
    """

    propose: Mapping[str, float]
    accept: Mapping[str, float]
    profile: WorldProfile | None = None


def _per_domain(values: Mapping[str, float], domain: str | None) -> float | None:
    value = values.get(domain) if domain is not None else None
    return value if value is not None else values.get(ANY_DOMAIN)


def default_alpha(params_lower: float, params_upper: float) -> float:
    """Ladder prior: ``0.95 - 0.035 log2(ratio)``, clipped to ``[0.05, 0.99]``."""
    value = 0.95 - 0.035 * math.log2(params_upper / params_lower)
    return min(0.99, max(0.05, value))


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1.0 - 1e-9)
    return math.log(p / (1.0 - p))


class RandomPool:
    """Seeded standard normals and exponentials, drawn by numpy in chunks, read as floats.

    Callers read ``normals[n]`` / ``exponentials[e]`` and advance the cursors themselves
    after :meth:`reserve` guarantees enough values remain (a refill starts a fresh chunk,
    so the stream stays a deterministic function of the seed and the call sequence).
    ``entropy`` seeds the two streams as ``[*entropy, 1]`` (verdicts) and ``[*entropy, 2]``
    (TV samples, proposals); the second is made on its first use.  Chunks start at ``chunk``
    values and double on each refill up to :attr:`CHUNK`, so a short request's stream costs
    a few hundred draws, not 65,536.
    """

    CHUNK = 1 << 16

    def __init__(self, entropy: int | Sequence[int], chunk: int = CHUNK) -> None:
        self._entropy = [entropy] if isinstance(entropy, int) else list(entropy)
        self._normal_rng = np.random.default_rng([*self._entropy, 1])  # independent of TV sampling
        self._exponential_rng: np.random.Generator | None = None
        self._normal_chunk = self._exponential_chunk = min(chunk, self.CHUNK)
        self.normals: list[float] = []
        self.exponentials: list[float] = []
        self.n = 0
        self.e = 0
        self.normals_size = self.exponentials_size = 0  # buffer lengths (a fast "enough left?" test)

    def reserve(self, normals: int, exponentials: int) -> None:
        if self.n + normals > len(self.normals):
            size = max(self._normal_chunk, normals)
            self._normal_chunk = min(2 * self._normal_chunk, self.CHUNK)
            self.normals = self._normal_rng.standard_normal(size).tolist()
            self.n = 0
        if self.e + exponentials > len(self.exponentials):
            if self._exponential_rng is None:
                self._exponential_rng = np.random.default_rng([*self._entropy, 2])
            size = max(self._exponential_chunk, exponentials)
            self._exponential_chunk = min(2 * self._exponential_chunk, self.CHUNK)
            self.exponentials = self._exponential_rng.standard_exponential(size).tolist()
            self.e = 0
        self.normals_size, self.exponentials_size = len(self.normals), len(self.exponentials)


class AcceptanceModel:
    """Per-pair, per-domain, time-varying acceptance with level-consistent verdicts."""

    def __init__(
        self,
        params: Sequence[float],
        alpha: Mapping[tuple[int, int], float] | None = None,
        *,
        correlation: float = 0.5,
        domains: Mapping[str, float] | None = None,
        drift_amplitude: float = 0.0,
        drift_period: float = 600.0,
        overrides: Sequence[AlphaOverride] = (),
        profile: WorldProfile | None = None,
        seed: int = 0,
        lookups: Mapping[int, LookupSpec] | None = None,
    ) -> None:
        size = len(params)
        self.lookups = dict(lookups or {})
        for member in self.lookups:
            if not 0 <= member < size - 1:
                raise ValueError(
                    f"model-free member {member}: need 0 <= member < {size - 1} (not the target)"
                )
        if not 0.0 <= correlation <= 1.0:
            raise ValueError(f"acceptance correlation must be in [0, 1], got {correlation}")
        self.size = size
        self.base = [[1.0] * size for _ in range(size)]
        for lower in range(size):
            if lower in self.lookups:  # per domain: _lookup_alpha, unless pinned below
                continue
            for upper in range(lower + 1, size):
                self.base[lower][upper] = default_alpha(params[lower], params[upper])
        self._pinned = set(alpha or {})
        for (lower, upper), value in (alpha or {}).items():
            if not (0 <= lower < upper < size) or not 0.0 <= value <= 1.0:
                raise ValueError(f"alpha[{lower}>{upper}] = {value}: need 0 <= lower < upper < {size}, 0..1")
            self.base[lower][upper] = value
        for o in overrides:
            if not (0 <= o.lower < o.upper < size) or not 0.0 <= o.alpha <= 1.0:
                raise ValueError(f"acceptance override {o}: need 0 <= lower < upper < {size}, alpha 0..1")
        self.domains = dict(domains or {})
        self.drift_amplitude = drift_amplitude
        self.drift_period = drift_period
        phases = np.random.default_rng([seed, 7]).uniform(0.0, 2.0 * math.pi, size * size).tolist()
        self.phase = [phases[i * size : (i + 1) * size] for i in range(size)]
        self.overrides = tuple(overrides)
        self.profile = profile
        self.shared = math.sqrt(correlation)
        self.own = math.sqrt(1.0 - correlation)
        self.correlation = correlation
        self.seed = seed
        self.pool = RandomPool(seed)  # draws of callers that bring no stream of their own
        self.static = drift_amplitude == 0.0 and not self.overrides
        # keyed by (lower, upper, domain, lookahead): the lookahead is 0 unless a profile gives
        # per-lookahead acceptance
        self._threshold_cache: dict[tuple[int, int, str | None, int], tuple[tuple[float, ...], float]] = {}
        self._empirical: dict[tuple[int, int, str | None], PairProfile | None] = {}
        self._proposal_cdf: dict[tuple[int, str | None, int], tuple[float, ...]] = {}

    # -- the truth -----------------------------------------------------------------------
    def alpha(self, lower: int, upper: int, domain: str | None, now: float) -> float:
        """The current marginal acceptance of ``lower``'s tokens by ``upper``."""
        for o in reversed(self.overrides):
            active = o.lower == lower and o.upper == upper and o.start <= now < o.end
            if active and (o.domain is None or o.domain == domain):
                return o.alpha
        if self.profile is not None:
            pair = self.profile.pair(lower, upper, domain)
            if pair is not None:
                return pair.alpha
        if self.lookups and lower in self.lookups and (lower, upper) not in self._pinned:
            base = self._lookup_alpha(self.lookups[lower], lower, upper, domain)
        else:
            base = self.base[lower][upper]
        shift = self.domains.get(domain, 0.0) if domain is not None else 0.0
        if self.drift_amplitude:
            phase = self.phase[lower][upper]
            shift += self.drift_amplitude * math.sin(2.0 * math.pi * now / self.drift_period + phase)
        if shift == 0.0 or base in (0.0, 1.0):
            return base
        return 1.0 / (1.0 + math.exp(-(_logit(base) + shift)))

    @staticmethod
    def _lookup_alpha(spec: LookupSpec, lower: int, upper: int, domain: str | None) -> float:
        value = _per_domain(spec.accept, domain)
        if value is not None:
            return value
        pair = spec.profile.pair(lower, upper, domain) if spec.profile is not None else None
        if pair is None:
            raise ValueError(
                f"no acceptance for model-free member {lower}'s tokens by member {upper} on domain "
                f"{domain!r}: give its config an 'accept' entry or profile the ladder with its lookup"
            )
        return pair.alpha

    # -- a model-free member's proposals --------------------------------------------------
    def stream(self, request_id: int) -> RandomPool:
        """The draws of one request: a stream of its own, seeded by the world's seed and its id.

        Common random numbers: a request that takes the same routes under two policies draws
        the same verdicts, whatever the other requests do, so a comparison of policies on one
        seed measures the policies, not which request drew a lucky stream.
        """
        return RandomPool([self.seed, 3, request_id], chunk=256)

    def propose(self, member: int, domain: str | None, limit: int, pool: RandomPool | None = None) -> int:
        """How many of ``limit`` tokens model-free ``member`` proposes (one draw of ``pool``)."""
        key = (member, domain, limit)
        cdf = self._proposal_cdf.get(key)
        if cdf is None:
            cdf = self._proposal_cdf[key] = self._cumulative(member, domain, limit)
        if pool is None:
            pool = self.pool
        if pool.e >= pool.exponentials_size:
            pool.reserve(0, 1)
        uniform = math.exp(-pool.exponentials[pool.e])  # X ~ Exp(1): exp(-X) ~ U(0, 1)
        pool.e += 1
        for proposed, below in enumerate(cdf):
            if uniform < below:
                return proposed
        return len(cdf) - 1

    def _cumulative(self, member: int, domain: str | None, limit: int) -> tuple[float, ...]:
        spec = self.lookups.get(member)
        if spec is None:
            raise ValueError(f"member {member} is not model-free: it drafts, it does not look up")
        measured: ProposalProfile | None = None
        if spec.profile is not None:
            measured = spec.profile.proposal(member, domain)
        if measured is not None:
            pmf: Sequence[float] = measured.pmf(limit)
        else:
            rate = _per_domain(spec.propose, domain)
            if rate is None:
                raise ValueError(
                    f"no proposal statistics for model-free member {member} on domain {domain!r}: "
                    "give its config a 'propose' entry or profile the ladder with its lookup"
                )
            pmf = [1.0 - rate] + [0.0] * (limit - 1) + [rate]
        total, out = 0.0, []
        for value in pmf:
            total += value
            out.append(total)
        out[-1] = 1.0
        return tuple(out)

    def _limits(
        self, lower: int, upper: int, domain: str | None, now: float, lookahead: int = 0
    ) -> tuple[tuple[float, ...], float]:
        """Thresholds per candidate and the TV scale ``1 - alpha`` (cached when nothing varies in time)."""
        key = (lower, upper, domain, lookahead)
        if self.static:
            cached = self._threshold_cache.get(key)
            if cached is not None:
                return cached
        alpha = self.alpha(lower, upper, domain, now)
        pair = self._empirical_pair(lower, upper, domain) if self.profile is not None else None
        row = _acceptance_row(pair, lookahead) if pair is not None else ()
        if row and not self._overridden(lower, upper, domain, now):
            limits = tuple(float(ndtri(p)) for p in row)
        else:
            limits = (float(ndtri(alpha)),)
        result = (limits, 1.0 - alpha)
        if self.static:
            self._threshold_cache[key] = result
        return result

    def _overridden(self, lower: int, upper: int, domain: str | None, now: float) -> bool:
        return any(
            o.lower == lower and o.upper == upper and o.start <= now < o.end and o.domain in (None, domain)
            for o in self.overrides
        )

    def _empirical_pair(self, lower: int, upper: int, domain: str | None) -> PairProfile | None:
        key = (lower, upper, domain)
        if key not in self._empirical:
            profile = self.profile
            self._empirical[key] = profile.pair(lower, upper, domain) if profile is not None else None
        return self._empirical[key]

    # -- the draws ----------------------------------------------------------------------
    def verify(
        self,
        lower: int,
        upper: int,
        domain: str | None,
        now: float,
        latent: list[float],
        offset: int,
        candidates: int,
        tv_out: list[float] | None,
        pool: RandomPool | None = None,
    ) -> int:
        """Accepted prefix length of ``candidates`` at positions ``offset..``; TV samples appended.

        The draws come from ``pool`` (a request's :meth:`stream`), else the model's own.
        """
        lookahead = candidates if self.profile is not None else 0
        cached = self._threshold_cache.get((lower, upper, domain, lookahead)) if self.static else None
        limits, gap = cached if cached is not None else self._limits(lower, upper, domain, now, lookahead)
        if pool is None:
            pool = self.pool
        missing = offset + candidates - len(latent)
        need = candidates + missing if missing > 0 else candidates
        n = pool.n
        if n + need > pool.normals_size or (
            tv_out is not None and pool.e + candidates > pool.exponentials_size
        ):
            pool.reserve(need, candidates if tv_out is not None else 0)
            n = pool.n
        normals = pool.normals
        if missing > 0:
            latent.extend(normals[n : n + missing])
            n += missing
        shared, own = self.shared, self.own
        last = len(limits) - 1
        accepted = 0
        for k in range(candidates):
            limit = limits[k] if k < last else limits[last]
            verdict = shared * latent[offset + k] + own * normals[n]
            n += 1
            if verdict >= limit:
                break
            accepted += 1
        pool.n = n
        if tv_out is not None and candidates:
            if self.profile is not None:
                self._replay_tv(lower, upper, domain, gap, candidates, tv_out, pool)
            else:
                e = pool.e
                for x in pool.exponentials[e : e + candidates]:
                    value = gap * x
                    tv_out.append(value if value < 1.0 else 1.0)
                pool.e = e + candidates
        return accepted

    def _replay_tv(
        self,
        lower: int,
        upper: int,
        domain: str | None,
        gap: float,
        n: int,
        out: list[float],
        pool: RandomPool,
    ) -> None:
        """TV samples replayed from the profile (drawn uniformly), else the parametric draw."""
        empirical = self._empirical_pair(lower, upper, domain)
        samples = empirical.tv if empirical is not None else ()
        for x in pool.exponentials[pool.e : pool.e + n]:
            if samples:
                out.append(samples[int(x * 1e6) % len(samples)])
            else:
                out.append(min(1.0, gap * x))
        pool.e += n


def _acceptance_row(pair: PairProfile, lookahead: int) -> tuple[float, ...]:
    """The profiled ``P(accept k | 0..k-1)`` row for a verify of ``lookahead`` candidates."""
    rows = pair.by_lookahead
    if lookahead > 0 and rows:
        row = rows[min(lookahead, len(rows)) - 1]
        if row:
            return row
    return pair.positions
