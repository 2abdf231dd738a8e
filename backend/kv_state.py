"""Per-model KV state for many sequences: extend, rollback, catch-up, ragged batched passes.

Each sequence keeps, per model, the token ids whose keys/values are cached and the per-layer
``(keys, values)`` tensors ``[1, kv_heads, cached, head_dim]``.  The one operation is
:meth:`ModelKV.score`: "give me the logits of the last ``n`` positions of this token sequence".
It works out by itself what to do with the cache:

* **extend** -- the cache holds a prefix of the sequence: feed only the new tokens;
* **rollback** -- the cache holds tokens the sequence no longer has (rejected drafts): keep the
  longest common prefix, i.e. crop by slicing, which is exact (the keys/values of a prefix do
  not depend on what came after it);
* **catch-up** -- a model that sat out rounds lags the committed tokens: the missing tokens are
  fed together with the new ones in the same pass (one catch-up prefill, not one pass per token).

Invariant: after a pass the cache holds every fed token; the positions whose logits are asked
for are always fed, so at least the last ``n`` tokens are (re)computed.

Ragged batches: sequences in one pass differ in cached length and in fed length.  We use
**padded batches with explicit position ids** rather than splitting into equal-shape groups:
splitting turns one pass into as many passes as there are distinct shapes, and after a round
with different acceptance lengths almost every sequence has its own shape, so splitting would
lose batching exactly where it matters.  The past is left-padded to the longest cached length
(pad keys/values are zeros and masked out by the attention mask), the fed tokens are
right-padded to the longest feed (pads come after the real tokens, so causal attention keeps
real queries from seeing them), and each row gets ``position_ids = cached + arange``, so rotary
positions are the sequence's own.  Masked scores get the dtype's minimum and their softmax
weight underflows to exactly 0, so a padded row equals the unpadded pass up to floating-point
reassociation (measured: < 1e-12 in float64, < 1e-5 in float32).  Rows are sliced back out of
the batch cache after the pass.  When every row has the same shape no mask is built at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from backend.hf_compat import HFModel, KVLayers, forward_with_cache


class ScoreRequest(NamedTuple):
    """Logits wanted for sequence ``seq_id``: after each of the last ``n_logits`` prefixes of ``tokens``.

    Row ``i`` of the answer is the next-token distribution after ``tokens[: len(tokens) - n_logits + 1 + i]``.
    """

    seq_id: int
    tokens: Sequence[int]
    n_logits: int
    keep: int | None = None
    """Cached positions to keep, as the serving loop counted them (checked against the ids);
    None: the longest common prefix of the cache and ``tokens``."""


class ScoreResult(NamedTuple):
    logits: torch.Tensor
    """``[n_logits, vocab]`` in float32 (float64 for a float64 model)."""
    fed: int
    """Tokens this sequence fed in the pass (new tokens plus catch-up)."""


@dataclass
class _SequenceCache:
    tokens: list[int] = field(default_factory=list)
    layers: KVLayers | None = None


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    limit = min(len(a), len(b))
    index = 0
    while index < limit and a[index] == b[index]:
        index += 1
    return index


def kept_positions(cached: list[int], request: ScoreRequest) -> int:
    """How many cached positions a pass keeps (the rest of ``request.tokens`` is fed).

    The serving loop's ``keep`` is taken as given after checking that the cache really holds
    those token ids (a mismatch is a bookkeeping bug, never silently recomputed); without
    one, the longest common prefix.  The positions whose logits are asked for are always fed.
    """
    limit = len(request.tokens) - request.n_logits
    keep = request.keep
    if keep is None:
        return min(common_prefix_length(cached, request.tokens), limit)
    if not 0 <= keep <= min(limit, len(cached)) or cached[:keep] != list(request.tokens[:keep]):
        raise RuntimeError(
            f"sequence {request.seq_id}: the serving loop keeps {keep} cached positions, but the cache "
            f"holds {common_prefix_length(cached, request.tokens)} matching of {len(cached)} "
            f"(feeding {len(request.tokens)} with {request.n_logits} logits rows)"
        )
    return keep


class ModelKV:
    """The KV caches of one model for every sequence in flight."""

    def __init__(self, model: HFModel, vocab_size: int | None = None) -> None:
        self.model = model
        self.vocab_size = int(vocab_size or model.config.vocab_size)
        parameter = next(model.parameters())
        self.device = parameter.device
        self.logits_dtype = torch.float64 if parameter.dtype == torch.float64 else torch.float32
        self._caches: dict[int, _SequenceCache] = {}

    def __contains__(self, seq_id: int) -> bool:
        return seq_id in self._caches

    def cached_tokens(self, seq_id: int) -> list[int]:
        """Token ids whose keys/values this model holds for ``seq_id`` (empty if none)."""
        cache = self._caches.get(seq_id)
        return list(cache.tokens) if cache else []

    def rollback(self, seq_id: int, length: int) -> None:
        """Crop the cache of ``seq_id`` to its first ``length`` tokens (no-op if already shorter)."""
        cache = self._caches.get(seq_id)
        if cache is None or len(cache.tokens) <= length:
            return
        cache.tokens = cache.tokens[:length]
        if cache.layers is not None:
            cache.layers = [(k[:, :, :length], v[:, :, :length]) for k, v in cache.layers]
        if length == 0:
            cache.layers = None

    def remove(self, seq_id: int) -> None:
        self._caches.pop(seq_id, None)

    @torch.inference_mode()
    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """One batched forward pass for all ``requests`` (distinct sequences); see module docstring."""
        if not requests:
            return []
        if len({r.seq_id for r in requests}) != len(requests):
            raise ValueError("ModelKV.score: a sequence may appear only once per pass")
        caches, keeps = [], []
        for request in requests:
            if not 1 <= request.n_logits <= len(request.tokens):
                raise ValueError(
                    f"sequence {request.seq_id}: n_logits={request.n_logits} "
                    f"must be in 1..{len(request.tokens)}"
                )
            cache = self._caches.setdefault(request.seq_id, _SequenceCache())
            keep = kept_positions(cache.tokens, request)
            self.rollback(request.seq_id, keep)
            caches.append(cache)
            keeps.append(keep)
        feeds = [len(r.tokens) - keep for r, keep in zip(requests, keeps)]
        past_max, feed_max = max(keeps), max(feeds)
        keep_logits = feed_max - min(f - r.n_logits for f, r in zip(feeds, requests))
        uniform = len(set(keeps)) == 1 and len(set(feeds)) == 1

        input_ids = torch.zeros((len(requests), feed_max), dtype=torch.long)
        position_ids = torch.zeros((len(requests), feed_max), dtype=torch.long)
        mask = torch.zeros((len(requests), past_max + feed_max), dtype=torch.long)
        for row, (request, keep, fed) in enumerate(zip(requests, keeps, feeds)):
            input_ids[row, :fed] = torch.tensor(request.tokens[keep:], dtype=torch.long)
            position_ids[row] = torch.arange(keep, keep + feed_max)
            mask[row, past_max - keep : past_max + fed] = 1
        past = self._batch_past(caches, keeps, past_max)
        logits, layers = forward_with_cache(
            self.model,
            input_ids.to(self.device),
            past,
            None if uniform else mask.to(self.device),
            position_ids.to(self.device),
            keep_logits,
        )
        logits = logits[..., : self.vocab_size].to(self.logits_dtype)
        offset = feed_max - keep_logits
        results = []
        for row, (request, cache, keep, fed) in enumerate(zip(requests, caches, keeps, feeds)):
            start = past_max - keep
            end = start + keep + fed
            # a batched pass's rows are copied out: a view would keep the whole batch tensor alive
            # for as long as any one of its sequences lives (memory x batch size)
            copy = len(requests) > 1
            cache.layers = [
                (k[row : row + 1, :, start:end].clone(), v[row : row + 1, :, start:end].clone())
                if copy
                else (k[:, :, start:end], v[:, :, start:end])
                for k, v in layers
            ]
            cache.tokens = list(request.tokens)
            row_logits = logits[row, fed - request.n_logits - offset : fed - offset]
            results.append(ScoreResult(row_logits, fed))
        return results

    def _batch_past(self, caches: list[_SequenceCache], keeps: list[int], past_max: int) -> KVLayers | None:
        """Left-pad every row's cached keys/values to ``past_max`` and stack them into one batch."""
        if past_max == 0:
            return None
        if len(caches) == 1:
            return caches[0].layers
        reference = next(c.layers for c in caches if c.layers is not None)
        batch: KVLayers = []
        for layer_index, (ref_k, ref_v) in enumerate(reference):
            shape_k = (len(caches), ref_k.shape[1], past_max, ref_k.shape[3])
            shape_v = (len(caches), ref_v.shape[1], past_max, ref_v.shape[3])
            keys = torch.zeros(shape_k, dtype=ref_k.dtype, device=ref_k.device)
            values = torch.zeros(shape_v, dtype=ref_v.dtype, device=ref_v.device)
            for row, (cache, keep) in enumerate(zip(caches, keeps)):
                if keep and cache.layers is not None:
                    k, v = cache.layers[layer_index]
                    keys[row, :, past_max - keep :] = k[0, :, :keep]
                    values[row, :, past_max - keep :] = v[0, :, :keep]
            batch.append((keys, values))
        return batch
