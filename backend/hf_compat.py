"""The one place that knows transformers-version-specific calls.

Verified against the installed transformers 5.24 (``inspect`` of ``LlamaForCausalLM.forward``
and ``cache_utils``):

* the forward keyword for the KV cache is ``cache`` (``past_key_values`` is a deprecated alias
  until 5.40) and the output attribute is ``output.cache``; older 4.x/5.x releases use
  ``past_key_values`` for both.  :func:`cache_keyword` picks whichever the model's ``forward``
  accepts, so the backend runs on both.
* ``DynamicCache.crop(n)`` takes a *negative* count of tokens to remove in 5.24 (a positive
  value raises); older releases took the absolute length to keep.  The backend never calls
  ``crop``: it keeps each sequence's per-layer key/value tensors itself (see
  :mod:`backend.kv_state`) and rolls back by slicing them, which is exact and version-free.
  :func:`cache_from_layers` / :func:`layers_from_cache` convert to and from the ``Cache``
  object a forward pass needs.

Only full-attention decoder layers are supported (every Llama/Qwen2/Mistral-without-sliding
model); a sliding-window or linear-attention layer is refused with a clear error.
"""

from __future__ import annotations

import inspect
from functools import cache as memoize
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, DynamicCache

HFModel = Any
"""A transformers ``PreTrainedModel``: typed ``Any`` because its attributes depend on the architecture."""

KVLayers = list[tuple[torch.Tensor, torch.Tensor]]
"""Per decoder layer ``(keys, values)``, each ``[batch, kv_heads, seq_len, head_dim]``."""


@memoize
def _forward_parameters(model_class: Any) -> frozenset[str]:
    return frozenset(inspect.signature(model_class.forward).parameters)


def cache_keyword(model: HFModel) -> str:
    """The keyword under which ``model.forward`` takes its KV cache in this transformers version."""
    parameters = _forward_parameters(model.__class__)
    if "cache" in parameters:
        return "cache"
    if "past_key_values" in parameters:
        return "past_key_values"
    raise TypeError(
        f"{type(model).__name__}.forward accepts neither `cache` nor `past_key_values`: "
        "this transformers version is not supported by backend/hf_compat.py"
    )


def load_causal_lm(path: str, dtype: torch.dtype) -> HFModel:
    """``AutoModelForCausalLM.from_pretrained`` with the dtype keyword of this version (``dtype`` in 5.x)."""
    major = int(transformers.__version__.split(".")[0])
    keyword = "dtype" if major >= 5 else "torch_dtype"
    return AutoModelForCausalLM.from_pretrained(path, **{keyword: dtype})


def output_cache(output: Any) -> Any:
    """The cache object a forward pass returned (``output.cache`` in 5.24, ``past_key_values`` before)."""
    found = getattr(output, "cache", None)
    if found is None:
        found = getattr(output, "past_key_values", None)
    if found is None:
        raise TypeError("the model's forward output carries no cache (was use_cache=False?)")
    return found


def cache_from_layers(layers: KVLayers | None) -> DynamicCache:
    """A ``DynamicCache`` holding ``layers`` (an empty one when ``layers`` is None)."""
    if layers is None:
        return DynamicCache()
    return DynamicCache(ddp_cache_data=layers)


def layers_from_cache(cache: Any) -> KVLayers:
    """Per-layer ``(keys, values)`` of a ``DynamicCache`` after a forward pass."""
    out: KVLayers = []
    for index, layer in enumerate(cache.layers):
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if type(layer).__name__ != "DynamicLayer" or keys is None or values is None:
            raise TypeError(
                f"cache layer {index} is a {type(layer).__name__}: the backend supports only "
                "full-attention layers (DynamicLayer); sliding-window / linear-attention models "
                "are not supported"
            )
        out.append((keys, values))
    return out


def forward_with_cache(
    model: HFModel,
    input_ids: torch.Tensor,
    past: KVLayers | None,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor,
    logits_to_keep: int,
) -> tuple[torch.Tensor, KVLayers]:
    """One forward pass on top of ``past``; returns the last ``logits_to_keep`` logits and the new KV.

    ``input_ids`` / ``position_ids``: ``[batch, fed]``; ``attention_mask``: ``[batch, past + fed]``
    (1 = attend) or None when no row is padded.  The returned layers cover ``past + fed`` positions.
    """
    kwargs: dict[str, Any] = {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "use_cache": True,
        cache_keyword(model): cache_from_layers(past),
    }
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if "logits_to_keep" in _forward_parameters(model.__class__):
        kwargs["logits_to_keep"] = logits_to_keep
    output = model(**kwargs)
    logits = output.logits[:, -logits_to_keep:, :]
    return logits, layers_from_cache(output_cache(output))
