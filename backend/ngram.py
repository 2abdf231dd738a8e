"""A model-free drafter: propose the continuation of the longest recent n-gram match.

Prompt lookup (Saxena 2023; Hugging Face's ``prompt_lookup_num_tokens``, vLLM's n-gram
proposer) drafts with no weights and no KV cache.  Given a request's tokens ``t_0 .. t_{L-1}``
(prompt, committed output and the round's tentative tokens), find the largest ``n`` in
``min_n .. max_n`` such that the suffix ``t_{L-n} .. t_{L-1}`` occurred earlier, ending at some
``i < L - 1``, and propose the tokens that followed it, ``t_{i+1} .. t_{i+limit}`` (fewer when the
context ends first).  Among occurrences of that length the most recent one with the most
continuation (up to ``limit``) wins.  No match: no proposal.

In the ladder it is a member like any other (``LadderInfo.model_free``): it may only be a
chain's first member, since it has no distribution to verify with.  Its proposal distribution
is a point mass at the proposed token, so the lossless rule of :mod:`backend.sampling` applies
with ``q = onehot(x)``: accept with probability ``p(x)``, resample from ``norm(p - onehot(x))⁺``
(``p`` with ``x`` removed) on a rejection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

NGRAM_NAME = "ngram"


@dataclass(frozen=True)
class NgramDrafter:
    """Longest-suffix-match lookup in the request's own context.

    ``min_n`` / ``max_n``: the n-gram sizes tried, longest first (a longer match predicts
    better; ``min_n = 1`` matches single tokens, which proposes often and is often wrong).
    """

    min_n: int = 2
    max_n: int = 4
    name: str = NGRAM_NAME

    def __post_init__(self) -> None:
        if not 1 <= self.min_n <= self.max_n:
            raise ValueError(
                f"NgramDrafter needs 1 <= min_n <= max_n, got min_n={self.min_n}, max_n={self.max_n}"
            )

    @classmethod
    def parse(cls, text: str) -> NgramDrafter:
        """``"MIN:MAX"`` (or ``"N"``: MIN = MAX = N), as the command line writes it."""
        low, colon, high = str(text).partition(":")
        try:
            return cls(int(low), int(high) if colon else int(low))
        except ValueError:
            raise ValueError(
                f"expected MIN:MAX n-gram sizes with 1 <= MIN <= MAX, e.g. 2:4 (got {text!r})"
            ) from None

    def propose(self, tokens: Sequence[int], limit: int) -> list[int]:
        """Up to ``limit`` tokens continuing ``tokens``; ``[]`` when no n-gram of ``min_n..max_n`` matches."""
        length = len(tokens)
        if limit < 1 or length < self.min_n + 1:
            return []
        last = tokens[-1]
        longest = min(self.max_n, length - 1)
        best_end = -1
        best = (self.min_n - 1, 0)  # (match length, continuation available up to limit)
        # earlier occurrences of the last token, most recent first: keep the longest match,
        # and among equally long ones the most recent with the most continuation (a match just
        # before the end of a repetitive loop has little left to propose)
        for end in range(length - 2, -1, -1):
            if tokens[end] != last:
                continue
            n = 1
            while n < longest and end - n >= 0 and tokens[end - n] == tokens[length - 1 - n]:
                n += 1
            score = (n, min(limit, length - 1 - end))
            if n >= self.min_n and score > best:
                best, best_end = score, end
                if score == (longest, limit):
                    break
        if best_end < 0:
            return []
        return list(tokens[best_end + 1 : best_end + 1 + limit])


def point_mass(token: int, vocab_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The drafter's proposal distribution at a position: ``onehot(token)`` in float64, on ``device``
    (the verifier's, so that the ratio test and the TV estimate never mix devices)."""
    q = torch.zeros(vocab_size, dtype=torch.float64, device=device)
    q[token] = 1.0
    return q
