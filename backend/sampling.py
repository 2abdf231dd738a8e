"""The lossless verification rule of docs/design.md §1 as small pure functions.

Every level turns its logits into a distribution with the *same* processing
(:func:`processed_probs`: temperature, then top-k, then top-p), so "the target's distribution"
is well defined and a chain reproduces it exactly.

Sampling mode, one level verifying candidates ``x_1 .. x_n`` that the level below emitted, with
``p_i`` this level's distribution at candidate ``i``'s position and ``q_i`` the distribution of
the model that **produced** ``x_i`` (Leviathan et al. 2023, Chen et al. 2023, generalised to
chains):

* accept ``x_i`` with probability ``min(1, p_i(x_i) / q_i(x_i))`` -- drawn as ``u * q < p`` with
  ``u ~ U[0, 1)``;
* on the first rejection, emit a token from the residual ``norm(max(0, p_i - q_i))`` and stop;
* if all ``n`` are accepted, emit a bonus token from ``p_{n+1}``.

The emitted token is then distributed exactly as ``p_i``:
``P(x) = q(x) min(1, p(x)/q(x)) + (1 - Σ_y min(p(y), q(y))) · (p(x) - q(x))⁺ / Σ_y (p(y) - q(y))⁺
= min(p, q)(x) + (p - q)⁺(x) = p(x)``, since ``Σ (p - q)⁺ = 1 - Σ min(p, q) = TV(p, q)``.

Greedy mode (temperature 0): accept while the candidate equals this level's argmax; emit the
argmax at the first mismatch (or after the last candidate).

The two known wrong variants live here too, only so the tests can show they fail:
``residual=False`` resamples from the full ``p`` after a rejection (gives
``min(p, q) + TV·p ≠ p``); handing up the drafter's ``q`` is an executor option
(:class:`backend.executor.VerifyRule`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings applied identically at every level.

    ``temperature == 0`` is greedy decoding.  ``top_k == 0`` and ``top_p == 1`` switch those
    filters off.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"SamplingConfig.temperature must be >= 0, got {self.temperature}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"SamplingConfig.top_k must be an int >= 0 (0 = off), got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def processed_probs(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Rows of ``logits`` -> probabilities after temperature, top-k and top-p (float64).

    Greedy configs get the plain softmax (temperature 1): it is what TV distances are measured
    on in greedy mode, while the decisions use the argmax.
    """
    scores = logits.to(torch.float64)
    if config.greedy:
        return torch.softmax(scores, dim=-1)
    scores = scores / config.temperature
    vocab = scores.shape[-1]
    if 0 < config.top_k < vocab:
        kth = torch.topk(scores, config.top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if config.top_p < 1:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        drop_sorted = mass_before >= config.top_p  # keep the smallest prefix reaching top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def sample_index(probs: torch.Tensor, uniform: float) -> int:
    """Inverse-CDF draw from one probability row with a given ``uniform`` in [0, 1).

    Returns the first index whose cumulative mass exceeds ``uniform · total``, which always has
    positive probability.
    """
    cdf = torch.cumsum(probs.to(torch.float64), dim=0)
    point = torch.tensor([uniform * float(cdf[-1])], dtype=torch.float64, device=cdf.device)
    index = int(torch.searchsorted(cdf, point, right=True).item())
    if index >= probs.shape[0]:  # uniform * total rounded up to total
        index = int(torch.nonzero(probs > 0)[-1].item())
    return index


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``norm(max(0, p - q))``; falls back to ``p`` when the residual mass is zero (p == q)."""
    excess = torch.clamp(p - q, min=0.0)
    mass = float(excess.sum())
    return excess / mass if mass > 0 else p


def total_variation(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``½ Σ_v |p(v) - q(v)|`` along the last dimension."""
    return 0.5 * torch.abs(p - q).sum(dim=-1)


class Verdict(NamedTuple):
    accepted: int
    """Candidates accepted (a prefix)."""
    token: int
    """The token emitted after them: residual sample on rejection, bonus otherwise."""


def verify_greedy(logits: torch.Tensor, candidates: list[int]) -> Verdict:
    """Accept while ``candidate == argmax``; ``logits`` has ``len(candidates) + 1`` rows."""
    argmax = torch.argmax(logits, dim=-1).tolist()
    for index, token in enumerate(candidates):
        if token != argmax[index]:
            return Verdict(index, argmax[index])
    return Verdict(len(candidates), argmax[len(candidates)])


def verify_sampled(
    p: torch.Tensor,
    q_rows: list[torch.Tensor],
    candidates: list[int],
    uniforms: list[float],
    residual_on_reject: bool = True,
) -> Verdict:
    """The lossless rule for one level; ``p`` has ``len(candidates) + 1`` rows.

    ``q_rows[i]`` is the producer's distribution at candidate ``i``; ``uniforms`` holds
    ``len(candidates) + 1`` independent U[0, 1) draws (one per acceptance test, one for the
    emitted token).  ``residual_on_reject=False`` is the deliberately wrong variant.
    """
    for index, token in enumerate(candidates):
        p_x, q_x = float(p[index, token]), float(q_rows[index][token])
        if not uniforms[index] * q_x < p_x:
            source = residual(p[index], q_rows[index]) if residual_on_reject else p[index]
            return Verdict(index, sample_index(source, uniforms[-1]))
    return Verdict(len(candidates), sample_index(p[len(candidates)], uniforms[-1]))
