"""A lean forward path for Llama-family weights: preallocated KV buffers, rollback = an integer.

The Hugging Face forward pays a fixed ~1 ms of Python per pass on a CPU (module hooks, mask
construction, cache objects) however small the model; for the small drafts of a ladder that
floor is the whole cost.  :class:`LeanKV` is a drop-in for :class:`backend.kv_state.ModelKV`
(same ``score`` / ``rollback`` / ``remove``) that runs the same weights (shared, not copied)
through a handful of tensor ops per layer, in the style of gpt-fast:

* every sequence owns a *slot* of a preallocated ``[slots, kv_heads, capacity, head_dim]``
  key and value buffer per layer; a token's keys/values are written at its absolute position;
* rollback is an integer: the sequence's length is reset and stale entries past it are never
  read, because the attention mask is causal *by absolute position*
  (``key_position <= query_position``) -- every position up to a query's is either cached and
  valid or written in the same pass;
* ragged batches need nothing special: each row feeds its own positions, right-padded; a pad
  writes garbage only past its own sequence's end, which causality hides and a later pass
  overwrites.

The arithmetic mirrors Hugging Face's Llama (RMSNorm in float32, rotary from the model's own
``inv_freq`` and ``attention_scaling``, SiLU-gated MLP, optional q/k/v/o and MLP biases as in
Qwen2), so the logits agree within float rounding; ``tests/test_backend_core_lean.py`` checks
atol 1e-4 in float32.  Supported: ``model_type`` in {llama, qwen2, mistral} without sliding
windows, ``hidden_act == "silu"``, static rotary types (default, linear, llama3, yarn) --
anything else is refused with the reason, and the Hugging Face path stays available.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from backend.hf_compat import HFModel
from backend.kv_state import ModelKV, ScoreRequest, ScoreResult, kept_positions

SUPPORTED_TYPES = {"llama", "qwen2", "mistral"}


def lean_unsupported_reason(model: HFModel) -> str | None:
    """Why ``model`` cannot take the lean path, or None when it can."""
    config = model.config
    if config.model_type not in SUPPORTED_TYPES:
        return f"model_type {config.model_type!r} is not one of {sorted(SUPPORTED_TYPES)}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"hidden_act {config.hidden_act!r} is not silu"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "sliding-window attention is not supported"
    rotary = getattr(model.model, "rotary_emb", None)
    if rotary is None or "dynamic" in str(getattr(rotary, "rope_type", "default")):
        return "dynamic rotary scaling recomputes frequencies per length and is not supported"
    return None


@dataclass
class _Slot:
    index: int
    tokens: list[int] = field(default_factory=list)


def _rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = hidden.dtype
    hidden32 = hidden.to(torch.float32)
    hidden32 = hidden32 * torch.rsqrt(hidden32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * hidden32.to(dtype)


def _linear(x: torch.Tensor, layer: Any) -> torch.Tensor:
    """``layer(x)`` for an ``nn.Linear`` without the module-call overhead."""
    return F.linear(x, layer.weight, layer.bias)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LeanKV:
    """Per-sequence KV state of one Llama-family model on preallocated buffers (see module doc)."""

    def __init__(self, model: HFModel, vocab_size: int | None = None, capacity: int = 256) -> None:
        reason = lean_unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"lean path unavailable for {type(model).__name__}: {reason}")
        config = model.config
        self.model = model
        self.vocab_size = int(vocab_size or config.vocab_size)
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(config.num_key_value_heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.heads)
        self.eps = float(config.rms_norm_eps)
        self.layers = list(model.model.layers)
        rotary = model.model.rotary_emb
        self.inv_freq = rotary.inv_freq.to(torch.float32)
        self.rotary_scale = float(rotary.attention_scaling)
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.logits_dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
        self.capacity = capacity
        self.slots = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._sequences: dict[int, _Slot] = {}
        self._free: list[int] = []
        self._grow(slots=4, capacity=capacity)

    # ---- the ModelKV interface ------------------------------------------------------------
    def __contains__(self, seq_id: int) -> bool:
        return seq_id in self._sequences

    def cached_tokens(self, seq_id: int) -> list[int]:
        slot = self._sequences.get(seq_id)
        return list(slot.tokens) if slot else []

    def rollback(self, seq_id: int, length: int) -> None:
        slot = self._sequences.get(seq_id)
        if slot is not None and len(slot.tokens) > length:
            slot.tokens = slot.tokens[:length]

    def remove(self, seq_id: int) -> None:
        slot = self._sequences.pop(seq_id, None)
        if slot is not None:
            self._free.append(slot.index)

    @torch.inference_mode()
    def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """One batched pass; same contract as :meth:`backend.kv_state.ModelKV.score`."""
        if not requests:
            return []
        if len({r.seq_id for r in requests}) != len(requests):
            raise ValueError("LeanKV.score: a sequence may appear only once per pass")
        slots, keeps = [], []
        for request in requests:
            if not 1 <= request.n_logits <= len(request.tokens):
                raise ValueError(
                    f"sequence {request.seq_id}: n_logits={request.n_logits} "
                    f"must be in 1..{len(request.tokens)}"
                )
            slot = self._slot(request.seq_id)
            keeps.append(kept_positions(slot.tokens, request))
            slots.append(slot)
        feeds = [len(r.tokens) - keep for r, keep in zip(requests, keeps)]
        feed_max = max(feeds)
        needed = max(keep + feed_max for keep in keeps)
        if needed > self.capacity:
            self._grow(self.slots, max(needed, 2 * self.capacity))
        input_ids = torch.zeros((len(requests), feed_max), dtype=torch.long)
        positions = torch.zeros((len(requests), feed_max), dtype=torch.long)
        for row, (request, keep, fed) in enumerate(zip(requests, keeps, feeds)):
            input_ids[row, :fed] = torch.tensor(request.tokens[keep:], dtype=torch.long)
            positions[row] = torch.arange(keep, keep + feed_max)
        first = min(fed - r.n_logits for fed, r in zip(feeds, requests))
        slot_index = [slot.index for slot in slots]
        logits = self._forward(
            input_ids.to(self.device), positions.to(self.device), slot_index, needed, first
        )
        results = []
        for row, (request, slot, fed) in enumerate(zip(requests, slots, feeds)):
            slot.tokens = list(request.tokens)
            results.append(ScoreResult(logits[row, fed - request.n_logits - first : fed - first], fed))
        return results

    # ---- internals ------------------------------------------------------------------------
    def _slot(self, seq_id: int) -> _Slot:
        slot = self._sequences.get(seq_id)
        if slot is None:
            if not self._free:
                self._grow(2 * self.slots, self.capacity)
            slot = _Slot(self._free.pop())
            self._sequences[seq_id] = slot
        return slot

    def _grow(self, slots: int, capacity: int) -> None:
        """Reallocate the buffers with more slots and/or positions, keeping their contents."""
        shape = (slots, self.kv_heads, capacity, self.head_dim)
        new_keys, new_values = [], []
        for layer in range(len(self.layers)):
            keys = torch.zeros(shape, dtype=self.dtype, device=self.device)
            values = torch.zeros(shape, dtype=self.dtype, device=self.device)
            if self.keys:
                keys[: self.slots, :, : self.capacity] = self.keys[layer]
                values[: self.slots, :, : self.capacity] = self.values[layer]
            new_keys.append(keys)
            new_values.append(values)
        self._free.extend(range(slots - 1, self.slots - 1, -1))
        self.keys, self.values, self.slots, self.capacity = new_keys, new_values, slots, capacity

    def _forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, slot_index: list[int], length: int, first: int
    ) -> torch.Tensor:
        """Logits ``[batch, fed - first, vocab]`` of the fed positions from ``first`` on."""
        batch, fed = input_ids.shape
        hidden = F.embedding(input_ids, self.model.model.embed_tokens.weight)
        freqs = positions[..., None].to(torch.float32) * self.inv_freq.to(self.device)
        angles = torch.cat((freqs, freqs), dim=-1)
        cos = (angles.cos() * self.rotary_scale).to(self.dtype)[:, None]
        sin = (angles.sin() * self.rotary_scale).to(self.dtype)[:, None]
        mask = torch.arange(length, device=self.device)[None, None, None, :] <= positions[:, None, :, None]
        slot_tensor = torch.tensor(slot_index, dtype=torch.long, device=self.device)
        rows = slot_tensor[:, None].expand(batch, fed)
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            normed = _rms_norm(hidden, layer.input_layernorm.weight, self.eps)
            q = _linear(normed, attention.q_proj).view(batch, fed, self.heads, self.head_dim).transpose(1, 2)
            k = (
                _linear(normed, attention.k_proj)
                .view(batch, fed, self.kv_heads, self.head_dim)
                .transpose(1, 2)
            )
            v = (
                _linear(normed, attention.v_proj)
                .view(batch, fed, self.kv_heads, self.head_dim)
                .transpose(1, 2)
            )
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            keys, values = self.keys[index], self.values[index]
            keys[rows, :, positions] = k.transpose(1, 2)
            values[rows, :, positions] = v.transpose(1, 2)
            if batch == 1:  # a view, no copy
                slot = slot_index[0]
                past_k, past_v = keys[slot : slot + 1, :, :length], values[slot : slot + 1, :, :length]
            else:
                past_k, past_v = keys[slot_tensor, :, :length], values[slot_tensor, :, :length]
            context = F.scaled_dot_product_attention(q, past_k, past_v, attn_mask=mask, enable_gqa=True)
            hidden = hidden + _linear(context.transpose(1, 2).reshape(batch, fed, -1), attention.o_proj)
            normed = _rms_norm(hidden, layer.post_attention_layernorm.weight, self.eps)
            mlp = layer.mlp
            gated = F.silu(_linear(normed, mlp.gate_proj)) * _linear(normed, mlp.up_proj)
            hidden = hidden + _linear(gated, mlp.down_proj)
        hidden = _rms_norm(hidden[:, first:], self.model.model.norm.weight, self.eps)
        logits = _linear(hidden, self.model.lm_head)
        return logits[..., : self.vocab_size].to(self.logits_dtype)


def kv_state(model: HFModel, vocab_size: int, lean: bool) -> ModelKV | LeanKV:
    """The per-model KV state, chosen once for the executor and the profiler: the lean path or
    the Hugging Face forward (:class:`backend.kv_state.ModelKV`), same ``score`` interface."""
    return LeanKV(model, vocab_size) if lean else ModelKV(model, vocab_size)
